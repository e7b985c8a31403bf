"""Where features meet: seeds x deep ensembles x aggregation rules x evaluation sets x plugins x partial sweeps.

Every combination gives a report whose every interval lies inside its metric's range, and whose numbers agree with
what the driver printed and wrote (`ensembles.json`). The fast lane checks the pieces on hand-made trial folders; the
slow lane trains one small real-data suite with an OOD set, a corruption set, held-out classes and a plugin metric,
then reports every subset of its seeds under both rules, with and without `ensembles:`."""

import csv
import json
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from analysis import figures, tables
from analysis.collect import collect, ensemble_rows
from analysis.report import build_report
from harness.core import schema
from harness.evaluation.ensembles import compose_suite_ensembles
from harness.metrics import METRICS, temperature_at_bound
from harness.metrics.uncertainty import DETECTION_METRICS, average_precision, trapezoidal_aupr
from helpers import harness, make_trial, runs

ROOT = Path(__file__).resolve().parents[2]


# --- the pieces (fast lane)
def tied_scores(rng, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    positives = rng.random(n) < 0.4
    if kind == "continuous":
        scores = rng.normal(size=n) + positives
    elif kind == "integer":
        scores = rng.integers(0, 4, n) + positives
    elif kind == "saturated":  # softmax probabilities at float precision: many exactly 1.0
        scores = np.minimum(1.0, rng.random(n) * 1.5 + 0.3 * positives)
    else:
        scores = np.zeros(n)
    return scores.astype(float), positives


@pytest.mark.parametrize("kind", ["continuous", "integer", "saturated", "all tied"])
def test_both_auprs_equal_their_references_on_tied_scores(kind):
    """OpenOOD computes AUPR as scikit-learn's auc(recall, precision) of precision_recall_curve (the trapezoidal
    area); the harness's own tables use average precision (scikit-learn's average_precision_score)."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve

    rng = np.random.default_rng(1)
    for _ in range(20):
        scores, positives = tied_scores(rng, int(rng.integers(5, 60)), kind)
        if positives.all() or not positives.any():
            continue
        precision, recall, _ = precision_recall_curve(positives, scores)
        assert trapezoidal_aupr(scores, positives) == pytest.approx(auc(recall, precision), abs=1e-12)
        assert average_precision(scores, positives) == pytest.approx(
            average_precision_score(positives, scores), abs=1e-12
        )


def test_the_two_auprs_differ_where_scores_tie_and_are_labelled():
    scores, positives = np.zeros(10), np.arange(10) < 3  # all tied: AP = 0.3, the trapezoid (1 + 0.3) / 2
    assert average_precision(scores, positives) == pytest.approx(0.3)
    assert trapezoidal_aupr(scores, positives) == pytest.approx(0.65)
    from analysis.robustness import DETECTION, OPENOOD_COLUMNS

    assert [m for m, _ in OPENOOD_COLUMNS if m.startswith("aupr")] == ["aupr_in_trapezoid", "aupr_out_trapezoid"]
    assert [m for m, *_ in DETECTION if m.startswith("aupr")] == ["aupr_in", "aupr_out"]
    labels = {DETECTION_METRICS[m].label for m in ("aupr_in", "aupr_in_trapezoid")}
    assert labels == {"AUPR-in % (AP)", "AUPR-in % (trapezoid)"}


@pytest.mark.parametrize(
    "column, bounds",
    [
        ("auroc", (0, 1)),
        ("fpr95_ood", (0, 1)),
        ("near_aupr_in_trapezoid", (0, 1)),
        ("id_top1", (0, 1)),
        ("clean_top1", (0, 1)),
        ("corrupted_ece", (0, 1)),
        ("ub17_cal_nll", (0, np.inf)),
        ("severity3_top1", (0, 1)),
        ("pooled_brier", METRICS.get("brier").bounds),
        ("aurc", METRICS.get("aurc").bounds),
    ],
)
def test_every_column_of_the_ood_and_robustness_tables_has_its_metrics_range(column, bounds):
    assert tables.metric_bounds(column) == tuple(map(float, bounds))


def test_differences_and_p_values_are_shown_in_range():
    assert tables.difference_bounds("top1") == (-1.0, 1.0)
    assert tables.difference_cell(-0.09, 1.5) == "-9.00\u00a0[-100.00,\u00a0100.00]‡"
    assert tables.difference_cell(0.02, 0.01) == "2.00\u00a0±\u00a01.00"
    assert tables.p_value_text(0.0, "paired bootstrap over test images") == "< 0.0005 (1/2,000)"
    assert tables.p_value_text(0.0, "paired t over seeds") == "0" and tables.p_value_text(0.0123, "x") == "0.0123"


def test_a_temperature_at_the_bracket_is_flagged():
    from harness.metrics import LOG_T_BOUNDS, fit_temperature

    assert temperature_at_bound(float(np.exp(LOG_T_BOUNDS[1]))) and temperature_at_bound(float(np.exp(-6)))
    assert not temperature_at_bound(1.7)
    import torch

    labels = torch.arange(40) % 5
    wrong = 5 * torch.nn.functional.one_hot((labels + 1) % 5, 5).float()  # always confidently wrong: the NLL falls
    assert temperature_at_bound(fit_temperature(wrong, labels))  # all the way to uniform, T at the bracket's top


def test_first_sentences_keep_et_al_and_markdown_cells_are_escaped():
    from harness.methods.base import first_sentence
    from harness.trial.listing import _md, listing

    assert (
        first_sentence("MIMO (Havasi et al. 2021): summed inputs. More.") == "MIMO (Havasi et al. 2021): summed inputs."
    )
    assert first_sentence("Uses e.g. a mask, i.e. a box. Then.") == "Uses e.g. a mask, i.e. a box."
    assert first_sentence("By J. Smith. Two.") == "By J. Smith."
    assert "(Havasi et al. 2021)" in listing()
    assert _md("a | b <script>x</script> $x$ [l](u)") == r"a \| b \<script\>x\</script\> \$x\$ \[l\](u)"


@pytest.mark.slow  # draws a whole figure: the fast lane keeps its margin under 90 s
def test_cost_figure_titles_name_each_cost(tmp_path):
    """Each panel of the cost figure names its own cost (a loop variable once named every panel after the last
    method), read back from the SVG, where matplotlib writes each text beside its paths."""
    root = tmp_path / "results" / "cost"
    for seed in (0, 1):
        make_trial(root, seed, 0.5, method="vanilla")
        make_trial(root, seed, 0.6, method="cut_mixmo", M=2, b=2)
    summary = tables.summarize(collect(root, rule="probabilities"), rule="probabilities")
    figures.cost_figure(summary, tmp_path / "cost")
    svg = (tmp_path / "cost.svg").read_text()
    for cost in ("training hours", "parameters", "inference GFLOP per image"):
        assert f"top-1 accuracy against {cost}" in svg and f"{cost} (log)" in svg
    assert "against Cut-MixMo" not in svg and "Cut-MixMo (log)" not in svg


def test_a_label_with_dollars_is_text_not_mathtext(tmp_path):
    """A plugin's label or a folder's name holding $...$ is drawn as written (mathtext would raise on it), and the
    log axes' own tick labels still use mathtext."""
    with plt.rc_context(figures.STYLE):
        fig, ax = plt.subplots()
        ax.plot([1, 10], [0, 1], label=figures.plain(r"$\notacommand{x}$ | <b>"))
        ax.set_title(figures.plain(r"$\frac{$"))
        ax.set_xscale("log")
        ax.legend()
        figures.save_figure(fig, tmp_path / "dollars")
    svg = (tmp_path / "dollars.svg").read_text()
    assert r"<!-- $\notacommand{x}$ | &lt;b&gt; -->" in svg and r"<!-- $\frac{$ -->" in svg
    assert r"<!-- $\mathdefault{10^{0}}$ -->" in svg  # the axis's own tick labels: mathtext as before


@pytest.mark.slow  # whole reports
@pytest.mark.parametrize("rule", ["probabilities", "logits"])
def test_the_driver_composes_ensembles_under_the_suites_rule(tmp_path, rule):
    """`harness run` prints and writes (ensembles.json, MLflow) the same ensemble numbers as the report under the
    suite's `ensemble_average`; an ensemble row carries no member's trial id or seed."""
    root = tmp_path / "results" / "rule"
    dirs = [make_trial(root, seed, 0.5, method="cut_mixmo", M=2, b=2) for seed in (0, 1)]
    lines = compose_suite_ensembles(root, dirs, [("cut_mixmo", [2])], rule)
    (written,) = json.loads((root / schema.ENSEMBLES).read_text())
    assert written["ensemble_average"] == rule
    report = build_report(root, [("cut_mixmo", [2])], average=rule, figures=False)
    row = report["summary_frame"].query("members == 2").iloc[0]
    assert row.top1_mean == written["top1"] and row.nll_mean == pytest.approx(written["nll"], rel=1e-12)
    assert f"top1 {100 * row.top1_mean:.2f}%" in lines[0]
    ensembles = ensemble_rows(collect(root, rule="probabilities"), [("cut_mixmo", [2])], rule="probabilities")
    assert "trial_id" not in ensembles and "seed" not in ensembles


# --- the matrix (slow lane): one real-data suite, every subset of its seeds reported under both rules
BASE = {
    "dataset": "cifar100",
    "depth": 10,
    "width": 1,
    "epochs": 1,
    "train_subset": 400,
    "test_subset": 200,
    "class_subset": 98,  # the other 2 classes (200 test images): the held-out OOD set
    "eval_every": 0,
    "batch_size": 64,
}


@pytest.fixture(scope="module")
def matrix_sweep(real_data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    out = harness(
        "data", "corrupt", "cifar100", "--images", 20, "--corruptions", "gaussian_noise", "contrast",
        "--out", tmp / "cc", HARNESS_DATA_DIR=real_data_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rng = np.random.default_rng(0)
    (tmp / "ood").mkdir()
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp / "ood" / f"{i}.png")
    for plugin in ("classwise_ece.py", "regmixup.py"):  # a plugin metric and a plugin method
        shutil.copy(ROOT / "examples" / "plugins" / plugin, tmp / plugin)
    suite = {
        "name": "matrix",
        "description": "every feature at once, tiny",
        "base": BASE,
        "grid": {"method": ["vanilla", "cut_mixmo"], "seed": [0, 1, 2]},
        "include": [{"method": "regmixup", "seed": [0, 1]}],
        "rules": [{"when": {"method": "cut_mixmo"}, "set": {"M": 2, "b": 2}}],
        "ensembles": [{"method": "vanilla", "sizes": [2]}],
        "ensemble_average": "logits",
        "eval_sets": ["ood:heldout-classes", f"ood:folder={tmp / 'ood'}", f"cifar100-c-generated={tmp / 'cc'}"],
        "plugins": ["classwise_ece.py", "regmixup.py"],
        "resources": {"cpus": 1},
        "concurrency": 1,  # one trial worker (its dataset read once): a second is a second torch start-up
        "storage": str(tmp / "results"),
    }
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = harness("run", path, HARNESS_DATA_DIR=real_data_dir, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    return tmp, path, out.stdout


def interval_cells(path: Path):
    """(column, mean, low end, high end) of every cell of a report CSV that shows an interval."""
    shown = re.compile(r"^(-?[\d.]+)\u00a0(?:±\u00a0([\d.]+)|\[(-?[\d.]+),\u00a0(-?[\d.]+)\]‡)")
    with open(path) as f:
        for row in csv.DictReader(f):
            for column, cell in row.items():
                match = shown.match(cell or "")
                if match:
                    mean, half, lo, hi = match.groups()
                    mean = float(mean)
                    yield (
                        column,
                        mean,
                        *((mean - float(half), mean + float(half)) if half else (float(lo), float(hi))),
                    )


SHOWN_ON = ("clean ", "corrupted ", "15-mean ", "UB-17 ", "pooled ", "near ", "far ", "ID ")


def shown_bounds(column: str) -> tuple[float, float]:
    """A table column's range as printed (percentages for the metrics shown x100), from the declarations alone."""
    labels = {m.label: (m.bounds[0] * m.scale, m.bounds[1] * m.scale) for _, m in METRICS.items()}
    labels |= {d.label: (100 * d.bounds[0], 100 * d.bounds[1]) for d in DETECTION_METRICS.values()}
    labels["top-1 difference (points)"] = (-100.0, 100.0)
    for prefix in SHOWN_ON:
        if column.startswith(prefix) and column[len(prefix) :] in labels:
            return labels[column[len(prefix) :]]
    assert column in labels, f"an interval in column {column!r}, whose range nothing declares"
    return labels[column]


def report_of(sweep_dir: Path, seeds: set[int], rule: str, specs, tmp: Path, draw: bool) -> tuple[dict, Path]:
    """The report of a copy of the sweep holding only ``seeds``' trials (its figures drawn where ``draw``)."""
    root = tmp / f"s{''.join(map(str, sorted(seeds)))}-{rule}-{'ens' if specs else 'none'}" / "matrix"
    root.mkdir(parents=True)
    for trial in sweep_dir.iterdir():
        if (trial / schema.CONFIG).exists() and yaml.safe_load((trial / schema.CONFIG).read_text())["seed"] in seeds:
            shutil.copytree(trial, root / trial.name)
    return build_report(root, specs, average=rule, figures=draw), root


@pytest.mark.parametrize("seeds", [{0}, {0, 1}, {0, 1, 2}], ids=["1seed", "2seeds", "3seeds"])
def test_every_combination_reports_with_intervals_in_range(matrix_sweep, seeds, tmp_path, real_data_dir):
    tmp, _, _ = matrix_sweep
    sweep_dir = tmp / "results" / "matrix"
    for rule in ("probabilities", "logits"):
        for specs in (None, [("vanilla", [2])]) if len(seeds) > 1 else (None,):  # one seed: no ensemble either way
            # the figures once per number of seeds (the logits rule, with the ensemble where there is one): drawing
            # them for every combination cost ~8 s each and checked no table
            draw = rule == "logits" and (specs is not None or len(seeds) == 1)
            report, root = report_of(sweep_dir, seeds, rule, specs, tmp_path, draw)
            out = root / schema.REPORT_DIR
            page = (out / schema.REPORT_PAGE).read_text()
            for section in ("Out-of-distribution detection", "Robustness to corruptions", "Selective prediction"):
                assert section in page, section
            assert page.count("<h2>Selective prediction") == 1
            checked = 0
            for path in out.glob("*.csv"):
                for column, mean, lo, hi in interval_cells(path):
                    low, high = shown_bounds(column)
                    assert low - 1e-9 <= lo <= mean <= hi <= high + 1e-9, (path.name, column, mean, lo, hi)
                    checked += 1
            assert checked > 0
            summary = report["summary_frame"]
            if len(seeds) >= 2:  # ensembles exist (composed for every method with two seeds when none are named)
                composed = compose_suite_ensembles(root, sorted(root.glob("vanilla-*")), [("vanilla", [2])], rule)
                (written,) = [r for r in json.loads((root / schema.ENSEMBLES).read_text()) if r["members"] == 2]
                row = summary[(summary.members == 2) & (summary.method == "vanilla")].iloc[0]
                assert row.top1_mean == written["top1"] and f"{100 * row.top1_mean:.2f}%" in composed[0]


def test_the_sweep_prints_one_number_per_ensemble(matrix_sweep, real_data_dir):
    """What `harness run` printed for its ensemble, ensembles.json, MLflow's parent run and the report agree."""
    tmp, path, stdout = matrix_sweep
    (line,) = [line for line in stdout.splitlines() if line.startswith("deep ensemble vanilla")]
    printed = float(re.search(r"top1 ([\d.]+)%", line).group(1))
    (written,) = json.loads((tmp / "results" / "matrix" / schema.ENSEMBLES).read_text())
    assert written["ensemble_average"] == "logits" and f"{100 * written['top1']:.2f}" == f"{printed:.2f}"
    table = stdout[stdout.index(" network ") :]
    (ensemble_row,) = [r for r in table.splitlines() if "(ensemble of 2)" in r]
    assert f"{printed:.2f}" in ensemble_row  # the run's own summary table: the same number, the same rule
    out = harness("report", path, HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    raw = pd.read_csv(tmp / "results" / "matrix" / schema.REPORT_DIR / "summary_raw.csv")
    reported = raw[(raw.members == 2) & (raw.method == "vanilla")].top1_mean.iloc[0]
    assert raw.classwise_ece_mean.notna().all()  # the suite's plugin metric, for trials and ensembles alike
    assert "regmixup" in set(raw.method)  # the plugin method's rows
    assert f"{100 * reported:.2f}" == f"{printed:.2f}"
    client, (parent,), _ = runs(f"sqlite:///{tmp / 'results' / 'mlflow.db'}", "matrix")
    tags = client.get_experiment_by_name("matrix").tags  # MLflow 3's UI: the training runs first, the description
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "every feature at once, tiny"
    ensemble_metrics = {k: v for k, v in parent.data.metrics.items() if "ensemble" in k and "top1" in k}
    assert ensemble_metrics and all(f"{100 * v:.2f}" == f"{printed:.2f}" for v in ensemble_metrics.values())


def test_a_partial_sweep_with_every_set_still_reports(matrix_sweep, tmp_path):
    tmp, _, _ = matrix_sweep
    root = tmp_path / "partial" / "matrix"
    shutil.copytree(tmp / "results" / "matrix", root, ignore=shutil.ignore_patterns(".cache", "report"))
    victim = sorted(root.glob("cut_mixmo-*"))[0]
    (victim / schema.METRICS).unlink()  # a trial that did not finish
    report = build_report(root, [("vanilla", [2])], average="logits", figures=False)
    assert victim.name in report["missing"]
    assert (root / schema.REPORT_DIR / "ood.csv").exists()


# --- faults a shared results folder or a plugin brings
@pytest.mark.slow  # subprocesses
def test_plugins_and_suites_that_are_not_regular_files_are_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "plugin.py"
    os.mkfifo(fifo)
    for path, what in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        proc = harness("list", "--plugin", path, timeout=60)
        assert proc.returncode == 2 and f"plugin {path}: cannot read it ({what}, not a regular file)" in proc.stderr
        proc = harness("run", path, "--dry-run", timeout=60)
        assert proc.returncode == 2 and f"{what}, not a regular file" in proc.stderr, proc.stderr
    big = tmp_path / "big.py"
    big.write_bytes(b"#" * (5 << 20))
    assert "larger than 4,194,304 bytes" in harness("list", "--plugin", big, timeout=60).stderr


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize("name", [schema.CONFIG, schema.METRICS, schema.HISTORY, schema.LOGITS])
def test_a_fifo_in_a_trial_folder_is_a_corrupt_trial_not_a_hang(tmp_path, name):
    import os

    root = tmp_path / "results" / "fifo"
    trial_dir = make_trial(root, 0, 0.5, method="vanilla")
    make_trial(root, 1, 0.6, method="vanilla")
    (trial_dir / name).unlink(missing_ok=True)
    os.mkfifo(trial_dir / name)
    for command in ("status", "report"):
        proc = harness(command, root, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{name}: a FIFO, not a regular file" in proc.stdout + proc.stderr, (command, proc.stdout, proc.stderr)


def test_the_dry_run_checks_storage_as_the_run_does(tmp_path):
    """Root passes os.access in /proc; the dry run now writes (and removes) a probe, as the run would."""
    from helpers import cli, write_suite

    proc = cli("run", write_suite(tmp_path, storage="/proc/harness_results"), "--dry-run")
    assert proc.returncode == 2 and "/proc/harness_results/synth is not a writable folder" in proc.stderr
    assert not list(tmp_path.glob(".write-probe-*"))
    assert cli("run", write_suite(tmp_path), "--dry-run").returncode == 0 and not (tmp_path / "results").exists()


def test_a_width_past_any_network_is_a_clear_error():
    from helpers import cli

    proc = cli("train", "--set", "dataset=synthetic", "--set", "width=100000000000000000000")
    assert proc.returncode == 2 and "width: Input should be less than or equal to 1024" in proc.stderr


# --- caches and shared folders: what is shown is what the files say
@pytest.mark.slow  # whole reports
def test_a_report_cache_edited_by_hand_or_of_the_wrong_shape_is_recomputed_never_shown(tmp_path):
    root = tmp_path / "results" / "cached"
    make_trial(root, 0, 0.35, method="vanilla")
    make_trial(root, 1, 0.35, method="vanilla")
    truth = build_report(root, figures=False)["summary_frame"].top1_mean.iloc[0]
    path = root / schema.SUITE_CACHE / schema.REPORT_CACHE
    stored = json.loads(path.read_text())
    planted = {
        k: ({**v, "top1": 0.098} if isinstance(v, dict) and "top1" in v else v) for k, v in stored["values"].items()
    }
    path.write_text(json.dumps({**stored, "values": planted}))  # the signature no longer matches
    assert build_report(root, figures=False)["summary_frame"].top1_mean.iloc[0] == truth
    for wrong in ([1, 2], "values", {"values": None}):
        path.write_text(json.dumps({**stored, "values": wrong, "outputs": wrong}))
        assert (
            build_report(root, figures=False)["summary_frame"].top1_mean.iloc[0] == truth
        )  # no AttributeError: recomputed


@pytest.mark.slow  # whole reports
def test_a_file_rewritten_in_place_with_its_old_size_and_time_is_read_again(tmp_path):
    """The caches key a file by size, mtime, inode and ctime: setting the mtime back (os.utime) moves the ctime."""
    import os

    root = tmp_path / "results" / "racy"
    trials = [make_trial(root, s, 0.10, method="vanilla") for s in (0, 1)]
    before = build_report(root, figures=False)["summary_frame"].top1_mean.iloc[0]
    for trial_dir, other in zip(trials, (0.35, 0.35)):
        metrics_file = trial_dir / schema.METRICS
        info = metrics_file.stat()
        metrics = json.loads(metrics_file.read_text())
        text = json.dumps({**metrics, "top1": other})
        text = text + " " * (info.st_size - len(text)) if len(text) < info.st_size else text
        metrics_file.write_text(text)
        os.utime(metrics_file, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = build_report(root, figures=False)["summary_frame"].top1_mean.iloc[0]
    assert before == pytest.approx(0.10, abs=0.01) and after == pytest.approx(0.35)


@pytest.mark.slow  # whole reports
def test_verify_recomputes_from_the_logits_and_lists_each_disagreement(tmp_path):
    from helpers import cli

    root = tmp_path / "results" / "planted"
    trial_dir = make_trial(root, 0, 0.3, method="vanilla")
    make_trial(root, 1, 0.5, method="vanilla")
    assert cli("report", root, "--verify", "--no-figures").returncode == 0
    metrics = json.loads((trial_dir / schema.METRICS).read_text())
    (trial_dir / schema.METRICS).write_text(json.dumps({**metrics, "top1": 0.098, "nll": 0.01}))
    proc = cli("report", root, "--verify", "--no-figures")
    assert proc.returncode == 1
    assert f"{trial_dir.name}: " in proc.stdout and "top1: metrics.json 0.098, the saved logits 0.3" in proc.stdout
    assert "nll: metrics.json 0.01" in proc.stdout and "1 trial(s) whose metrics.json disagrees" in proc.stdout
    raw = pd.read_csv(root / schema.REPORT_DIR / "summary_raw.csv")
    assert raw.top1_mean.iloc[0] == pytest.approx((0.3 + 0.5) / 2)  # the page shows the logits' numbers


def test_a_grid_index_of_the_wrong_shape_is_rebuilt_not_shown(tmp_path):
    from harness.store import trial_index
    from helpers import cli, write_suite

    suite = write_suite(tmp_path)
    assert cli("run", suite, "--dry-run").returncode == 0
    path = trial_index._folder() / f"{trial_index.key(suite, None, [])}.json"
    record = json.loads(path.read_text())
    good = [row["trial_id"] for row in record["trials"]]
    for planted in ({"width": "wide"}, {"trial_id": "etc", "trial_dir": "/etc"}, {"seed": True}):
        rows = [{**record["trials"][0], **planted}, *record["trials"][1:]]
        path.write_text(json.dumps({**record, "trials": rows}))
        proc = cli("status", suite)
        assert proc.returncode == 0 and all(t in proc.stdout for t in good), proc.stdout
        assert "wide" not in proc.stdout and "etc" not in proc.stdout and "4 pending" in proc.stdout


def test_mnist_as_an_ood_set_reads_its_test_split_alone_and_bounds_what_a_gz_inflates_to(tmp_path):
    import gzip

    from harness.data.errors import DataError
    from harness.data.sources.mnist import MAX_IDX_BYTES, mnist

    folder = tmp_path / "mnist"
    folder.mkdir()
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    header = b"\0\0\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\0\0\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    )
    splits = mnist(tmp_path, test_only=True)  # no train files: an OOD set never reads them
    assert np.array_equal(splits.test.x[..., 0], images) and len(splits.train.x) == 0
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        mnist(tmp_path)  # training on MNIST still needs them
    bomb = gzip.compress(header + bytes(MAX_IDX_BYTES + 10))
    assert len(bomb) < 1 << 20
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(bomb)
    with pytest.raises(DataError, match="inflates past 67,108,864 bytes"):
        mnist(tmp_path, test_only=True)


@pytest.mark.slow  # a subprocess that waits
def test_a_plugin_that_blocks_at_import_is_named(tmp_path):
    import subprocess
    import sys

    from helpers import harness_env

    plugin = tmp_path / "slow.py"
    plugin.write_text("import time\n\ntime.sleep(30)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "list", "--plugin", str(plugin)],
        env=harness_env(HARNESS_PLUGIN_SLOW_S="1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()  # within seconds, long before the import ends
    finally:
        proc.kill()
    assert f"plugin {plugin}: still importing after 1 s" in line


def test_a_trial_whose_worker_exited_before_a_checkpoint_says_so(tmp_path):
    from harness.store.trial_folder import TrialFolder
    from helpers import trial

    cfg = trial(dataset="synthetic", output_dir=tmp_path, name="stopped")
    cfg.trial_dir.mkdir(parents=True)
    TrialFolder(cfg.trial_dir).begin(cfg.record(), "host/abc123", 0)  # the worker started it, then died
    state = TrialFolder(cfg.trial_dir).state()
    assert state.state == "pending"
    assert "on host/abc123 (attempt 1), stopped before its first checkpoint" in state.detail
    from harness.execution.status import status_rows, status_view

    assert "stopped before its first checkpoint" in status_view(status_rows([cfg]))


def test_a_flop_count_of_the_wrong_shape_in_the_cache_is_counted_again():
    from harness.trial import cost
    from helpers import tiny_config

    cfg = tiny_config()
    truth = cost.trial_flops(cfg)
    cache = cost._disk_cache()
    for key in list(cache):
        cache[key] = {"flops": "many", "params": -1}  # every entry planted: none may be used
    cost._measured.cache_clear()
    assert cost.trial_flops(cfg) == truth
    assert sum(cost._valid_count(v) for v in cache.values()) >= 1  # the one needed was counted again
    cost._disk_cache.cache_clear()


@pytest.mark.slow  # a whole report
def test_the_page_states_each_statistic_and_scrolls_its_wide_tables(tmp_path):
    """Captions say how each interval and p-value is made; one run a side is said to decide nothing; a suite with
    no learning curve says why; every table sits in a container that scrolls sideways."""
    root = tmp_path / "results" / "captions"
    make_trial(root, 0, 0.3, method="vanilla", eval_every=0)
    make_trial(root, 0, 0.5, method="cut_mixmo", M=2, b=2, eval_every=0)
    build_report(root)
    out = root / schema.REPORT_DIR
    page = (out / schema.REPORT_PAGE).read_text()
    assert page.count("<table") == page.count("<div class=scroll><table") > 0
    assert ".scroll { overflow-x: auto" in page
    assert "2,000 resamples of the test images, the percentile interval" in page  # the † bootstrap
    assert "The IQMs are point values: no interval is computed for them." in page
    assert "no finished trial was evaluated on its test set at two epochs or more" in page
    improvement = (out / "improvement.csv").read_text()
    assert "one run a side: no interval, decides nothing" in improvement
    paired = (out / "paired_differences.csv").read_text()
    assert "< 0.0005 (1/2,000)" in paired or "paired bootstrap" in paired


def test_a_fifo_where_data_should_be_is_a_clear_error_not_a_hang(tmp_path):
    import os

    from harness.data.errors import DataError
    from harness.data.readers import read_npz_folder

    (tmp_path / "cifar100").mkdir()
    for split in ("train", "test"):
        os.mkfifo(tmp_path / "cifar100" / f"{split}.npz")
    with pytest.raises(DataError, match="a FIFO, not a regular file"):
        read_npz_folder(tmp_path / "cifar100", 100)
