"""Figures (matplotlib): Fig. 2-style width plots, NLL/ECE against width, reliability diagrams,
diversity against individual accuracy. Each function returns its Figure and saves PNG + SVG."""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from analysis.ensembles import recalibrated  # noqa: E402
from analysis.output import save_figure  # noqa: E402
from analysis.tables import label, method_order  # noqa: E402
from harness.core import schema
from harness.metrics import METRICS, calibration_bins, ece, ensemble_logits, temperature_at_bound  # noqa: E402
from harness.store.trial_folder import TrialFolder  # noqa: E402
from harness.trial.listing import presentation  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 9,
}
SPARE_COLORS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354", "#756bb1"]


def plain(text) -> str:
    """Text drawn as written: a $ in a label (a plugin's, a folder's name) is a dollar sign, never mathtext."""
    return str(text).replace("$", r"\$")


def figure_label(row) -> str:
    """A row's label (analysis.tables.label) for a figure."""
    return plain(label(row))


def color(method: str) -> str:
    """The method's declared colour (harness.methods); one of SPARE_COLORS, fixed by its name, otherwise."""
    declared = presentation(method)["color"]
    return declared or SPARE_COLORS[zlib.crc32(method.encode()) % len(SPARE_COLORS)]


def marker(method: str) -> str:
    return presentation(method)["marker"]


def _series(summary: pd.DataFrame):
    """(label, colour, linestyle, rows sorted by width) for each method / ensemble size (and, in a study, tuned or
    recipe: the recipe dotted)."""
    keys = summary.assign(_order=summary.method.map(method_order))
    split = ["tuning"] if "tuning" in summary else []
    for values, rows in keys.groupby(["_order", "method", "msda", "members", *split], dropna=False):
        method, members = values[1], values[3]
        rows = rows.sort_values("width")
        style = "--" if members > 1 else ":" if split and values[4] == "recipe" else "-"
        yield figure_label(rows.iloc[0]), color(method), style, rows


def _yerr(rows: pd.DataFrame, metric: str) -> np.ndarray:
    """Asymmetric error bars (2, n) from a summary's interval ends, clipped to the metric's range."""
    mean = rows[f"{metric}_mean"].to_numpy(float)
    if f"{metric}_lo" not in rows:
        half = rows[f"{metric}_ci"].fillna(0).to_numpy(float)
        return np.stack([half, half])
    lo, hi = rows[f"{metric}_lo"].fillna(rows[f"{metric}_mean"]), rows[f"{metric}_hi"].fillna(rows[f"{metric}_mean"])
    return np.stack([mean - lo.to_numpy(float), hi.to_numpy(float) - mean])


def width_figure(summary: pd.DataFrame, path: Path, runs: pd.DataFrame | None = None) -> plt.Figure:
    """Top-1 against width (Fig. 2 of the paper) and against parameter count: the mean over seeds with the tables'
    95% interval (inside [0, 100]) and, beside it, each seed (or ensemble) of ``runs`` as a small point."""
    with plt.rc_context(STYLE):
        fig, (ax_w, ax_p) = plt.subplots(1, 2, figsize=(11.5, 4))
        for name, color, style, rows in _series(summary):
            if runs is not None and not runs.empty:
                r = rows.iloc[0]
                mine = runs[(runs.method == r.method) & (runs.members == r.members)
                            & (runs.msda.fillna("none") == (r.msda if r.msda == r.msda else "none"))]  # fmt: skip
                mine = mine[mine.width.isin(rows.width)]
                if "tuning" in mine and "tuning" in r:  # a study: the tuned configuration's runs or the recipe's
                    mine = mine[mine.tuning == r.tuning]
                jitter = 0.06 * (np.arange(len(mine)) % 3 - 1)
                ax_w.scatter(mine.width + jitter, 100 * mine.top1, s=9, color=color, alpha=0.55, zorder=3, lw=0)
            err = 100 * _yerr(rows, "top1")  # the tables' 95% interval, inside [0, 100]
            marker = "s" if style == "--" else "o"
            ax_w.errorbar(
                rows.width, 100 * rows.top1_mean, yerr=err, label=name, color=color, ls=style, marker=marker, capsize=3
            )
            ax_p.errorbar(
                rows.num_params_mean / 1e6,
                100 * rows.top1_mean,
                yerr=err,
                label=name,
                color=color,
                ls=style,
                marker=marker,
                capsize=3,
            )
        ax_w.set_xlabel("width w")
        ax_w.set_ylabel("top-1 accuracy (%)")
        ax_w.set_title("Top-1 against width")
        ax_w.set_xticks(sorted(summary.width.unique()))
        ax_p.set_xlabel("parameters (millions)")
        ax_p.set_xscale("log")
        ax_p.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        # minor ticks labelled at 2x and 5x only: all nine crowd each other within a decade
        ax_p.xaxis.set_minor_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "25" else "")
        )
        ax_p.set_title("Top-1 against parameters")
        ax_p.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the curves, never on them
        fig.suptitle(_network_title(summary))
        fig.tight_layout()
        save_figure(fig, path)
    return fig


