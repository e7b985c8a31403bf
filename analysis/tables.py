"""Comparison tables: mean +- std over seeds per setting, and published vs reproduced."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cache import cached, memo
from analysis.ensembles import right_of, top1_bootstrap
from analysis.stats import BOOTSTRAP_DRAWS, bootstrap, iqm, probability_of_improvement, seeds_needed, t_halfwidth
from harness.core.config import is_setting_key
from harness.core.schema import LOGITS
from harness.metrics import METRICS as FINAL_METRICS
from harness.metrics.uncertainty import DETECTION_METRICS
from harness.trial.listing import presentation

SETTING = ["dataset", "model", "depth", "width", "method", "msda", "M", "b", "epochs", "members"]
PUBLISHED = Path(__file__).with_name("published.csv")


def varying_keys(rows: pd.DataFrame, config_keys: list[str]) -> list[str]:
    """Setting keys beyond SETTING (harness.core.config.is_setting_key) whose values differ between trials of one
    SETTING group (train_subset after an edit of the suite, a grid over lr): they split rows too, so that
    different recipes are never averaged together."""
    candidates = [k for k in config_keys if k in rows and k not in SETTING and is_setting_key(k)]
    if rows.empty or not candidates:
        return []
    spread = rows[SETTING + candidates].astype(str).groupby(SETTING, dropna=False).nunique()
    return [k for k in candidates if (spread[k] > 1).any()]


def metric_columns(table: str = "main") -> list[tuple[str, str, float, int]]:
    """(column, label, scale, decimals) of a report table: the registered metrics of that table (those of plugins
    too, harness.metrics.register_metric), then for the main table the costs."""
    tables = (table, "cost") if table == "main" else (table,)
    return [(k, m.label, m.scale, m.decimals) for t in tables for k, m in FINAL_METRICS.items() if m.table == t]


# a column of a registered metric measured elsewhere: under shift (harness.metrics.uncertainty.corruption_metrics), on
# the in-distribution test set beside OOD ones, or averaged over an OpenOOD group
_MEASURED_ON = re.compile(r"^(clean|corrupted|ub17|pooled|severity\d+|id|near|far)_")


def metric_bounds(column: str) -> tuple[float, float]:
    """The values a report column can take: a registered metric's declared bounds (under shift, on OOD sets, in an
    OpenOOD group too), a detection metric's; differences are unbounded; costs are non-negative."""
    if column in FINAL_METRICS:
        return FINAL_METRICS.get(column).bounds
    if column in DETECTION_METRICS:
        return DETECTION_METRICS[column].bounds
    measured = _MEASURED_ON.sub("", column, count=1)
    if measured != column:
        return metric_bounds(measured)
    if column.startswith(("rule_shift", "diff")):
        return (-np.inf, np.inf)
    return (0.0, np.inf)


def method_order(method: str) -> float:
    """A method's place in tables and legends: its declared order (harness.methods), unknown methods last."""
    return presentation(method)["order"]


