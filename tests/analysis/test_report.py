"""`harness report` on fixture results with known numbers: aggregation, ensembles, published join,
figures (checked on the matplotlib objects), the HTML page in headless Chromium, partial sweeps."""

import math
import subprocess

import numpy as np
import pandas as pd
import pytest

from analysis import figures, tables
from analysis.collect import collect, ensemble_rows
from analysis.report import build_report
from analysis.stats import t_halfwidth
from harness.core import schema
from helpers import LABELS, chromium, chromium_dom, make_trial


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "results" / "fixture"
    for seed, acc in zip((0, 1, 2), (0.5, 0.6, 0.7)):
        make_trial(root, seed, acc, method="vanilla")
        make_trial(root, seed, acc, method="vanilla", width=4)
    make_trial(root, 0, method="cut_mixmo", M=2, b=2, heads=[[True] * 6 + [False] * 4, [False] * 4 + [True] * 6])
    make_trial(root, 0, method="cut_mixmo", M=2, b=2, width=4, heads=[[True] * 7 + [False] * 3] * 2)
    return root


def test_mean_and_std_over_seeds_are_exact(sweep):
    summary = tables.summarize(collect(sweep, rule="probabilities"), rule="probabilities")
    row = summary[(summary.method == "vanilla") & (summary.width == 2) & (summary.members == 1)].iloc[0]
    assert row.n == 3
    assert row.top1_mean == pytest.approx(0.6) and row.top1_std == pytest.approx(0.1)  # ddof = 1
    shown = tables.display_table(summary)
    assert "60.00\u00a0±\u00a024.84" in shown["top-1 %"].tolist()  # the 95% t-interval: 4.3027 x 0.1 / sqrt(3)
    single = summary[(summary.method == "cut_mixmo") & (summary.width == 2)].iloc[0]
    assert single.n == 1 and np.isnan(single.top1_std)
    # two heads of 60% each whose errors do not overlap: ratio-error = 8 single errors / 0 shared
    assert single.heads_mean_top1_mean == pytest.approx(0.6)


def test_deep_ensemble_is_the_average_of_member_logits(sweep):
    trials = collect(sweep, rule="probabilities")
    ens = ensemble_rows(trials, [("vanilla", [2, 3])], rule="probabilities")
    assert sorted(zip(ens.width, ens.members)) == [(2, 2), (2, 3), (4, 2), (4, 3)]
    row = ens[(ens.width == 2) & (ens.members == 2)].iloc[0]
    # by hand: average the logits of seeds 0 and 1 and count correct argmaxes
    dirs = trials[(trials.method == "vanilla") & (trials.width == 2)].sort_values("seed").trial_dir.tolist()
    avg = sum(np.load(f"{d}/logits.npz")[schema.TEST_LOGITS].astype(np.float32)[:, 0] for d in dirs[:2]) / 2
    assert row.top1 == pytest.approx((avg.argmax(1) == LABELS).mean())
    assert row.num_params == 2 * 4_000_000 and row.train_hours == pytest.approx(2.0)


def test_published_table_joins_on_dataset_network_method_and_M(tmp_path):
    root = tmp_path / "results" / "paper"
    make_trial(root, 0, 0.8, method="vanilla", depth=28, width=10)
    make_trial(root, 0, 0.9, method="cut_mixmo", M=2, b=4, msda="cutmix", depth=28, width=10)
    make_trial(root, 0, 0.9, method="cut_mixmo", M=2, b=4, depth=16, width=10)  # WRN-16: not in the paper
    published = tables.published_vs_reproduced(
        tables.summarize(collect(root, rule="probabilities"), rule="probabilities")
    )
    assert len(published) == 3  # vanilla twice: the MixMo authors' release and uncertainty-baselines' row
    vanilla = published[(published.method == "vanilla") & (published.source == "authors' code release")].iloc[0]
    ub = published[(published.method == "vanilla") & published.source.str.contains("uncertainty-baselines")].iloc[0]
    assert ub["published top-1 %"] == "79.80" and ub["published NLL / ECE"] == "0.875 / 0.0857"
    assert vanilla["published top-1 %"] == "81.79" and vanilla["ours top-1 %"] == "80.00\u00a0[55.00,\u00a0100.00]‡†"
    assert vanilla["ours top-1 %"].endswith("†")  # one seed: the bootstrap interval over the test images
    assert vanilla["difference"] == "-1.79" and vanilla["verdict"] == "within"
    cut = published[published.method == "cut_mixmo + cutmix"].iloc[0]
    assert cut["published top-1 %"] == "85.77-85.92" and float(cut["difference"]) == pytest.approx(
        90 - 85.845, abs=0.006
    )


