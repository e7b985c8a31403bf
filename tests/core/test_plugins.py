"""Bring your own method: a method, network, dataset or metric is one file, inside the harness or outside it.

Plugins that load successfully run in subprocesses (`harness ...`), so that this test process's registries stay
the harness's own; plugins that fail load here too: a failed plugin leaves nothing registered."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.methods import METHODS
from harness.metrics import METRICS
from harness.models import MODELS
from harness.trial.listing import listing
from helpers import SUITE, cli, harness, harness_env, runs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "plugins"

TINY = {
    "dataset": "synthetic",
    "synthetic_size": 192,
    "synthetic_classes": 4,
    "synthetic_resolution": 16,
    "depth": 10,
    "width": 1,
    "epochs": 1,
    "batch_size": 32,
    "eval_batch_size": 128,
}


TINY_KEYS = [f"{k}={v}" for k, v in TINY.items()]


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=harness_env(**env), capture_output=True, text=True
    )


def copy_examples(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name in ("regmixup.py", "classwise_ece.py"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


# --- bad plugins: one line naming the file and the name, exit 2, nothing left registered
BAD = {
    "syntax.py": ("def broken(:\n", r"syntax.py: failed to import \(line 1\): SyntaxError"),
    "raises.py": (
        "import os\n\nraise RuntimeError('boom')\n",
        r"raises.py: failed to import \(line 3\): RuntimeError: boom",
    ),
    "taken.py": (
        "from harness.methods import Method, register_method\n\n@register_method('vanilla')\nclass Mine(Method):\n"
        "    pass\n",
        r"taken.py: registers method 'vanilla', which the harness already registers",
    ),
    "harness_key.py": (
        "from harness.methods import Method, Option, register_method\n\n@register_method('mine_lr')\n"
        "class Mine(Method):\n    options = {'lr': Option(0.1, 'a learning rate')}\n",
        r"harness_key.py: method 'mine_lr' declares key 'lr', which is a harness trial key",
    ),
    "other_key.py": (
        "from harness.methods import Method, Option, register_method\n\n@register_method('mine_dropout')\n"
        "class Mine(Method):\n    options = {'dropout': Option(0.2, 'a rate')}\n",
        r"other_key.py: method 'mine_dropout' declares key 'dropout', which is already a key of method mc_dropout",
    ),
    **{
        f"badname{i}.py": (
            f"from harness.methods import Method, register_method\n\n@register_method({name!r})\nclass Mine(Method):\n"
            "    pass\n",
            rf"badname{i}.py: registers method .*: a name is a letter, then letters, digits or _ \(at most 64",
        )
        for i, name in enumerate(["../evil", "../../../../x", "a/b", "<script>x</script>", "", "m" * 300, "a b"])
    },
    "badmetric.py": (
        "from harness.metrics import register_metric\n\n@register_metric('$x$', 'x', direction='higher')\n"
        "def x(logits, labels):\n    return 0.0\n",
        r"badmetric.py: registers metric '\$x\$': a name is a letter",
    ),
    "half.py": (  # registers one method, then fails: the first registration goes too
        "from harness.methods import Method, register_method\n\n@register_method('half_done')\nclass Mine(Method):\n"
        "    pass\n\nraise ImportError('no module named cupy')\n",
        r"half.py: failed to import \(line 7\): ImportError: no module named cupy",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_plugin_is_one_line_and_exit_2(tmp_path, name):
    text, expected = BAD[name]
    path = tmp_path / name
    path.write_text(text)
    before = METHODS.names()
    proc = cli("list", "--plugin", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: plugin {path}"), proc.stderr
    assert __import__("re").search(expected, lines[0]), lines[0]
    assert METHODS.names() == before  # nothing of it stays registered
    # named by a suite: the same line, after the suite's file and the list entry
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "storage": str(tmp_path / "r"), "plugins": [name]}))
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {suite}: plugins[0]: plugin {path}"), proc.stderr


def test_missing_plugins_name_what_was_looked_for(tmp_path):
    proc = cli("list", "--plugin", tmp_path / "nope.py")
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: plugin {tmp_path / 'nope.py'}: cannot read it")
    proc = cli("list", "--plugin", "no_such_module_xyz")
    assert proc.returncode == 2 and "plugin no_such_module_xyz: no such module" in proc.stderr


def test_the_docs_table_of_methods_is_harness_list():
    """The key tables of docs/plugins.md (methods) and docs/suites.md (the harness's own keys) come from the
    declarations (`harness list --markdown`)."""
    readme = (ROOT / "docs" / "plugins.md").read_text()
    start = readme.index("<!-- harness list --markdown -->\n") + len("<!-- harness list --markdown -->\n")
    end = readme.index("<!-- end harness list -->")
    assert readme[start:end].strip() == listing(markdown=True)
    readme = (ROOT / "docs" / "suites.md").read_text()
    start = readme.index("<!-- harness list --markdown --keys -->\n") + len("<!-- harness list --markdown --keys -->\n")
    assert readme[start : readme.index("<!-- end harness list --keys -->")].strip() == listing(markdown=True, keys=True)
    text = listing()
    for name in METHODS.names():  # every method, with its keys' defaults and help
        assert f"  {name} " in text
    assert "packed_gamma: subgroups per member gamma" in text and "default 2 (int, >= 1)" in text


# --- a plugin of each kind, one file each, in one trial
MODEL = '''
"""A tiny CNN core in MixMo's multi-input network (a plugin network)."""
from torch import nn

from harness.models import MultiIONet, register_model


@register_model("tiny_cnn")
class TinyCNN:
    """Two 3x3 convolutions and a global pool."""

    networks = ("multi_io",)

    @staticmethod
    def check_shape(depth, width):
        if depth != 2:
            raise ValueError(f"tiny_cnn has depth 2, got {depth}")

    @staticmethod
    def build(depth, width, num_classes, num_inputs, network="multi_io", **options):
        core = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())
        return MultiIONet(core, 8 * width, num_classes, num_inputs, encoder_channels=8, encoder_stride=1)