ANNOTATED_POINTS = 60  # a cost panel labels each point with its width up to this many points


def cost_figure(summary: pd.DataFrame, path: Path) -> plt.Figure:
    """Top-1 (upper row) and calibrated NLL (lower row) against training hours, parameters, inference FLOPs per
    image and measured inference images/s (a deep ensemble counts all its members): each setting a marker per
    method, the Pareto front (no other setting both cheaper and better) circled."""
    from analysis.tables import pareto_front

    rows = summary.dropna(subset=["top1_mean"]).reset_index(drop=True)
    if "inference_gflops_mean" not in rows:
        rows["inference_gflops_mean"] = float("nan")
    missing = rows["inference_gflops_mean"].isna()  # trials from before metrics.json recorded it
    if missing.any():
        rows.loc[missing, "inference_gflops_mean"] = [_gflops(r) for _, r in rows[missing].iterrows()]
    axes_of = {  # an axis title per cost; which way is better: the declarations' (harness.metrics)
        "train_hours": "training hours",
        "num_params": "parameters",
        "inference_gflops": "inference GFLOP per image",
        "inference_images_per_s": "inference images/s (batch 256)",
    }
    costs = [(f"{m}_mean", title, METRICS.get(m).direction == "higher") for m, title in axes_of.items()]
    costs = [c for c in costs if c[0] in rows and rows[c[0]].notna().any()]
    scores = [("top1_mean", "top-1 accuracy (%)", 100, True), ("cal_nll_mean", "calibrated NLL", 1, False)]
    scores = [s for s in scores if s[0] in rows]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(scores), len(costs), figsize=(4.2 * len(costs), 3.8 * len(scores)), squeeze=False)
        for (score, score_name, scale, higher), ax_row in zip(scores, axes):
            for (cost, name, faster), ax in zip(costs, ax_row):
                shown = rows.dropna(subset=[cost, score])
                names = [figure_label(r) for _, r in shown.iterrows()]
                for entry in dict.fromkeys(names):  # one scatter per legend entry: thousands of points stay cheap
                    group = shown[[n == entry for n in names]]
                    first = group.iloc[0]
                    shape = marker(first.method) if first.members == 1 else "s"
                    ax.scatter(group[cost], scale * group[score], color=color(first.method), marker=shape, label=entry)
                if len(shown) <= ANNOTATED_POINTS:  # beyond that the widths overlap into a smudge
                    for _, r in shown.iterrows():
                        ax.annotate(f"w={r.width}", (r[cost], scale * r[score]), fontsize=6, xytext=(3, 3),
                                    textcoords="offset points")  # fmt: skip
                better = pareto_front(
                    [-c if faster else c for c in shown[cost]], [s if higher else -s for s in shown[score]]
                )
                front = shown[better].sort_values(cost)
                ax.plot(front[cost], scale * front[score], "k:", lw=1)
                ax.scatter(front[cost], scale * front[score], s=140, facecolors="none", edgecolors="black",
                           label="Pareto front")  # fmt: skip
                ax.set_xscale("log")
                ax.set_xlabel(name + " (log)")
                ax.set_ylabel(score_name)
                ax.set_title(f"{score_name.split(' (')[0]} against {name.split(' (')[0]}", fontsize=9)
        handles = dict(zip(*reversed(axes[0, -1].get_legend_handles_labels())))
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle(_network_title(rows) + "; squares: deep ensembles")
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def _gflops(row) -> float:
    """A summary row's inference GFLOPs per image (NaN for a method not registered here: another person's plugin)."""
    from harness.core.config import ConfigError
    from harness.trial.catalog import build_config
    from harness.trial.cost import inference_flops_per_image

    try:
        cfg = build_config(
            {
                "method": row.method,
                "model": row.model,
                "depth": int(row.depth),
                "width": int(row.width),
                "M": int(row.M),
            },
            "report",
        )
    except ConfigError:
        return float("nan")
    return inference_flops_per_image(cfg, *_shape(row)) * row.members / 1e9