def summarize(
    rows: pd.DataFrame, config_keys: list[str] = (), metrics: list[str] | None = None, *, rule: str | None
) -> pd.DataFrame:
    """One row per setting (method, width, ensemble size, ...): mean, std and the 95% interval's half-width
    (``_ci``) of every metric over seeds, and n, the number of seeds (or of ensembles) behind it. With n = 1
    the top-1's interval is the bootstrap one over test images (``top1_ci_kind``), heads combined by ``rule`` (None:
    rows without saved logits, tables of evaluation records: no bootstrap)."""
    rows = rows[rows.state == "finished"].copy()
    if "msda" not in rows:
        rows["msda"] = "none"
    present = [m for m in (metrics or [c[0] for c in metric_columns() + metric_columns("selective")]) if m in rows]
    extra = (["tuning"] if "tuning" in rows else []) + varying_keys(rows, list(config_keys))  # a study: tuned | recipe
    for k in extra:
        rows[k] = rows[k].astype(str)
    _bootstrap_single(rows, SETTING + extra, rule)
    grouped = rows.groupby(SETTING + extra, dropna=False)
    mean = grouped[present].mean()
    std = grouped[present].std(ddof=1)  # NaN for n = 1
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["n"] = grouped.size()
    for m in present:
        out[f"{m}_ci"] = [t_halfwidth(sd, n) for sd, n in zip(out[f"{m}_std"], out["n"])]
    out["top1_ci_kind"] = "t"
    if "top1_boot_ci" in rows:
        boot = grouped["top1_boot_ci"].first()
        single = out["n"] == 1
        out.loc[single, "top1_ci"] = boot[single]
        out.loc[single & boot.notna(), "top1_ci_kind"] = "bootstrap"
    for m in present:  # the interval's ends, inside the metric's range: a clipped interval is marked
        lo, hi = metric_bounds(m)
        low, high = out[f"{m}_mean"] - out[f"{m}_ci"], out[f"{m}_mean"] + out[f"{m}_ci"]
        out[f"{m}_lo"], out[f"{m}_hi"] = low.clip(lower=lo, upper=hi), high.clip(lower=lo, upper=hi)
        out[f"{m}_clipped"] = (low < lo) | (high > hi)
    out = (
        out.reset_index()
        .assign(_order=lambda f: f.method.map(method_order))
        .sort_values(["dataset", "model", "depth", "width", "members", "_order", "method"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    out.attrs["extra_keys"] = extra
    return out


def _bootstrap_single(rows: pd.DataFrame, keys: list[str], rule: str | None) -> None:
    """``top1_boot_ci`` filled in for the rows alone in their setting (one seed, or one ensemble of a size): their
    interval is the bootstrap one over test images; nothing is computed for settings with several runs."""
    if rule is None or "top1" not in rows or not ({"trial_dir", "member_dirs"} & set(rows)):
        return
    group = rows.groupby(keys, dropna=False).ngroup()
    alone = group.map(group.value_counts()) == 1
    if "top1_boot_ci" not in rows:
        rows["top1_boot_ci"] = float("nan")
    todo = alone & rows["top1_boot_ci"].isna()
    if not todo.any():
        return
    dirs = rows.get("member_dirs", pd.Series(None, index=rows.index, dtype=object))
    trial = rows.get("trial_dir", pd.Series(None, index=rows.index, dtype=object))
    rows.loc[todo, "top1_boot_ci"] = [
        top1_bootstrap(m if isinstance(m, list) else [t], rule=rule) for m, t in zip(dirs[todo], trial[todo])
    ]


def _cell(
    mean: float, half: float, scale: float, decimals: int, mark: str = "", lo: float | None = None,
    hi: float | None = None, clipped: bool = False,
) -> str:  # fmt: skip
    """'mean ± half-width of the 95% interval' (non-breaking, so a cell never wraps); mark: † = bootstrap. An
    interval that would leave the metric's range is shown by its clipped ends, 'mean [lo, hi]‡'."""
    if mean != mean:  # NaN
        return "-"
    text = f"{mean * scale:.{decimals}f}"
    if clipped and lo is not None:
        return text + f"\u00a0[{lo * scale:.{decimals}f},\u00a0{hi * scale:.{decimals}f}]‡{mark}"
    return text + (f"\u00a0±\u00a0{half * scale:.{decimals}f}{mark}" if half == half else "")


def cells(summary: pd.DataFrame, m: str, scale: float, decimals: int, marks=None) -> list[str]:
    """A column of ``_cell`` for metric ``m`` of a summary (its clipped ends where it has them)."""
    marks = [""] * len(summary) if marks is None else list(marks)
    lo = summary.get(f"{m}_lo", pd.Series([None] * len(summary), index=summary.index))
    hi = summary.get(f"{m}_hi", lo)
    clipped = summary.get(f"{m}_clipped", pd.Series([False] * len(summary), index=summary.index))
    return [
        _cell(a, h, scale, decimals, k, lo_, hi_, bool(c))
        for a, h, k, lo_, hi_, c in zip(summary[f"{m}_mean"], summary[f"{m}_ci"], marks, lo, hi, clipped)
    ]


CAPTION = (
    "Mean over seeds ± the half-width of its 95% t-interval (n = number of seeds, or of distinct ensembles); "
    "with n = 1, top-1's ± is the 95% bootstrap interval over test images (marked †: 2,000 resamples of the test "
    "images, the percentile interval's half-width), the other metrics have none. "
    "An interval that would leave the metric's range (few seeds: at n = 2 the t-interval is 12.7 standard errors "
    "wide) is shown by its ends clipped to the range, [lo, hi]‡."
)


def label(row) -> str:
    name = presentation(row["method"])["label"] + (
        f" + {row['msda']}" if row.get("msda", "none") not in ("none", None) else ""
    )
    if isinstance(row.get("tuning"), str):  # a study's rows: the tuned configuration or the untuned recipe
        name += f" ({row['tuning']})"
    return name + (f" (ensemble of {int(row['members'])})" if row["members"] > 1 else "")


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The human-readable table: a row per method (and ensemble size), cells 'mean ± std'."""
    out = pd.DataFrame(
        {
            "network": [f"{r.model}-{r.depth}-{r.width}" for r in summary.itertuples()],
            "method": [label(r) for _, r in summary.iterrows()],
            "M": summary["M"].astype(int),
            "b": summary["b"].astype(int),
            "epochs": summary["epochs"].astype(int),
            **{k: summary[k] for k in summary.attrs.get("extra_keys", [])},
            "n": summary["n"].astype(int),
        }
    )
    for m, name, scale, decimals in metric_columns():
        if f"{m}_mean" in summary:
            marks = summary["top1_ci_kind"].map({"bootstrap": "†"}).fillna("") if m == "top1" else None
            out[name] = cells(summary, m, scale, decimals, marks)
    return out


def published_vs_reproduced(summary: pd.DataFrame) -> pd.DataFrame:
    """Our top-1 beside the published one for every setting the sweep shares with the paper."""
    published = pd.read_csv(PUBLISHED, dtype={"b": "Int64"})
    ours = summary[summary.members == 1]
    keys = ["dataset", "model", "depth", "width", "method", "msda", "M"]
    joined = ours.merge(published, on=keys, how="inner", suffixes=("", "_published"))
    if joined.empty:
        return pd.DataFrame(
            columns=[
                "dataset",
                "network",
                "method",
                "M",
                "b",
                "epochs",
                "published top-1 %",
                "ours top-1 %",
                "n",
                "difference",
                "published NLL / ECE",
                "ours NLL / ECE",
                "source",
                "verdict",
            ]
        )
    mid = (joined.top1_low + joined.top1_high) / 2
    return pd.DataFrame(
        {
            "dataset": joined.dataset,
            "network": [f"{r.model}-{r.depth}-{r.width}" for r in joined.itertuples()],
            "method": [label(r) for _, r in joined.iterrows()],
            "M": joined.M.astype(int),
            "b": joined.b.astype(int),
            "epochs": joined.epochs.astype(int),
            "published top-1 %": [
                f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(joined.top1_low, joined.top1_high)
            ],
            "ours top-1 %": cells(
                joined, "top1", 100, 2, ["†" if k == "bootstrap" else "" for k in joined.top1_ci_kind]
            ),
            "n": joined.n.astype(int),
            "difference": [f"{100 * a - p:+.2f}" for a, p in zip(joined.top1_mean, mid)],
            "published NLL / ECE": [
                " / ".join("-" if v != v else f"{v:g}" for v in (n, e)) for n, e in zip(joined.nll, joined.ece)
            ],
            "ours NLL / ECE": [f"{n:.3f} / {e:.4f}" for n, e in zip(joined.nll_mean, joined.ece_mean)],
            "source": joined.source,
            "verdict": [
                _verdict(a, h, lo / 100, hi / 100)
                for a, h, lo, hi in zip(joined.top1_mean, joined.top1_ci, joined.top1_low, joined.top1_high)
            ],
        }
    )


def _verdict(mean: float, half: float, low: float, high: float) -> str:
    """'within' when our 95% interval meets the published value (or range), 'outside' when not."""
    if half != half:
        return "no interval"
    return "within" if mean - half <= high and mean + half >= low else "outside"


__all__ = ["summarize", "display_table", "published_vs_reproduced", "label"]


# --- paired comparisons and cost
PAIRED_BASELINES = ("vanilla", "cutmix")  # what Cut-MixMo is compared with, trial by trial


def _paired_bootstrap(ours: list[str], theirs: list[str], draws: int, rule: str) -> tuple[float, float, float]:
    """(difference of top-1, half-width of its 95% paired bootstrap interval, p-value) over the same test images,
    kept in the report's cache by the logits files' identity."""

    def compute():
        a, b = right_of(ours, rule=rule), right_of(theirs, rule=rule)
        return (float(a.mean() - b.mean()), *bootstrap(a, b, draws))

    files = [Path(d) / LOGITS for d in (*ours, *theirs)]
    return cached(f"paired{draws}:{len(ours)}", files, compute)


def paired_differences(
    trials: pd.DataFrame,
    ensembles: pd.DataFrame | None = None,
    method: str = "cut_mixmo",
    draws: int = BOOTSTRAP_DRAWS,
    by: list[str] = (),
    *,
    rule: str,
) -> pd.DataFrame:
    """Top-1 of ``method`` minus each baseline's at the same width (finished trials; heads combined by ``rule``).
    Single baselines are paired by seed: with k >= 2 shared seeds, the mean difference, its 95% t-interval and the
    paired t-test's two-sided p-value; with one, the difference over the same test images with a 95% paired
    bootstrap interval and p-value. A deep ensemble of 2 (the same parameter count as M = 2) is compared with
    ``method``'s lowest seed over the same test images, by the paired bootstrap. ``by``: keys that split settings
    beyond the network (a study's tuned | recipe, a grid over lr): runs are paired only within one value of them."""
    from scipy import stats

    done = trials[trials.state == "finished"]
    dirs = dict(zip(done.trial_id, done.trial_dir))
    rows = []
    by = [k for k in by if k in done]
    for key, group in done.groupby(["dataset", "model", "depth", "width", *by], dropna=False):
        dataset, model, depth, width = key[:4]
        ours = group[group.method == method].set_index("seed")
        if ours.empty:
            continue
        split = split_text(by, key[4:])
        common = {
            "dataset": dataset,
            "network": f"{model}-{depth}-{width}" + (f" ({split})" if split else ""),
            "width": width,
        }
        for baseline in PAIRED_BASELINES:
            base = group[(group.method == baseline) & (group.msda.fillna("none") == "none")].set_index("seed")
            seeds = sorted(set(ours.index) & set(base.index))
            if not seeds:
                continue
            diffs = np.array([ours.top1[s] - base.top1[s] for s in seeds], dtype=float)
            if len(seeds) >= 2:
                half, p = t_halfwidth(diffs.std(ddof=1), len(seeds)), float(stats.ttest_1samp(diffs, 0.0).pvalue)
                kind = "paired t over seeds"
            else:
                _, half, p = _paired_bootstrap([ours.trial_dir[seeds[0]]], [base.trial_dir[seeds[0]]], draws, rule)
                kind = "paired bootstrap over test images"
            rows.append(
                {
                    **common,
                    "comparison": f"{method} - {baseline}",
                    "seeds": len(seeds),
                    "difference": diffs.mean(),
                    "ci": half,
                    "p": p,
                    "test": kind,
                }
            )
        pairs = (
            ensembles[(ensembles.members == 2) & (ensembles.width == width)]
            if ensembles is not None and not ensembles.empty
            else []
        )
        for k, v in zip(by, key[4:]):  # an ensemble of the same split (a study's tuned | recipe)
            pairs = pairs[pairs[k] == v] if len(pairs) and k in pairs else pairs
        for _, ens in pairs.iterrows() if len(pairs) else []:
            if ens.method not in PAIRED_BASELINES or ens.get("dataset") != dataset or ens.get("depth") != depth:
                continue
            seed = min(ours.index)
            members = [dirs[t] for t in ens.member_trials]
            difference, half, p = _paired_bootstrap([ours.trial_dir[seed]], members, draws, rule)
            rows.append(
                {
                    **common,
                    "comparison": f"{method} - {ens.method} ensemble of 2",
                    "seeds": 1,
                    "difference": difference,
                    "ci": half,
                    "p": p,
                    "test": f"paired bootstrap over test images (seed {seed} vs the ensemble)",
                }
            )
    return pd.DataFrame(rows)


def difference_bounds(metric: str) -> tuple[float, float]:
    """The values a difference of ``metric`` between two runs can take: its range's width either way."""
    lo, hi = metric_bounds(metric)
    return lo - hi, hi - lo


def difference_cell(difference: float, half: float, metric: str = "top1") -> str:
    """``_cell`` of a difference of ``metric`` (its declared scale and decimals), its interval clipped to
    ``difference_bounds`` (and marked ‡ when it is)."""
    declared = FINAL_METRICS.get(metric)
    lo, hi = difference_bounds(metric)
    low, high = difference - half, difference + half
    clipped = bool(low < lo or high > hi)
    ends = {"lo": max(low, lo), "hi": min(high, hi), "clipped": clipped}
    return _cell(difference, half, declared.scale, declared.decimals, **ends)


def p_value_text(p: float, test: str, draws: int = BOOTSTRAP_DRAWS) -> str:
    """A p-value as text: a bootstrap's p of 0 is below its resolution, '< 1/draws', never '0'."""
    if p == 0 and "bootstrap" in test:
        return f"< {1 / draws:.2g} (1/{draws:,})"
    return f"{p:.3g}"


def split_text(keys, values) -> str:
    """What splits a network's rows, for a table cell: "tuned", "lr 0.1"."""
    return ", ".join(str(v) if k == "tuning" else f"{k} {v}" for k, v in zip(keys, values))


def paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    if paired.empty:
        return paired
    return pd.DataFrame(
        {
            "network": paired.network,
            "comparison": paired.comparison,
            "seeds": paired.seeds,
            "top-1 difference (points)": [difference_cell(d, h) for d, h in zip(paired.difference, paired.ci)],
            "p": [p_value_text(p, test) for p, test in zip(paired.p, paired.test)],
            "test": paired.test,
        }
    )


def pareto_front(cost: list[float], score: list[float]) -> list[bool]:
    """Which points no other point beats: none has lower-or-equal cost and higher-or-equal score with one
    of the two strictly better."""
    return [
        not any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for c2, s2 in zip(cost, score))
        for c, s in zip(cost, score)
    ]


def improvement_table(
    finished: pd.DataFrame, ensembles: pd.DataFrame, metric: str = "top1", by: list[str] = ()
) -> pd.DataFrame:
    """Each method against the vanilla network and against a deep ensemble of as many vanilla networks as it has
    members (the same training budget in members), at the same dataset, network and width: the runs' IQMs, the
    probability of improvement with its stratified bootstrap interval, and the seeds per method a test would need
    to confirm the observed difference at the observed spread."""
    higher = FINAL_METRICS.get(metric).direction == "higher" if metric in FINAL_METRICS else True
    network = ["dataset", "model", "depth", "width"]
    keys = network + [k for k in by if k in finished]  # runs compared only within one value of ``by``
    rows = []
    single = finished[finished.get("msda", pd.Series("none", index=finished.index)).fillna("none") == "none"]
    for group_key, group in finished.groupby(keys, dropna=False):
        vanilla = single[(single.method == "vanilla")]
        vanilla = vanilla[(vanilla[keys] == pd.Series(dict(zip(keys, group_key)))).all(axis=1)]
        for method, runs in group.groupby("method"):
            if method == "vanilla":
                continue
            M = int(runs.M.iloc[0])
            baselines = [("vanilla", vanilla[metric].dropna().to_numpy())]
            if not ensembles.empty and "members" in ensembles:
                ens = ensembles[(ensembles.method == "vanilla") & (ensembles.members == M)]
                same = [k for k in keys if k in ens]  # the network, and the split where the ensembles carry it
                ens = ens[(ens[same] == pd.Series(dict(zip(keys, group_key)))[same]).all(axis=1)]
                baselines.append((f"vanilla ensemble of {M}", ens[metric].dropna().to_numpy()))
            x = runs[metric].dropna().to_numpy()
            for name, y in baselines:
                if len(x) == 0 or len(y) == 0:
                    continue
                p, lo, hi = memo(
                    "improvement", [x.tolist(), y.tolist(), higher], lambda: probability_of_improvement(x, y, higher)
                )
                improvement = (
                    f"{p:.2f} [{lo:.2f}, {hi:.2f}]"
                    if len(x) > 1 or len(y) > 1
                    else f"{p:.2f} (one run a side: no interval, decides nothing)"
                )
                spread = np.sqrt(
                    (np.var(x, ddof=1) if len(x) > 1 else 0) / 2 + (np.var(y, ddof=1) if len(y) > 1 else 0) / 2
                )
                split = split_text(keys[4:], group_key[4:])
                rows.append({
                    "network": f"{group_key[1]}-{group_key[2]}-{group_key[3]}" + (f" ({split})" if split else ""),
                    "method": presentation(method)["label"],
                    "baseline": name,
                    "n": f"{len(x)} vs {len(y)}",
                    f"IQM {metric}": round(100 * iqm(x), 2) if metric == "top1" else round(iqm(x), 4),
                    f"baseline IQM {metric}": round(100 * iqm(y), 2) if metric == "top1" else round(iqm(y), 4),
                    "P(improvement) [95% interval]": improvement,
                    "seeds needed": seeds_needed(np.mean(x) - np.mean(y), spread),
                })  # fmt: skip
    return pd.DataFrame(rows)