'''
DATASET = '''
"""Stripes: class k = horizontal stripes of period k + 2 (a plugin dataset)."""
import numpy as np

from harness.data import ImageArrays, ImageSplits, register_dataset


def _stripes(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    rows = np.arange(16)[None, :, None, None]
    x = (((rows // (y[:, None, None, None] + 2)) % 2) * 200 + rng.integers(0, 40, (n, 16, 16, 3))).astype(np.uint8)
    return ImageArrays(x, y.astype(np.int64))


@register_dataset("stripes", classes=3, resolution=16, train_size=96, test_size=48, mean=(0.5,) * 3, std=(0.3,) * 3)
def stripes(check_only=False, **_):
    if check_only:
        return None
    return ImageSplits(_stripes(96, 0), _stripes(48, 1), 3, "stripes", ["p2", "p3", "p4"])
'''
FAMILY = '''
"""M independent networks side by side, as one network family, and the method that trains it (one file)."""
import torch
import torch.nn.functional as F
from torch import nn

from harness.methods import Method, MixedBatch, register_method
from harness.models import Layers, register_network


class Independent(nn.Module):
    def __init__(self, core, stem_channels, num_classes, members):
        super().__init__()
        nets = []
        for _ in range(members):
            body = core(Layers())
            nets.append(nn.Sequential(nn.Conv2d(3, stem_channels, 3, padding=1, bias=False), body,
                                      nn.Linear(body.out_features, num_classes)))
        self.nets = nn.ModuleList(nets)

    def mix_size(self, input_size):
        return 1

    def forward(self, x, mix=None):
        x = x[:, 0] if x.dim() == 5 else x
        return torch.stack([net(x) for net in self.nets], 1)


@register_network("independent")
def independent(core, stem_channels, num_classes, members):
    return Independent(core, stem_channels, num_classes, members)


@register_method("independent_ensemble")
class IndependentEnsemble(Method):
    """M networks trained side by side on the same batches."""

    default_M, single_network, network = 2, False, "independent"

    @classmethod
    def train_row(cls, cfg):
        return 1, 1

    def prepare(self, x, y, progress):
        n = len(y)
        targets = F.one_hot(y, self.num_classes).float().unsqueeze(1).expand(n, self.M, -1) / self.M
        return MixedBatch(x.unsqueeze(1), None, targets, y.unsqueeze(1).expand(n, self.M))
'''


@pytest.mark.slow  # trials in subprocesses
def test_a_method_a_network_a_dataset_and_a_metric_are_one_file_each(tmp_path):
    folder = copy_examples(tmp_path)
    (folder / "tiny_cnn.py").write_text(MODEL)
    (folder / "stripes.py").write_text(DATASET)
    plugins = [f"--plugin={folder / n}" for n in ("regmixup.py", "classwise_ece.py", "tiny_cnn.py", "stripes.py")]
    listed = harness("list", *plugins)
    assert listed.returncode == 0, listed.stderr
    for line in ("regmixup           M 1", "tiny_cnn", "stripes            3 classes, 16 px", "classwise_ece"):
        assert line in listed.stdout
    assert "regmixup_alpha: Beta(alpha, alpha) of the Mixup ratio" in listed.stdout
    assert "[regmixup.py]" in listed.stdout and "[tiny_cnn.py]" in listed.stdout and "[stripes.py]" in listed.stdout
    keys = ["method=regmixup", "model=tiny_cnn", "dataset=stripes", "depth=2", "width=1", "epochs=1", "batch_size=32",
            "regmixup_eta=0.5", "device=cpu", f"output_dir={tmp_path / 'results'}"]  # fmt: skip
    proc = harness("train", *plugins, *[f"--set={k}" for k in keys])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trial_dir,) = (tmp_path / "results" / "trial").iterdir()
    metrics = json.loads((trial_dir / "metrics.json").read_text())
    assert 0 <= metrics["classwise_ece"] <= 1 and metrics["num_params"] > 0
    config = yaml.safe_load((trial_dir / "config.yaml").read_text())
    assert set(config["plugin_code"]) == {"method regmixup", "model tiny_cnn", "dataset stripes"}
    assert config["regmixup_eta"] == 0.5 and config["plugins"] == sorted(
        str(folder / n) for n in ("regmixup.py", "stripes.py", "tiny_cnn.py")
    )
    # the plugin's own bounds, with the harness's strictness and messages
    bad = harness("train", *plugins, "--set=method=regmixup", "--set=regmixup_eta=-1", "--set=depth=2")
    assert bad.returncode == 2 and "regmixup_eta: Input should be greater than or equal to 0" in bad.stderr
    bad = harness("train", *plugins, "--set=method=vanilla", "--set=regmixup_eta=1.0")
    assert bad.returncode == 2 and "regmixup_eta is a key of method regmixup, not of vanilla" in bad.stderr
    bad = harness("train", *plugins, "--set=model=tiny_cnn", "--set=depth=3")
    assert bad.returncode == 2 and "tiny_cnn has depth 2, got 3" in bad.stderr
    # a network family with its method: wrn is built as it, tiny_cnn (multi_io only) is refused
    (folder / "independent.py").write_text(FAMILY)
    family = [f"--plugin={folder / 'independent.py'}", "--set=method=independent_ensemble", "--set=device=cpu"]
    keys = [f"--set={k}" for k in (*TINY_KEYS, f"output_dir={tmp_path / 'results'}")]
    proc = harness("train", *family, *keys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "independent_ensemble-wrn10x1-M2-s0-" in proc.stdout and "heads" in proc.stdout
    bad = harness("train", *plugins, *family, "--set=model=tiny_cnn", "--set=depth=2")
    assert bad.returncode == 2 and "it runs on model wrn, not 'tiny_cnn'" in bad.stderr, bad.stderr


@pytest.mark.slow  # subprocesses: the full lane
def test_workers_run_the_code_the_driver_shipped(tmp_path):
    """A worker on another node loads a file plugin from the text the driver hashed, not from its own disk."""
    text = (EXAMPLES / "regmixup.py").read_text()
    shipped = python(f"""
        import json
        from harness.core import plugins
        plugins.load({str(EXAMPLES / "regmixup.py")!r})
        print(json.dumps(plugins.shipped()))
    """)
    assert shipped.returncode == 0, shipped.stderr
    (entry,) = json.loads(shipped.stdout)
    assert entry["source"] == text and entry["spec"] == str(EXAMPLES / "regmixup.py")
    moved = {**entry, "spec": str(tmp_path / "not_on_this_node" / "regmixup.py")}
    worker = python(f"""
        import json
        from harness.trial import catalog
        cfg = catalog.in_worker({{"method": "regmixup", "regmixup_alpha": 20.0, "depth": 10, "width": 1}},
                                json.loads({json.dumps(json.dumps([moved]))}))
        print(cfg.trial_id, cfg.plugin_code["method regmixup"] == {entry["sha256"]!r})
    """)
    assert worker.returncode == 0 and worker.stdout.split()[1] == "True", worker.stderr
    tampered = {**moved, "source": text + "\n# edited\n"}
    worker = python(f"""
        import json
        from harness.core import plugins
        plugins.install(json.loads({json.dumps(json.dumps([tampered]))}))
    """)
    assert worker.returncode != 0 and "the shipped text does not match its hash" in worker.stderr


def test_an_installed_package_registers_through_its_entry_point(tmp_path):
    site = tmp_path / "site"
    (site / "mymethods-0.1.dist-info").mkdir(parents=True)
    (site / "mymethods-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: mymethods\nVersion: 0.1\n")
    (site / "mymethods-0.1.dist-info" / "entry_points.txt").write_text("[harness.plugins]\nmine = mymethods\n")
    shutil.copy(EXAMPLES / "regmixup.py", site / "mymethods.py")
    proc = harness("list", PYTHONPATH=str(site))
    assert proc.returncode == 0, proc.stderr
    assert "regmixup" in proc.stdout and "[mymethods]" in proc.stdout


def ids(suite: Path) -> dict[str, str]:
    proc = python(f"""
        from harness.planning.suite import expand, load_suite
        for t in expand(load_suite({str(suite)!r})):
            print(t.method, t.trial_id)
    """)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split() for line in proc.stdout.splitlines())


@pytest.mark.slow  # a sweep on Ray, its report, MLflow
def test_the_example_plugin_runs_on_ray_beside_the_family_and_in_the_report(tmp_path):
    copy_examples(tmp_path)
    suite = tmp_path / "suite.yaml"
    spec = {
        "name": "byo",
        "plugins": ["plugins/regmixup.py", "plugins/classwise_ece.py"],
        "base": TINY,
        "grid": {"method": ["vanilla", "regmixup", "batch_ensemble"]},
        "rules": [{"when": {"method": "regmixup"}, "set": {"regmixup_alpha": 20.0}}],
        "resources": {"cpus": 1},
        "concurrency": 1,  # one trial worker: a second is a second torch start-up on the CPU-bound lane
        "max_retries": 0,
        "storage": str(tmp_path / "results"),
    }
    suite.write_text(yaml.safe_dump(spec))
    first = ids(suite)
    proc = harness("run", suite, HARNESS_PROGRESS_S="60")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    folder = tmp_path / "results" / "byo"
    trial = folder / first["regmixup"]
    assert json.loads((trial / "metrics.json").read_text())["classwise_ece"] >= 0  # computed in the Ray worker
    # the report: RegMixup's own label in the tables, the plugin metric's column
    report = harness("report", suite)
    assert report.returncode == 0, report.stderr[-3000:]
    table = (folder / "report" / "results.md").read_text()
    rows = {line.split("|")[2].strip(): line for line in table.splitlines() if line.startswith("|")}
    assert {"vanilla", "RegMixup", "batch_ensemble"} <= set(rows) and "cw-ECE" in table, table
    assert "RegMixup" in (folder / "report" / "index.html").read_text()
    # MLflow: the trial's run, its keys and the plugin's hash
    _, _, children = runs(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", "byo")
    (run,) = [r for r in children if r.data.params.get("method") == "regmixup"]
    assert run.data.params["regmixup_alpha"] == "20.0"
    assert run.data.tags["harness.plugins"] == str(tmp_path / "plugins" / "regmixup.py")
    sha = json.loads(run.data.tags["harness.plugin_code"])["method regmixup"]
    assert sha == yaml.safe_load((trial / "config.yaml").read_text())["plugin_code"]["method regmixup"]
    assert "final_classwise_ece" in run.data.metrics
    # the results folder never loads the plugin itself: evaluating it without --plugin names what to give
    bare = harness("evaluate", folder, "--on", "test")
    assert bare.returncode == 2 and "uses plugin code that is not loaded: method regmixup" in bare.stderr
    assert f"--plugin {tmp_path / 'plugins' / 'regmixup.py'}" in bare.stderr, bare.stderr
    # a report on the results folder needs the plugins its trials were trained with: one line naming the files
    bare = harness("report", folder)
    assert bare.returncode == 2 and "trained with plugins not loaded here (method regmixup, metric classwise_ece)" in (
        bare.stderr
    ), bare.stderr
    assert f"--plugin {tmp_path / 'plugins' / 'classwise_ece.py'}" in bare.stderr and "Traceback" not in bare.stderr
    plugged = [f"--plugin={tmp_path / 'plugins' / n}" for n in ("regmixup.py", "classwise_ece.py")]
    assert harness("report", folder, *plugged, "--no-figures").returncode == 0
    # an edited metric: its values are recomputed from the saved logits, and the report says so
    recorded = json.loads((trial / "metrics.json").read_text())["classwise_ece"]
    code = (tmp_path / "plugins" / "classwise_ece.py").read_text()
    (tmp_path / "plugins" / "classwise_ece.py").write_text(code.replace("    return float(", "    return 2 * float("))
    edited = harness("report", suite, "--no-figures")
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert "classwise_ece recomputed from the saved logits for 3 trial(s)" in edited.stdout, edited.stdout[-2000:]
    frame = pd.read_csv(folder / "report" / "summary_raw.csv")
    value = frame.loc[(frame.method == "regmixup") & (frame.members == 1), "classwise_ece_mean"].item()
    assert value == pytest.approx(2 * recorded, rel=1e-2, abs=1e-4)  # float16 saved logits against float32
    (tmp_path / "plugins" / "classwise_ece.py").write_text(code)
    # an edit of the plugin moves its trial ids and no other; the run says which trials rerun and why
    with open(tmp_path / "plugins" / "regmixup.py", "a") as f:
        f.write("\n# a comment: still other code\n")
    second = ids(suite)
    assert second["vanilla"] == first["vanilla"] and second["batch_ensemble"] == first["batch_ensemble"]
    assert second["regmixup"] != first["regmixup"]
    plan = harness("run", suite, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "3 trials (2 finished, 1 to run)" in plan.stdout
    assert f"rerun {second['regmixup']} (was {first['regmixup']}): plugin code changed (method regmixup" in plan.stdout


def test_regmixup_loss_is_the_authors_mean_over_clean_and_mixed_rows():
    """(CE(f(x), y) + eta (lam CE(f(x~), y) + (1 - lam) CE(f(x~), y[perm]))) / 2, with the batch's lam and perm."""
    proc = python(f"""
        import torch, torch.nn.functional as F
        from harness.core import plugins
        plugins.load({str(EXAMPLES / "regmixup.py")!r})
        from harness.trial.catalog import build_config
        from harness.methods import METHODS
        cfg = build_config({{"method": "regmixup", "regmixup_eta": 0.7, "regmixup_alpha": 10.0}}, "t")
        method = METHODS.get("regmixup")(cfg, num_classes=5, mix_size=1)
        x, y = torch.randn(8, 3, 4, 4), torch.randint(0, 5, (8,))
        torch.manual_seed(3)
        batch = method.prepare(x, y, 0.0)
        torch.manual_seed(3)
        lam = torch.distributions.Beta(10.0, 10.0).sample()
        perm = torch.randperm(8)
        assert torch.equal(batch.inputs[0::2, 0], x)
        assert torch.allclose(batch.inputs[1::2, 0], lam * x + (1 - lam) * x[perm])
        logits = torch.randn(16, 1, 5)
        clean, mixed = logits[0::2, 0], logits[1::2, 0]
        mix_ce = lam * F.cross_entropy(mixed, y) + (1 - lam) * F.cross_entropy(mixed, y[perm])
        expected = (F.cross_entropy(clean, y) + 0.7 * mix_ce) / 2
        print(float(method.loss(logits, batch)), float(expected))
    """)
    assert proc.returncode == 0, proc.stderr
    got, expected = map(float, proc.stdout.split())
    assert got == pytest.approx(expected, rel=1e-6)


# --- a plugin that would train wrongly or cannot be costed: one clear line
ONE_TARGET = '''
from harness.methods import Method, MixedBatch, register_method


@register_method("one_target")
class OneTarget(Method):
    """Two heads trained on head 0's targets alone: a broken prepare."""

    single_network = False
    default_M = 2

    def prepare(self, x, y, progress):
        batch = super().prepare(x, y, progress)
        return MixedBatch(batch.inputs, batch.mix, batch.targets[:, :1], batch.labels)
'''
READS_VALUES = MODEL.replace('"tiny_cnn"', '"reads_values"').replace(
    "        return MultiIONet(",
    "        core.register_forward_hook(lambda m, i, out: out * float(out.mean().item()))\n        return MultiIONet(",
)


@pytest.mark.slow  # a training run through the CLI
def test_a_batch_whose_shapes_do_not_fit_the_heads_stops_at_the_first_step(tmp_path):
    (tmp_path / "one_target.py").write_text(ONE_TARGET)
    keys = [f"--set={k}" for k in (*TINY_KEYS, "method=one_target", f"output_dir={tmp_path / 'results'}")]
    proc = cli("train", "--plugin", tmp_path / "one_target.py", *keys)
    assert proc.returncode != 0
    assert "method 'one_target': MixedBatch.targets has shape (32, 1, 4), the model's 2 head(s) need (32, 2, 4)" in (
        proc.stderr
    ), proc.stderr[-2000:]


def test_a_network_that_reads_values_is_one_line_naming_the_plugin(tmp_path):
    (tmp_path / "reads_values.py").write_text(READS_VALUES)
    suite = tmp_path / "suite.yaml"
    base = {**TINY, "model": "reads_values", "depth": 2}
    suite.write_text(yaml.safe_dump({**SUITE, "base": base, "grid": {"method": ["vanilla"]}, "rules": [],
                                     "storage": str(tmp_path / "r"), "plugins": ["reads_values.py"]}))  # fmt: skip
    proc = cli("run", suite, "--dry-run")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"plugin {tmp_path / 'reads_values.py'}: model 'reads_values' with method 'vanilla' cannot run on the " \
        "meta device" in lines[0] and "must not read tensor values" in lines[0]  # fmt: skip


# --- `harness check-plugin`: the contract checks, on the examples, a broken plugin and every built-in entry
@pytest.mark.slow  # trains each example three times
@pytest.mark.parametrize("name", ["regmixup.py", "classwise_ece.py", "cyclic_snapshots.py"])
def test_check_plugin_passes_on_the_examples(name):
    proc = harness("check-plugin", EXAMPLES / name, *(["--set", "M=2"] if name == "cyclic_snapshots.py" else []))
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("checks passed") and "ok   " in proc.stdout


@pytest.mark.slow  # trains a tiny trial
@pytest.mark.parametrize(
    "text, failure",
    [
        (
            ONE_TARGET,
            "FAIL method one_target: trains on tiny data: ConfigError: method 'one_target': MixedBatch.targets",
        ),
        (READS_VALUES, "FAIL model reads_values: counts its FLOPs on the meta device: ConfigError: plugin"),
    ],
    ids=["batch shapes", "meta device"],
)
def test_check_plugin_fails_a_broken_plugin_with_the_fix(tmp_path, text, failure):
    path = tmp_path / "broken.py"
    path.write_text(text)
    proc = harness("check-plugin", path)
    assert proc.returncode == 1 and failure in proc.stdout and "fix: " in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow  # every built-in method and model, trained three times each
@pytest.mark.parametrize(
    "kind, name", [("method", n) for n in METHODS.names()] + [("model", n) for n in MODELS.names()]
)
def test_every_built_in_entry_passes_the_plugin_checks(kind, name):
    from harness.trial.plugin_check import check_entries

    keys = {"fge": {"M": 2, "fge_cycle": 2, "epochs": 4}, "swag": {"M": 3}, "mc_dropout": {"M": 3}}.get(name, {})
    results = check_entries([(kind, name)], keys)  # FGE's defaults need 15 epochs; 3 members, not 30: the time
    assert results and all(r.passed for r in results), "\n".join(r.line() for r in results)


TEST_DATASETS = [("dataset", "synthetic"), ("dataset", "cifar100")]


@pytest.mark.parametrize("kind, name", [("metric", n) for n in METRICS.names()] + TEST_DATASETS)
def test_every_built_in_metric_and_the_test_datasets_pass_the_plugin_checks(kind, name):
    """The datasets whose data the tests have (HARNESS_DATA_DIR: CIFAR-100); the other readers are tested with
    their official layouts in tests/data/test_eval_sets.py and tests/data/test_data.py."""
    from harness.trial.plugin_check import check_entries

    results = check_entries([(kind, name)])
    assert results and all(r.passed for r in results), "\n".join(r.line() for r in results)