def test_figures_have_the_expected_axes_series_and_labels(sweep, tmp_path):
    trials = collect(sweep, rule="probabilities")
    ens = ensemble_rows(trials, [("vanilla", [2])], rule="probabilities")
    summary = tables.summarize(pd.concat([trials, ens], ignore_index=True), rule="probabilities")
    fig = figures.width_figure(summary, tmp_path / "f" / "width")
    ax_w, ax_p = fig.axes[:2]
    assert ax_w.get_xlabel() == "width w" and ax_w.get_ylabel() == "top-1 accuracy (%)"
    assert ax_p.get_xlabel() == "parameters (millions)" and ax_p.get_xscale() == "log"
    legend = [t.get_text() for t in ax_p.get_legend().get_texts()]
    assert legend == ["vanilla", "vanilla (ensemble of 2)", "cut_mixmo"]
    vanilla_line = ax_w.get_lines()[0]
    assert list(vanilla_line.get_xdata()) == [2, 4] and list(vanilla_line.get_ydata()) == pytest.approx([60, 60])
    assert (tmp_path / "f" / "width.png").exists() and (tmp_path / "f" / "width.svg").exists()
    cal = figures.calibration_width_figure(summary, tmp_path / "f" / "cal")
    assert [a.get_ylabel() for a in cal.axes[:2]] == ["NLL", "ECE (15 bins)"]
    rel = figures.reliability_figure(trials, tmp_path / "f" / "rel", rule="probabilities")
    titles = [a.get_title() for a in rel.axes]
    assert len(titles) == 4 and all("ECE" in t for t in titles)  # 2 methods x (before, after)
    assert "before" in titles[0] and "after (T =" in titles[1]
    div = figures.diversity_figure(trials, ens, tmp_path / "f" / "div")
    assert div.axes[0].get_xlabel() == "mean individual top-1 (%)"
    assert [t.get_text() for t in div.axes[0].get_legend().get_texts()] == [
        "cut_mixmo (heads)",
        "vanilla ensemble of 2 (members)",
    ]


@pytest.mark.slow  # trains, or runs the CLI in subprocesses: the full lane
def test_partial_sweep_report_says_what_is_missing(sweep):
    failed = make_trial(sweep, 5, method="cutmix")
    (failed / "metrics.json").unlink()
    (failed / "error.txt").write_text("Traceback...\nRuntimeError: CUDA out of memory\n")
    report = build_report(sweep, expected={"mimo-wrn16x2-M2-s0-00000000": "mimo, width 2, seed 0"})
    assert report["missing"][failed.name] == "failed: RuntimeError: CUDA out of memory"
    assert report["missing"]["mimo-wrn16x2-M2-s0-00000000"].startswith("not started")
    page = (report["dir"] / "index.html").read_text()
    assert "Missing (2 trials)" in page and "CUDA out of memory" in page
    assert {p.name for p in report["figures"]} >= {"width_cifar100_wrn16_3ep.png", "reliability.svg", "diversity.png"}


@pytest.mark.slow  # a whole report
def test_a_report_without_figures_writes_the_same_tables_and_says_so(sweep):
    from helpers import cli

    full = build_report(sweep)
    tables = {p.name: p.read_bytes() for p in full["dir"].iterdir() if p.suffix in (".csv", ".md", ".tex")}
    assert full["figures"] and len(tables) > 10
    proc = cli("report", sweep, "--no-figures")  # the same folder: the full report's figures are still in it
    assert proc.returncode == 0, proc.stderr
    assert f"({len(full['tables'])} table files, 0 figure files)" in proc.stdout
    assert {p.name: p.read_bytes() for p in full["dir"].iterdir() if p.suffix in (".csv", ".md", ".tex")} == tables
    page = (full["dir"] / "index.html").read_text()
    assert "Figures not drawn (<code>harness report --no-figures</code>)" in page
    assert "<img" not in page and "figures/" not in page  # the earlier figures neither shown nor listed


