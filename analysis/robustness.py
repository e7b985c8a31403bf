"""The report's robustness, OOD and selective-prediction sections, from the trial folders' eval/<set>/
records and saved logits (`harness evaluate`). A deep ensemble's are composed from its members' saved
logits (heads pooled), as its clean metrics are."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from analysis import cache
from analysis.ensembles import recalibrated
from analysis.figures import STYLE, color, figure_label, plain
from analysis.output import figure_html, fragment, save_figure, table_html
from analysis.tables import SETTING, cells, label, method_order, metric_columns, summarize
from harness.core import schema
from harness.core.config import RECORDED_BEFORE_THE_RULE
from harness.evaluation.kinds import kind_of, record_problem
from harness.evaluation.kinds.corruption import ub17_applies
from harness.metrics import METRICS, correct, ensemble_logits, key_metrics, risk_coverage
from harness.metrics.uncertainty import DETECTION_METRICS, OOD_SCORES, confidence_scores, roc_curve
from harness.store.trial_folder import TrialFolder


def _shift_columns(prefixes: list[tuple[str, str]]) -> list[tuple[str, str, float, int]]:
    """(column, label, scale, decimals) of the metrics shown under shift (harness.metrics.key_metrics), one
    per (prefix, name) pair: clean_top1 "clean top-1 %", corrupted_top1 ..."""
    return [
        (f"{prefix}_{m}", f"{name} {METRICS.get(m).label}", METRICS.get(m).scale, METRICS.get(m).decimals)
        for m in key_metrics()
        for prefix, name in prefixes
    ]


def corrupted_columns() -> list[tuple[str, str, float, int]]:
    return _shift_columns([("clean", "clean"), ("corrupted", "corrupted")])


def convention_columns() -> list[tuple[str, str, float, int]]:
    """The three corruption averages in use (harness.metrics.uncertainty.CONVENTIONS), from the same saved logits."""
    return _shift_columns([("corrupted", "15-mean"), ("ub17", "UB-17"), ("pooled", "pooled")])


# the harness's OOD table: ODIN's FPR convention and AUPR as average precision (OpenOOD's variants: its own table)
SPREAD = (
    "Mean over seeds ± the half-width of its 95% t-interval; an interval that would leave the metric's range is "
    "shown by its ends clipped to the range, [lo, hi]‡; one seed: no interval."
)
DETECTION = [
    (m, d.label, 100, 1) for m, d in DETECTION_METRICS.items() if m != "fpr95_ood" and not m.endswith("_trapezoid")
]


def _set_label(record: dict) -> str:
    return record["set"].split("=")[0] + (" (generated stand-in)" if record.get("generated") else "")


def _ensemble_records(member_dirs: list[Path], *, rule: str) -> dict[str, dict]:
    """The records of the sets every member has, recomputed on the members' pooled heads combined by ``rule``."""
    folders = [TrialFolder(d) for d in member_dirs]
    shared = set.intersection(*(set(f.evaluations(record_problem)) for f in folders))
    if not shared:  # nothing to rescore: no logits read, no temperature fitted
        return {}
    clean = {
        schema.TEST_LOGITS: np.concatenate([f.logits()[schema.TEST_LOGITS] for f in folders], 1),
        schema.TEST_LABELS: folders[0].logits()[schema.TEST_LABELS],
    }
    temperature = recalibrated(clean, rule=rule)[2]["temperature"]  # the ensemble's own, as its clean row uses
    clean_heads = torch.from_numpy(clean[schema.TEST_LOGITS]).float()
    out = {}
    for set_id in sorted(shared):
        first = folders[0].evaluation(set_id, record_problem)
        record = kind_of(first).rescore(first, folders, clean_heads, temperature, rule)
        if record is not None:
            out[set_id] = record
    return out


def _trial_records(row, *, rule: str) -> dict[str, dict]:
    """A trial's evaluation records, rescored from their saved logits where they were computed under another
    aggregation rule than ``rule``, the report's (a network of several heads)."""
    folder = TrialFolder(row["trial_dir"])
    records = folder.evaluations(record_problem)
    if int(row.get("M", 1)) < 2:
        return records
    out = {}
    for set_id, record in records.items():
        if record.get("ensemble_average", RECORDED_BEFORE_THE_RULE) != rule:
            heads = torch.from_numpy(folder.logits()[schema.TEST_LOGITS]).float()
            rescored = kind_of(record).rescore(record, [folder], heads, row.get("temperature"), rule)
            record = rescored if rescored is not None else record  # a kind without one (test) keeps its record
        out[set_id] = record
    return out