def _shape(row) -> tuple[int, int]:
    """(classes, resolution) of a summary row's dataset."""
    from harness.trial.cost import dataset_shape

    classes, resolution = row.get("synthetic_classes", 10), row.get("synthetic_resolution", 32)
    return dataset_shape(
        row.dataset, int(classes) if classes == classes else 10, int(resolution) if resolution == resolution else 32
    )


def calibration_width_figure(summary: pd.DataFrame, path: Path) -> plt.Figure:
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for metric, ax, title in (("nll", axes[0], "NLL"), ("ece", axes[1], "ECE (15 bins)")):
            for name, color, style, rows in _series(summary):
                ax.errorbar(
                    rows.width,
                    rows[f"{metric}_mean"],
                    yerr=_yerr(rows, metric),
                    label=name,
                    color=color,
                    ls=style,
                    marker="o",
                    capsize=3,
                )
            ax.set_xlabel("width w")
            ax.set_ylabel(title)
            ax.set_title(f"{title} against width (before temperature scaling)")
            ax.set_xticks(sorted(summary.width.unique()))
        axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the curves
        fig.suptitle(_network_title(summary))
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def reliability_figure(trials: pd.DataFrame, path: Path, *, rule: str) -> plt.Figure:
    """Per method (its widest, lowest-seed finished trial): reliability diagrams before and after
    temperature scaling (the report's one protocol, heads combined by ``rule``, so the ECE in each title is the
    table's), with the
    number of test images in each confidence bin and the confidence histogram below the bars."""
    done = trials[trials.state == "finished"].sort_values(["width", "seed"], ascending=[False, True])
    picks = [done[done.method == m].iloc[0] for m in sorted(set(done.method), key=lambda m: (method_order(m), m))]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(picks), 2, figsize=(7.5, 3.4 * len(picks)), squeeze=False)
        for row, trial in zip(axes, picks):
            saved = TrialFolder(trial.trial_dir).logits()
            scaled, labels, calibrated = recalibrated(saved, rule=rule)
            logits = ensemble_logits(torch.from_numpy(saved[schema.TEST_LOGITS]), rule)
            temps = " / ".join(
                f"{t:.2f}" + (" (at the bound)" if temperature_at_bound(t) else "") for t in calibrated["temperatures"]
            )
            for ax, shown, when in ((row[0], logits, "before"), (row[1], scaled, f"after (T = {temps})")):
                count, conf, acc = calibration_bins(shown, labels)
                edges = np.linspace(0, 1, len(count) + 1)
                centers = (edges[:-1] + edges[1:]) / 2
                filled = count.numpy() > 0
                ax.bar(
                    centers[filled],
                    acc.numpy()[filled],
                    width=1 / len(count),
                    edgecolor="black",
                    alpha=0.7,
                    label="accuracy in the bin",
                )
                share = count.numpy() / count.sum().item()
                ax.bar(centers, share, width=1 / len(count), color="tab:gray", alpha=0.5, label="share of images")
                for x, c, a in zip(centers[filled], count.numpy()[filled], acc.numpy()[filled]):
                    ax.text(x, min(a + 0.02, 0.93), f"{int(c)}", ha="center", fontsize=5, rotation=90)
                ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_xlabel("confidence (bins of 1/15; numbers: images per bin)")
                ax.set_ylabel("accuracy")
                ax.set_title(f"{figure_label(trial)} w={trial.width}, {when}: ECE {ece(shown, labels):.4f}", fontsize=8)
        axes[0][0].legend(fontsize=6, loc="upper left")
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def curves_figure(trials: pd.DataFrame, path: Path) -> plt.Figure | None:
    """Test top-1 against epoch (the history's evaluations), one panel per width, one line per trial;
    None when no trial was evaluated at two epochs or more."""
    curves = []
    for _, trial in trials[trials.state == "finished"].iterrows():
        file = TrialFolder(trial.trial_dir) / schema.HISTORY
        history = pd.read_csv(file) if file.exists() else pd.DataFrame()
        points = history.dropna(subset=["test_top1"]) if "test_top1" in history else history.iloc[:0]
        if len(points) >= 2:
            curves.append((trial, points))
    if not curves:
        return None
    widths = sorted({t.width for t, _ in curves})
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths) + 1.5, 3.6), squeeze=False, sharey=True)
        for ax, width in zip(axes[0], widths):
            panel = [(trial, points) for trial, points in curves if trial.width == width]
            for trial, points in panel:
                ax.plot(
                    points.epoch,
                    100 * points.test_top1,
                    marker=".",
                    color=color(trial.method),
                    ls="-" if trial.seed == 0 else ":",
                    label=f"{figure_label(trial)} s{trial.seed}",
                )
            ax.set_title(f"{panel[0][0].model}-{panel[0][0].depth}-{width}")
            ax.set_xlabel("epoch")
        axes[0][0].set_ylabel("test top-1 (%)")
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.suptitle("Test top-1 during training")
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def diversity_figure(trials: pd.DataFrame, ensembles: pd.DataFrame, path: Path) -> plt.Figure:
    """Ratio-error between subnetworks (or ensemble members) against their mean individual top-1."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        multi = trials[(trials.state == "finished") & (trials.M > 1)] if "ratio_error" in trials else trials.iloc[:0]
        for method, rows in multi.groupby("method"):
            ax.scatter(
                100 * rows.heads_mean_top1,
                rows.ratio_error,
                label=f"{method} (heads)",
                color=color(method),
                marker="o",
            )
            for _, r in rows.iterrows():
                ax.annotate(
                    f"w={r.width}",
                    (100 * r.heads_mean_top1, r.ratio_error),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        if not ensembles.empty:
            for (method, k), rows in ensembles.groupby(["method", "members"]):
                ax.scatter(
                    100 * rows.heads_mean_top1,
                    rows.ratio_error,
                    label=f"{method} ensemble of {k} (members)",
                    color=color(method),
                    marker="s",
                    facecolors="none",
                )
        ax.set_xlabel("mean individual top-1 (%)")
        ax.set_ylabel("ratio-error (N01 + N10) / N00")
        ax.set_title("Diversity against individual accuracy, one point per trial (labels: width)")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def _network_title(summary: pd.DataFrame) -> str:
    first = summary.iloc[0]
    return (
        f"{first.dataset}, {first.model}-{first.depth}-w, {int(first.epochs)} epochs; "
        f"bars: 95% interval (over seeds; one seed: top-1 bootstrap over test images)"
    )