@pytest.mark.slow  # a browser
def test_html_page_renders_in_headless_chromium(sweep, tmp_path):
    report = build_report(sweep, [("vanilla", [2])])
    page = report["dir"] / "index.html"
    args = chromium(tmp_path / "chrome")
    dom = chromium_dom(page, tmp_path / "chrome")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<table" in dom.stdout and "vanilla (ensemble of 2)" in dom.stdout
    assert "ERR_FILE_NOT_FOUND" not in dom.stderr and "Uncaught" not in dom.stderr
    shot = tmp_path / "page.png"
    subprocess.run(
        args + [f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # tables and figures drawn, not a blank page
    for img in report["figures"]:
        if img.suffix == ".png":
            assert f'src="figures/{img.name}"' in page.read_text()


def test_trials_with_different_recipes_are_never_averaged_together(tmp_path):
    root = tmp_path / "results" / "edited"
    make_trial(root, 0, 0.5, method="vanilla", train_subset=1000)
    make_trial(root, 0, 0.7, method="vanilla", train_subset=2000)  # the suite was edited and re-run
    trials = collect(root, rule="probabilities")
    summary = tables.summarize(trials, trials.attrs["config_keys"], rule="probabilities")
    assert len(summary) == 2 and sorted(summary.top1_mean) == pytest.approx([0.5, 0.7])
    assert summary.attrs["extra_keys"] == ["train_subset"]
    assert sorted(tables.display_table(summary)["train_subset"]) == ["1000", "2000"]


def test_curves_figure_plots_each_evaluated_history(sweep, tmp_path):
    assert (
        figures.curves_figure(collect(sweep, rule="probabilities"), tmp_path / "none") is None
    )  # no history: no figure
    top1 = {"vanilla": [0.2, 0.4, 0.5], "cut_mixmo": [0.1, 0.3, 0.6]}
    for method, values in top1.items():
        trial = next(sweep.glob(f"{method}-wrn16x4-*-s0-*"))
        rows = [{"epoch": e + 1, "train_loss": 1.0, "test_top1": v} for e, v in enumerate(values)]
        rows.insert(1, {"epoch": 1.5, "train_loss": 1.0, "test_top1": None})  # an epoch without evaluation
        pd.DataFrame(rows).to_csv(trial / "history.csv", index=False)
    fig = figures.curves_figure(collect(sweep, rule="probabilities"), tmp_path / "f" / "curves")
    (ax,) = fig.axes
    assert ax.get_title() == "wrn-16-4" and ax.get_ylabel() == "test top-1 (%)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"vanilla s0", "cut_mixmo s0"}
    for method, values in top1.items():
        assert list(lines[f"{method} s0"].get_xdata()) == [1, 2, 3]
        assert list(lines[f"{method} s0"].get_ydata()) == pytest.approx([100 * v for v in values])
    assert (tmp_path / "f" / "curves.png").exists()


@pytest.mark.slow  # trains or builds reports: the full lane
def test_the_tables_calibrated_metrics_are_the_reliability_panels(sweep, tmp_path):
    """One protocol: the ECE printed in each 'after' panel is the table's calibrated ECE of that trial, and
    the page states the protocol (and says why calibration can lose, when it does)."""
    trials = collect(sweep, rule="probabilities")
    fig = figures.reliability_figure(trials, tmp_path / "rel", rule="probabilities")
    done = trials[trials.state == "finished"]
    for row in fig.axes[1::2][: len(set(done.method))]:
        if not row.get_title():
            continue
        title = row.get_title()
        method, width = title.split(" w=")[0], int(title.split(" w=")[1].split(",")[0])
        ece_shown = float(title.rsplit("ECE ", 1)[1])
        pick = done[(done.method == method.split(" ")[0]) & (done.width == width)].sort_values("seed").iloc[0]
        assert ece_shown == pytest.approx(pick.cal_ece, abs=5e-5)  # the title's 4 decimals
    report = build_report(sweep)
    page = (report["dir"] / "index.html").read_text()
    assert "one protocol: test-set cross-fit" in page


def test_intervals_by_hand(sweep):
    """Seeds 0, 1, 2 of the fixture have top-1 0.5, 0.6, 0.7: mean 0.6, std 0.1, t(0.975, 2) = 4.302653."""
    rows = collect(sweep, rule="probabilities")
    summary = tables.summarize(rows[rows.state == "finished"], rows.attrs["config_keys"], rule="probabilities")
    three = summary[summary.n == 3].iloc[0]
    assert three.top1_mean == pytest.approx(0.6) and three.top1_ci == pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-6)
    assert three.top1_ci_kind == "t"
    assert math.isnan(t_halfwidth(0.1, 1))  # no interval from one value
    # one seed: the bootstrap interval over test images, near 1.96 sqrt(p (1 - p) / N)
    from analysis.ensembles import bootstrap_top1_halfwidth

    labels = np.arange(2000) % 10
    logits = np.zeros((2000, 1, 10), np.float32)
    logits[np.arange(2000), 0, np.where(np.arange(2000) % 2 == 0, labels, (labels + 1) % 10)] = 5  # half right
    half = bootstrap_top1_halfwidth(logits, labels, rule="probabilities")
    assert half == pytest.approx(1.96 * (0.25 / 2000) ** 0.5, rel=0.12)


def test_paired_differences_by_hand(tmp_path):
    """Cut-MixMo 0.6, 0.8, 0.9 against vanilla 0.5, 0.6, 0.7 on seeds 0-2 (10 test images each): differences
    0.1, 0.2, 0.2; mean 1/6, sd 0.057735, t = 5.0 with 2 df: p = 0.037750; half-width 4.302653 x sd / sqrt(3)."""
    root = tmp_path / "results" / "paired"
    for seed, (ours, base) in enumerate(((0.6, 0.5), (0.8, 0.6), (0.9, 0.7))):
        make_trial(root, seed, ours, method="cut_mixmo", M=2, b=2)
        make_trial(root, seed, base, method="vanilla")
    make_trial(root, 0, 0.7, method="cut_mixmo", M=2, b=2, width=4)  # one seed: the bootstrap over test images
    make_trial(root, 0, 0.4, method="vanilla", width=4)
    make_trial(root, 1, 0.4, method="vanilla", width=4)  # with seed 0: a deep ensemble of 2 vanilla networks
    trials = collect(root, rule="probabilities")
    paired = tables.paired_differences(
        trials, ensemble_rows(trials, [("vanilla", [2])], rule="probabilities"), rule="probabilities"
    )
    three = paired[paired.width == 2].iloc[0]
    assert three.comparison == "cut_mixmo - vanilla" and three.seeds == 3
    assert three.difference == pytest.approx(1 / 6) and three.p == pytest.approx(0.037750, abs=1e-5)
    assert three.ci == pytest.approx(4.302653 * 0.0577350 / 3**0.5, rel=1e-5)
    one = paired[(paired.width == 4) & (paired.comparison == "cut_mixmo - vanilla")].iloc[0]
    assert one.seeds == 1 and one.difference == pytest.approx(0.3) and one.test == "paired bootstrap over test images"
    # 7 images right against 4 (the same first 4): 3 discordant images decide. A resample has no discordant
    # image with probability 0.7^10 = 0.0282, so the bootstrap p-value is about 2 x 0.0282 = 0.056
    assert one.p == pytest.approx(2 * 0.7**10, abs=0.015) and 0 < one.ci < 0.35
    # the deep ensemble of the two vanilla seeds (both right on the first 4 images) against Cut-MixMo's seed 0
    ens = paired[(paired.width == 4) & (paired.comparison == "cut_mixmo - vanilla ensemble of 2")].iloc[0]
    assert ens.difference == pytest.approx(0.3) and ens.test.startswith("paired bootstrap")


def test_pareto_front_by_hand():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0]
    score = [0.50, 0.60, 0.55, 0.60, 0.70]
    # (2, 0.55) is beaten by (2, 0.60); (3, 0.60) by (2, 0.60); the rest trade cost for score
    assert tables.pareto_front(cost, score) == [True, True, False, False, True]


