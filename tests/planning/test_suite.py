"""Suite files: grid expansion, and a specific error for each kind of bad file."""

import re
from pathlib import Path

import pytest
import yaml

from harness.core.config import ConfigError
from harness.planning.suite import expand, load_suite
from helpers import SUITE, cli, tiny_config, write_suite

GOOD = {
    "name": "t",
    "base": {"dataset": "synthetic", "depth": 10, "epochs": 1},
    "grid": {"method": ["vanilla", "cutmix", "cut_mixmo"], "width": [1, 2], "seed": [0, 1]},
    "rules": [{"when": {"method": ["cut_mixmo"]}, "set": {"M": 2, "b": 4}}],
    "exclude": [{"method": "vanilla", "width": 2}],
    "include": [{"method": "mimo", "width": [1, 3], "M": 3}],
    "ensembles": {"method": "cutmix", "sizes": [2]},
}


def suite_file(tmp_path, suite):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite) if isinstance(suite, dict) else suite)
    return path


def test_grid_rules_exclude_include(tmp_path):
    path = suite_file(tmp_path, GOOD)
    trials = expand(load_suite(path), str(path))
    keys = [(t.method, t.width, t.seed, t.num_inputs, t.b) for t in trials]
    assert len(trials) == 12 - 2 + 2  # 3 x 2 x 2, minus vanilla at width 2, plus 2 MIMO trials
    assert ("vanilla", 2, 0, 1, 1) not in keys and ("cut_mixmo", 2, 1, 2, 4) in keys
    assert ("mimo", 3, 0, 3, 1) in keys and ("cutmix", 1, 1, 1, 1) in keys
    assert len({t.trial_id for t in trials}) == len(trials)
    assert all(t.name == "t" and t.output_dir.is_absolute() for t in trials)
    # ids are stable across expansions
    assert [t.trial_id for t in expand(load_suite(path))] == [t.trial_id for t in trials]


def with_(**changes):
    suite = yaml.safe_load(yaml.safe_dump(GOOD))
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = suite
        for p in parents:
            node = node[p]
        if value is DELETE:
            node.pop(last)
        else:
            node[last] = value
    return suite


DELETE = object()

BAD = [
    (with_(colour="red"), r"colour: unknown key; allowed keys: name, description, base, grid"),
    (with_(base__widht=4), r"base\.widht: unknown trial key \(did you mean 'width'\?\); allowed keys: .*width"),
    (with_(grid__lr_max=[0.1]), r"grid\.lr_max: unknown trial key"),
    (with_(grid__width=[]), r"grid\.width: empty list; give at least one value"),
    (with_(grid__width=2), r"grid\.width: Input should be a valid list"),
    (
        with_(grid__method=["vanilla", "mixmo"]),
        r"trial \(method=mixmo, .*unknown method 'mixmo' \(did you mean 'mimo'\?\); allowed: batch_ensemble, cut_mixmo",
    ),
    (with_(grid__width=[2, 0]), r"grid\.width\[1\]: Input should be greater than or equal to 1 \(got 0\)"),
    (with_(base__depth=12), r"depth 12 does not fit the rule depth = 6n \+ 4"),
    (with_(resources={"cpus": -1}), r"resources\.cpus: Input should be greater than 0"),
    (with_(resources={"gpus": -0.5}), r"resources\.gpus: Input should be greater than or equal to 0"),
    (with_(concurrency=0), r"concurrency: Input should be greater than or equal to 1"),
    (with_(max_retries="often"), r"max_retries: Input should be a valid integer"),
    (with_(ensembles={"method": "cutmix", "sizes": [1]}), r"ensemble sizes must be >= 2"),
    (
        with_(ensembles={"method": "cutmix", "sizes": [3]}),
        r"ensembles\[0\]\.sizes: an ensemble of 3 needs as many seeds",
    ),
    (with_(ensembles={"method": "mixup", "sizes": [2]}), r"no trial of method 'mixup'"),
    (with_(rules=[{"when": {"method": "cut_mixmo"}, "set": {"M": 1}}]), r"needs M >= 2 subnetworks"),
    (with_(rules=[{"when": {"method": "cut_mixmo"}, "sett": {"M": 2}}]), r"rules\.0\.sett: unknown key"),
    (with_(base__output_dir="/tmp/x"), r"base\.output_dir: set by the suite"),
    (with_(name="my suite"), r"name: 'my suite' is not a single folder name"),
    (with_(exclude=[{"method": ["vanilla", "cutmix", "cut_mixmo"]}], include=[]), r"the suite has no trials"),
    ("name: [unclosed\n", r"not valid YAML"),
    # values that used to pass validation and crash later, or be silently coerced
    (with_(name=".."), r"name: '\.\.' is not a single folder name \(.*no '\.\.' or '/'\)"),
    (with_(name="a" * 300), r"name: String should have at most 100 characters"),
    (with_(base__device="banana"), r"base\.device: String should match pattern '\^\(auto\|cpu\|cuda"),
    (with_(tracking={"uri": "garbage"}), r"tracking\.uri: .*not one MLflow can open; use sqlite:///"),
    (with_(base__base_lr=float("inf")), r"base\.base_lr: Input should be a finite number"),
    (
        with_(base__milestones=[0, 400]),
        r"milestones \[0, 400\]: increasing epochs between 1 and milestones_budget = 300",
    ),
    (with_(grid__width=[1, "2"]), r"grid\.width\[1\]: Input should be a valid integer \(got '2'\)"),
    (with_(grid__width=[True]), r"grid\.width\[0\]: Input should be a valid integer \(got True\)"),
    (with_(resources={"cpus": "1"}), r"resources\.cpus: Input should be a valid number"),
    (with_(concurrency=True), r"concurrency: Input should be a valid integer"),
    (with_(exclude=[{"method": "vanilla", "width": 7}]), r"exclude\[0\]: .*matches no grid point"),
    (
        with_(grid__seed=list(range(1000)), grid__width=list(range(1, 1001))),
        r"grid: 3,000,002 trials .* at most 10,000",
    ),
    (
        "name: t\nbase: {depth: 10}\ngrid: {width: [1]}\nbase: {epochs: 1}\n",
        r"line 4, column 1: duplicate key 'base' \(first at line 2\)",
    ),
    (
        "name: t\nbase:\n  deepspeed:\n    a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"  # an alias bomb: 10^7 values
        + "".join(f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 7)),
        r"more than 100,000 values once its aliases are expanded",
    ),
]