def evaluation_frames(
    finished: pd.DataFrame, ensembles: pd.DataFrame, *, rule: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(a row per trial or ensemble and corruption set, a row per trial or ensemble, OOD set and score), records
    read under the report's ``rule``."""
    corrupted, detection = [], []
    evaluated = {t for t, d in zip(finished.trial_id, finished.trial_dir) if (Path(d) / schema.EVAL_DIR).is_dir()}
    sources = [(r, _trial_records(r, rule=rule)) for _, r in finished[finished.trial_id.isin(evaluated)].iterrows()]
    if not ensembles.empty and evaluated:
        root = Path(finished.trial_dir.iloc[0]).parent
        shared = ensembles[[set(m) <= evaluated for m in ensembles.member_trials]]
        sources += [
            (r, _ensemble_records([root / t for t in r["member_trials"]], rule=rule)) for _, r in shared.iterrows()
        ]
    for row, records in sources:
        setting = {k: row.get(k) for k in [*SETTING, "seed", "trial_id"] if k in row}
        for record in records.values():
            if record["kind"] == "corruption":
                s = record["summary"]
                corrupted.append(
                    {
                        **setting,
                        "set": _set_label(record),
                        **{f"clean_{m}": row.get(m) for m in key_metrics()},
                        **{
                            k: v
                            for k, v in s.items()
                            if k.startswith(("corrupted_", "pooled_"))
                            or (k.startswith("ub17_") and ub17_applies(record["set"].split("=")[0]))
                        },  # a record written before UB-17 was CIFAR-100-C's alone may hold it for CIFAR-10-C
                        "corruptions": s["corruptions_in_mean"],
                        **{
                            f"severity{sev}_{m}": v
                            for sev, cells in record["by_severity"].items()
                            for m, v in cells.items()
                        },
                    }
                )
            elif record["kind"] == "ood":
                for score, metrics in record["scores"].items():
                    detection.append(
                        {
                            **setting,
                            "set": _set_label(record),
                            "set_id": record["id"],
                            "score": score,
                            "in_images": record["in_images"],
                            "out_images": record["out_images"],
                            **metrics,
                        }
                    )
    return pd.DataFrame(corrupted), pd.DataFrame(detection)


def _by(frame: pd.DataFrame, keys: list[str], specs: list[tuple]) -> pd.DataFrame:
    """Mean ± 95% interval over seeds per setting, within each value of ``keys`` (set, score)."""
    parts = []
    for values, group in frame.groupby(keys, sort=False):
        summary = summarize(group.assign(state="finished"), metrics=[m for m, *_ in specs], rule=None)  # no logits
        for k, v in zip(keys, values if isinstance(values, tuple) else (values,)):
            summary[k] = v
        parts.append(summary)
    return pd.concat(parts, ignore_index=True)


def _table(summary: pd.DataFrame, extra: list[str], specs: list[tuple]) -> pd.DataFrame:
    """A row per setting: network, method, the ``extra`` columns, n, then 'mean ± half-width' per metric."""
    out = pd.DataFrame(
        {
            "network": [f"{r.model}-{r.depth}-{r.width}" for r in summary.itertuples()],
            "method": [label(r) for _, r in summary.iterrows()],
            **{k: summary[k] for k in extra},
            "n": summary["n"].astype(int),
        }
    )
    for m, name, scale, decimals in specs:
        out[name] = cells(summary, m, scale, decimals)
    return out


def robustness_table(corrupted: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in corrupted_columns() if c[0] in corrupted]
    return _table(_by(corrupted, ["set"], columns), ["set"], columns)


def conventions_table(corrupted: pd.DataFrame) -> pd.DataFrame:
    present = [c for c in convention_columns() if c[0] in corrupted]
    return _table(_by(corrupted, ["set"], present), ["set"], present)


OPENOOD_COLUMNS = [
    (m, DETECTION_METRICS[m].label) for m in ("auroc", "aupr_in_trapezoid", "aupr_out_trapezoid", "fpr95_ood", "fpr95")
]  # AUPR as OpenOOD's code computes it (the trapezoidal area), not average precision


def openood_table(detection: pd.DataFrame, finished: pd.DataFrame, score: str = "msp") -> pd.DataFrame:
    """OpenOOD v1.5's table: ID top-1 and, per group (near, far), each metric averaged over the group's sets that
    the trial has, then mean ± 95% interval over seeds. Rows only for trials of a dataset with the protocol."""
    from harness.data.eval_sets import openood_group

    rows = detection[detection.score == score].copy()
    if rows.empty:
        return pd.DataFrame()
    rows["group"] = [openood_group(s.split(":", 1)[-1].split(" ")[0], d) for s, d in zip(rows.set, rows.dataset)]
    rows = rows[rows.group.notna()]
    if rows.empty:
        return pd.DataFrame()
    keys = [k for k in [*SETTING, "seed", "trial_id"] if k in rows]
    metrics = [m for m, _ in OPENOOD_COLUMNS if m in rows]
    per_run = rows.groupby([*keys, "group"], dropna=False)[metrics].mean().reset_index()
    sets = rows.groupby("group").set.agg(lambda s: ", ".join(sorted(set(s))))
    wide = per_run.pivot_table(index=keys, columns="group", values=metrics).reset_index()
    wide.columns = [f"{g}_{m}" if g else m for m, g in wide.columns]
    top1 = finished.set_index("trial_id").top1 if "trial_id" in finished else None
    if top1 is not None and "trial_id" in wide:
        wide["id_top1"] = wide.trial_id.map(top1)
    specs = [("id_top1", "ID top-1 %", 100, 2)] + [
        (f"{g}_{m}", f"{g} {name}", 100, 1) for g in ("near", "far") for m, name in OPENOOD_COLUMNS
        if f"{g}_{m}" in wide
    ]  # fmt: skip
    summary = summarize(wide.assign(state="finished"), metrics=[m for m, *_ in specs], rule=None)  # no logits
    table = _table(summary, [], specs)
    table.attrs["sets"] = dict(sets)
    return table


def detection_table(detection: pd.DataFrame) -> pd.DataFrame:
    summary = _by(detection, ["set", "score"], DETECTION)
    summary["score"] = summary.score.map(lambda score: OOD_SCORES[score][0])
    return _table(summary, ["set", "score"], DETECTION)


def selective_table(summary: pd.DataFrame) -> pd.DataFrame:
    return _table(summary, [], metric_columns("selective"))


# --- figures: each method at its widest width, its lowest seed (curves) or the mean over seeds (severity)
def _widest(frame: pd.DataFrame) -> pd.DataFrame:
    keep = frame[frame.members == 1] if "members" in frame else frame
    keep = keep.assign(_o=keep.method.map(method_order))
    return keep[keep.width == keep.groupby("method").width.transform("max")].sort_values(["_o", "seed"])


def severity_figure(corrupted: pd.DataFrame, path: Path) -> plt.Figure:
    """Top-1 and ECE against severity (0 = clean), per method at its widest width, mean over seeds."""
    sets = list(dict.fromkeys(corrupted.set))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(sets), 2, figsize=(10, 3.6 * len(sets)), squeeze=False)
        for (ax_acc, ax_ece), name in zip(axes, sets):
            rows = _widest(corrupted[corrupted.set == name])
            for method, group in rows.groupby("method", sort=False):
                levels = [0, *range(1, 6)]
                top1 = [group.clean_top1.mean(), *(group[f"severity{s}_top1"].mean() for s in range(1, 6))]
                ece_ = [group.clean_ece.mean(), *(group[f"severity{s}_ece"].mean() for s in range(1, 6))]
                kw = dict(
                    color=color(method), marker="o", label=f"{figure_label(group.iloc[0])} w={group.width.iloc[0]}"
                )
                ax_acc.plot(levels, 100 * np.array(top1), **kw)
                ax_ece.plot(levels, 100 * np.array(ece_), **kw)
            for ax, what in ((ax_acc, "top-1 %"), (ax_ece, "ECE %")):
                ax.set_xlabel("severity (0 = clean test set)")
                ax.set_ylabel(what)
                ax.set_title(plain(f"{name}: {what}"))
            ax_acc.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def roc_figure(finished: pd.DataFrame, detection: pd.DataFrame, rule: str, path: Path) -> plt.Figure:
    """ROC curves per OOD set (in-distribution test images = positives): the maximum softmax probability of the
    heads combined by ``rule``, and the heads' mutual information where there are several heads."""
    sets = list(dict.fromkeys(detection.set))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 4.2), squeeze=False)
        for ax, name in zip(axes[0], sets):
            done = set()
            for _, row in _widest(detection[(detection.set == name) & (detection.score == "msp")]).iterrows():
                if row.method in done:
                    continue
                done.add(row.method)
                folder = TrialFolder(finished.set_index("trial_id").loc[row.trial_id, "trial_dir"])
                ins = confidence_scores(torch.from_numpy(folder.logits()[schema.TEST_LOGITS]).float(), rule)
                outs = confidence_scores(
                    torch.from_numpy(folder.eval_part(row.set_id, schema.OOD_PART)[schema.PART_LOGITS]).float(), rule
                )
                is_in = np.r_[np.ones(len(ins["msp"]), bool), np.zeros(len(outs["msp"]), bool)]
                mine = detection[
                    (detection.trial_id == row.trial_id) & (detection.set == name) & (detection.members == 1)
                ].set_index("score")
                for score, style in (("msp", "-"), ("mutual_information", "--")):  # MI needs M >= 2
                    if score not in ins:
                        continue
                    fpr, tpr = roc_curve(np.r_[ins[score].numpy(), outs[score].numpy()], is_in)
                    what = "" if score == "msp" else ", mutual inf."
                    ax.plot(
                        fpr,
                        tpr,
                        ls=style,
                        color=color(row.method),
                        label=f"{figure_label(row)}{what} ({100 * mine.auroc[score]:.1f})",
                    )
            ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8)
            ax.set_xlabel("false positive rate (OOD kept)")
            ax.set_ylabel("true positive rate (test images kept)")
            ax.set_title(plain(f"{name} vs the test set"))
            ax.legend(fontsize=7, title="AUROC %", title_fontsize=7)
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def risk_coverage_figure(finished: pd.DataFrame, rule: str, path: Path) -> plt.Figure:
    """Risk (error rate of the kept images) against coverage on the clean test set, heads combined by ``rule``."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        done = set()
        for _, row in _widest(finished).iterrows():
            if row.method in done:
                continue
            done.add(row.method)
            saved = TrialFolder(row.trial_dir).logits()
            ens = ensemble_logits(torch.from_numpy(saved[schema.TEST_LOGITS]).float(), rule)
            conf = ens.softmax(-1).max(-1).values
            coverage, risk = risk_coverage(
                conf.numpy(), correct(ens, torch.from_numpy(saved[schema.TEST_LABELS])).numpy()
            )
            ax.plot(coverage, 100 * risk, color=color(row.method), label=f"{figure_label(row)} ({row.aurc:.3f})")
        ax.set_xlabel("coverage (share of test images kept, most confident first)")
        ax.set_ylabel("risk: error % of the kept images")
        ax.legend(fontsize=7, title="AURC", title_fontsize=7)
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def sections(
    finished: pd.DataFrame, ensembles: pd.DataFrame, summary: pd.DataFrame, out: Path, write_table, *, rule: str
):
    """The report's robustness, OOD and selective-prediction sections (HTML), their tables and figures written
    under ``out``, logits read under ``rule``; ``write_table(table, stem, caption)`` is the report's own (it records
    the files)."""
    corrupted, detection = evaluation_frames(finished, ensembles, rule=rule)
    # (heading, table title, table, stem, caption, figure stem, (draw(*frames, path=), *frames), figure caption)
    parts = []
    if not corrupted.empty:
        generated = corrupted.set.str.contains("generated").any()
        parts.append((
            "Robustness to corruptions", "Clean vs corrupted", robustness_table(corrupted), "robustness",
            "Clean (the trial's own test set) against corrupted: the corrupted columns average the benchmark's 15 "
            "corruptions present in the set (extra ones left out) over severities 1-5. " + SPREAD
            + " cal.: the logits divided by the temperature fitted on the clean test set (metrics.json's), "
            "unchanged under shift."
            + (" Sets marked generated are `harness data corrupt` stand-ins: not comparable with published "
               "CIFAR-C numbers." if generated else ""),
            "severity", (severity_figure, corrupted),
            "Top-1 and ECE against corruption severity (0 = the clean test set), each method at its widest width, "
            "mean over seeds.",
        ))  # fmt: skip
    if not corrupted.empty:
        from harness.metrics.uncertainty import CONVENTIONS

        parts.append((
            "Corruption conventions", "Three corruption averages", conventions_table(corrupted),
            "corruption_conventions",
            "The same saved logits under the three conventions in use: 15-mean = " + CONVENTIONS["corrupted"]
            + " (the headline above); UB-17 = " + CONVENTIONS["ub17"] + " (the 15 without motion blur and snow, "
            "plus speckle noise, gaussian blur, spatter, saturate: comparable with uncertainty-baselines' cNLL / cA "
            "/ cCE); pooled = " + CONVENTIONS["pooled"] + " (MixMo's protocol; 19 files in the official archives). "
            "A set without the extra corruptions has no UB-17 column and pools the ones it has.",
            None, None, None,
        ))  # fmt: skip
    if not detection.empty:
        parts.append((
            "Out-of-distribution detection", "OOD detection", detection_table(detection), "ood",
            "Out-of-distribution detection: the trial's in-distribution test images (positives) against the OOD "
            "set, per score (higher = more in-distribution); FPR@95%TPR = share of OOD images kept when 95% of test "
            "images are. Mutual information and head disagreement need M >= 2 heads (or a deep ensemble). " + SPREAD,
            "roc", (roc_figure, finished, detection, rule),
            "ROC curves with the maximum softmax probability (solid; dashed: the heads' mutual information, "
            "M >= 2), each method at its widest width (lowest seed); AUROC in the legend.",
        ))  # fmt: skip
    openood = openood_table(detection, finished) if not detection.empty else pd.DataFrame()
    if not openood.empty:
        sets = "; ".join(f"{g}: {s}" for g, s in openood.attrs["sets"].items())
        parts.append((
            "OpenOOD protocol", "Near- and far-OOD (OpenOOD v1.5)", openood, "openood",
            "OpenOOD v1.5's near/far table, maximum softmax probability: each metric averaged over the group's sets "
            f"present ({sets}), with the in-distribution top-1. " + SPREAD + " FPR@95 (OOD +), "
            "OpenOOD's convention, takes OOD images as the positive class (the share of test images flagged when 95% "
            "of OOD ones are); FPR@95 (ID +), the ODIN convention of the table above, the reverse. AUPR is OpenOOD's: "
            "the trapezoidal area under the precision-recall curve (the table above gives average precision, "
            "scikit-learn's; they differ where scores tie or saturate). Tiny ImageNet is "
            "its test (val) split here, not OpenOOD's de-duplicated subset.",
            None, None, None,
        ))  # fmt: skip
    if "aurc_mean" in summary:
        parts.append((
            "Selective prediction", "Selective prediction on the clean test set", selective_table(summary),
            "selective",
            "Selective prediction on the clean test set: AURC = mean error rate of the kept images over every "
            "coverage (lower is better); top-1 on the 90% / 95% most confident images. " + SPREAD,
            "risk_coverage", (risk_coverage_figure, finished, rule),
            "Risk-coverage curves on the clean test set, each method at its widest width (lowest seed).",
        ))  # fmt: skip
    html_parts = []
    for heading, title, table, stem, caption, figure, draw, figure_caption in parts:
        write_table(table, out / stem, caption)
        shown = fragment("")
        if figure is not None and cache.figure(out / "figures" / figure, *draw).exists():
            shown = figure_html(figure, figure_caption)
        html_parts.append(fragment("<h2>{}</h2>{}{}", heading, shown, table_html(title, table, caption, stem, 3)))
    return html_parts