@pytest.mark.slow  # subprocesses, worker pools or a whole report: the full lane
def test_the_page_puts_fig_2_first_and_captions_and_links_everything(sweep):
    report = build_report(sweep, source="suites/fixture.yaml")
    page = (report["dir"] / "index.html").read_text()
    order = [page.index(h) for h in ("Top-1 against width (Fig. 2)", "<h2>Cost", "<h2>Calibration", "<h2>Results")]
    assert order == sorted(order)
    assert page.count("<figcaption>") == page.count("<figure>") >= 5
    for png in (report["dir"] / "figures").glob("*.png"):
        assert f'href="figures/{png.name}"' in page and f'href="figures/{png.stem}.svg"' in page
    assert 'href="results.csv"' in page and "suite file: <code>suites/fixture.yaml</code>" in page
    assert "harness " in page and "hardware: cpu" in page and "95% t-interval" in page


def test_intervals_stay_inside_the_metric_range_at_two_seeds(tmp_path):
    """Two seeds far apart: the t-interval (12.7 standard errors) would leave [0, 1]; tables and figures clip it."""
    root = tmp_path / "results" / "two"
    make_trial(root, 0, 0.1, method="vanilla")
    make_trial(root, 1, 0.9, method="vanilla")
    summary = tables.summarize(collect(root, rule="probabilities"), rule="probabilities")
    row = summary.iloc[0]
    assert row.n == 2 and row.top1_mean == pytest.approx(0.5) and row.top1_mean + row.top1_ci > 1
    for column in [c[:-5] for c in summary if c.endswith("_mean")]:
        lo, hi = tables.metric_bounds(column)
        assert (summary[f"{column}_lo"].dropna() >= lo).all() and (summary[f"{column}_hi"].dropna() <= hi).all()
    assert row.top1_clipped and (row.top1_lo, row.top1_hi) == (0.0, 1.0)
    assert tables.display_table(summary)["top-1 %"].iloc[0] == "50.00\u00a0[0.00,\u00a0100.00]‡"
    fig = figures.width_figure(
        summary, tmp_path / "width", collect(root, rule="probabilities").assign(members=1, msda="none")
    )
    bars = fig.axes[0].containers[0].lines[2][0].get_segments()
    assert all(0 <= y <= 100 for segment in bars for _, y in segment)
    seeds = fig.axes[0].collections[0].get_offsets()  # each seed as a point beside the mean
    assert sorted(np.round(seeds[:, 1], 1)) == [10.0, 90.0]