@pytest.mark.parametrize("suite, expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_suites_give_specific_errors(tmp_path, suite, expected):
    path = suite_file(tmp_path, suite)
    with pytest.raises(ConfigError, match="(?s)" + expected) as err:
        expand(load_suite(path), str(path))
    assert str(path) in str(err.value)


def test_cli_refuses_missing_data_before_running_anything(tmp_path):
    suite = with_(base__dataset="cifar100", base__data_dir=str(tmp_path / "no-data"), storage=str(tmp_path / "r"))
    proc = cli("run", suite_file(tmp_path, suite), "--dry-run")
    assert proc.returncode == 2
    assert "cifar100 not found" in proc.stderr and str(tmp_path / "no-data") in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = cli("run", suite_file(tmp_path, with_(grid__width=[])))
    assert bad.returncode == 2 and "grid.width: empty list" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "path", sorted((__import__("pathlib").Path(__file__).parents[2] / "suites").glob("*.yaml")), ids=lambda p: p.stem
)
def test_shipped_suites_load_and_expand(path):
    suite = load_suite(path)
    trials = expand(suite, str(path))
    assert trials and len({t.trial_id for t in trials}) == len(trials)
    members = {(e.method, size) for e in suite.ensembles for size in e.sizes}
    for method, size in members:  # every deep ensemble has enough seeds at each width
        widths = {t.width for t in trials if t.method == method}
        for w in widths:
            assert len({t.seed for t in trials if t.method == method and t.width == w}) >= size, (method, w)


def test_every_path_written_in_a_suite_is_relative_to_the_suite_file(tmp_path, monkeypatch):
    """One rule: storage, plugins, base.data_dir and evaluation-set folders written in the file resolve against the
    file's folder, wherever `harness` runs; what is not written (./results, $HARNESS_DATA_DIR) against the working
    folder."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "metric.py").write_text(
        "from harness.metrics import register_metric\n\n\n"
        "@register_metric('path_rule_metric', 'prm', direction='lower')\n"
        "def path_rule_metric(logits, labels):\n    return 0.0\n"
    )
    path = folder / "suite.yaml"
    spec = {**SUITE, "storage": "out", "plugins": ["metric.py"], "eval_sets": ["ood:folder=images"],
            "base": {**SUITE["base"], "data_dir": "data"}}  # fmt: skip
    path.write_text(yaml.safe_dump(spec))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    suite = load_suite(path)
    assert suite.storage == str(folder / "out") and suite.plugins == [str(folder / "metric.py")]
    assert suite.base["data_dir"] == str(folder / "data") and suite.eval_sets == [f"ood:folder={folder / 'images'}"]
    unwritten = {k: v for k, v in spec.items() if k != "storage"}
    unwritten["base"] = {k: v for k, v in spec["base"].items() if k != "data_dir"}
    path.write_text(yaml.safe_dump(unwritten))
    monkeypatch.setenv("HARNESS_DATA_DIR", "shared")
    suite = load_suite(path)
    assert suite.results_root == Path("results") and suite.base["data_dir"] == str(elsewhere / "shared")


def test_paths_expand_home_and_variables_and_names_refuse_dot_dot(tmp_path, monkeypatch):
    from harness.core.config import ConfigError
    from harness.planning.suite import load_suite

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESULTS_ROOT", str(tmp_path / "elsewhere"))
    suite = load_suite(write_suite(tmp_path, storage="~/runs"))
    assert suite.results_root == tmp_path / "home" / "runs"
    assert load_suite(write_suite(tmp_path, storage="$RESULTS_ROOT/x")).results_root == tmp_path / "elsewhere" / "x"
    assert tiny_config(data_dir="~/data").data_dir == tmp_path / "home" / "data"
    with pytest.raises(ConfigError, match=r"storage: \$NOT_SET_HERE/x: \$NOT_SET_HERE is not set in the environment"):
        load_suite(write_suite(tmp_path, storage="$NOT_SET_HERE/x"))
    for name in ("a..", "a..b", ".."):
        with pytest.raises(ConfigError, match=rf"name: '{re.escape(name)}' is not a single folder name .*no '\.\.'"):
            load_suite(write_suite(tmp_path, name=name))
    assert load_suite(write_suite(tmp_path, name="v1.2")).name == "v1.2"