def test_probability_of_improvement_is_the_mann_whitney_statistic():
    from scipy.stats import mannwhitneyu

    from analysis.stats import iqm, probability_of_improvement, seeds_needed

    x, y = [0.80, 0.82, 0.81, 0.79], [0.78, 0.80, 0.77]
    p, lo, hi = probability_of_improvement(x, y)
    assert p == pytest.approx(mannwhitneyu(x, y).statistic / (len(x) * len(y)))
    assert 0 <= lo <= p <= hi <= 1
    assert probability_of_improvement([1.0, 2.0], [1.0, 2.0])[0] == 0.5  # ties count half
    assert probability_of_improvement(y, x, higher=False)[0] == pytest.approx(p)  # lower is better
    assert iqm([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5) and iqm([1.0, 3.0]) == 2.0
    assert seeds_needed(0.01, 0.01) == 16  # 2 (1.96 + 0.84)^2 = 15.7
    assert seeds_needed(0.0, 0.01) == float("inf")


@pytest.mark.slow  # trains or builds reports: the full lane
def test_the_same_saved_logits_are_read_under_either_rule(tmp_path):
    """MixMo's heads averaged as logits or as probabilities: the report recomputes from the saved logits, states
    the rule and shows what it moves."""
    import torch

    from harness.metrics import classification_metrics

    root = tmp_path / "results" / "rules"
    heads = [[True] * 6 + [False] * 4, [False] * 3 + [True] * 7]
    trial_dir = make_trial(root, 0, method="cut_mixmo", M=2, b=2, heads=heads)
    saved = np.load(trial_dir / "logits.npz")
    h, y = torch.from_numpy(saved[schema.TEST_LOGITS]).float(), torch.from_numpy(saved[schema.TEST_LABELS])
    for rule in ("probabilities", "logits"):
        report = build_report(root, average=rule, figures=False)
        row = report["summary_frame"].iloc[0]
        expected = classification_metrics(h, y, rule)
        assert row.nll_mean == pytest.approx(expected["nll"], rel=1e-5) and report["average"] == rule
        page = (root / "report" / "index.html").read_text()
        assert "averaging their softmax probabilities" in page if rule == "probabilities" else "their logits" in page
    assert (root / "report" / "aggregation_rule.md").is_file()
    assert build_report(root, figures=False)["average"] == "probabilities"  # the rule the trial recorded
