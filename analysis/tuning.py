"""The report's tuning section (a suite's `tune:`, planning.tuning): who wins, at which budget. Every configuration
tried, its validation score and whether it was selected (tuning.csv); the selected configuration beside the
recipe's; the expected best validation score against the number of configurations tried, per method, with its
bootstrap band; the ranking at each budget; and, when the suite trains the untuned recipe too, tuned minus recipe
on test at the same seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.figures import STYLE, color, plain
from analysis.output import figure_html, fragment, save_figure, table_html
from analysis.tables import difference_cell, t_halfwidth
from harness.metrics import METRICS, headline_metrics
from harness.planning import tuning


def budgets(total: int) -> list[int]:
    """1, 2, 4, ... up to ``total`` (and ``total`` itself)."""
    out = [2**k for k in range(total.bit_length()) if 2**k <= total]
    return out + ([total] if out[-1] != total else [])


def configurations(resolved: tuning.Resolved) -> pd.DataFrame:
    """A row per configuration tried: its setting, its searched values, the validation score, state, selected."""
    study, rows = resolved.study, []
    for setting, trials in study.search.items():
        selection = resolved.selections[setting]
        for i, (trial, values) in enumerate(zip(trials, study.drawn[setting])):
            rows.append({
                "setting": setting,
                "method": study.points[setting].get("method", trial.method),
                "configuration": i + 1,
                **values,
                f"validation {study.tune.select}": selection.scores[i],
                "state": selection.states[i],
                "epochs trained": len(tuning.rung_scores(trial.trial_dir)),
                "selected": selection.chosen == i,
                "trial_id": trial.trial_id,
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    searched = sorted({k for values in study.drawn.values() for k in values[0]})
    first = ["setting", "method", "configuration", *searched]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    return frame.fillna({k: "-" for k in searched})


def statement(resolved: tuning.Resolved, val_size: int) -> str:
    """The study in one sentence: which split selected, how many configurations each method got, which search."""
    tune = resolved.study.tune
    keys = sorted({k for values in resolved.study.drawn.values() for k in values[0]})
    direction = "higher" if METRICS.get(tune.select).direction == "higher" else "lower"
    final = "the same training split" if tune.retrain == "train" else "the training and validation images together"
    how = (
        f"drawn at random (seed {tune.seed}; a shared key's draws are the same for every method)"
        if tune.search == "random"
        else f"proposed by Bayesian search (Optuna's TPE through Ray Tune, seed {tune.seed}, {tune.parallel} asked "
        "at a time, each method its own search)"
    )
    stopping = (
        f" ASHA stopped a configuration at epochs {', '.join(map(str, tuning.rungs(tune, max(_epochs(resolved)))))} "
        f"unless its validation {tuning.rung_metric(tune.select)[4:]} was in its method's best "
        f"1/{tune.reduction_factor}; a stopped configuration counts as tried and is never selected."
        if tune.scheduler == "asha"
        else ""
    )
    return (
        f"Every method got the same budget: {tune.trials} configurations of {', '.join(keys)}, {how}, each trained "
        f"once.{stopping} Each method's "
        f"configuration was selected by {tune.select} ({direction} is better) on the validation split ({val_size} "
        f"training images held out, never trained on), without reading any test image; it was then trained with "
        f"seeds {tune.final_seeds} on {final} and is reported on test below."
    )


def selected_table(resolved: tuning.Resolved, recipe: dict) -> pd.DataFrame:
    """Per setting: each searched key at the recipe's value and the selected one, and the selected validation score."""
    rows = []
    searched = sorted({k for values in resolved.study.drawn.values() for k in values[0]})
    for setting, selection in resolved.selections.items():
        row = {"setting": setting}
        values = resolved.study.drawn[setting]
        for key in searched:
            if key not in values[0]:
                row[key] = "-"  # not searched for this method
                continue
            chosen = values[selection.chosen][key] if selection.chosen is not None else None
            row[key] = f"{recipe.get(setting, {}).get(key, '-')} → {'-' if chosen is None else chosen}"
        score = selection.scores[selection.chosen] if selection.chosen is not None else float("nan")
        row[f"validation {resolved.study.tune.select}"] = round(score, 4) if score == score else "not yet"
        row["configurations ended"] = sum(s in tuning.ENDED for s in selection.states)
        rows.append(row)
    return pd.DataFrame(rows)


def _epochs(resolved: tuning.Resolved) -> list[int]:
    return [t.epochs for trials in resolved.study.search.values() for t in trials] or [1]


def budget_curves(resolved: tuning.Resolved) -> dict[str, tuple[list[int], list[float], np.ndarray, np.ndarray]]:
    """Per setting whose configurations all ended: (budgets 1..N, best validation score, band low, high). Random
    search: the expected best of n configurations (i.i.d. draws) with its bootstrap band. Bayesian search, whose
    configurations depend on the earlier ones: the best of its first n, in the order asked (no band)."""
    higher = METRICS.get(resolved.study.tune.select).direction == "higher"
    out = {}
    for setting, selection in resolved.selections.items():
        if selection.chosen is None:
            continue
        ns = list(range(1, len(selection.scores) + 1))
        if resolved.study.tune.search == "random":
            low, high = tuning.expected_best_band(selection.scores, ns, higher)
            out[setting] = (ns, tuning.expected_best(selection.scores, ns, higher), low, high)
            continue
        scores = pd.Series(selection.scores, dtype=float)
        best = (scores.cummax() if higher else scores.cummin()).ffill().tolist()  # NaN until the first finished
        out[setting] = (ns, best, np.full(len(ns), np.nan), np.full(len(ns), np.nan))
    return out


def rung_agreement(resolved: tuning.Resolved) -> pd.DataFrame:
    """Per setting and rung: how well the validation score at that epoch ranks the configurations that ran to the
    end against their final validation score (Spearman's rho, both oriented so that higher is better): near 1, a
    rung would stop the right ones; low or negative, early stopping would drop late bloomers (mixing methods learn
    slowly). Under ASHA the configurations it stopped have no final score and are counted beside."""
    from scipy.stats import spearmanr

    tune = resolved.study.tune
    column = tuning.rung_metric(tune.select)
    sign_rung = 1.0 if column.endswith("top1") else -1.0
    sign_final = 1.0 if METRICS.get(tune.select).direction == "higher" else -1.0
    rows = []
    for setting, trials in resolved.study.search.items():
        selection = resolved.selections[setting]
        history = [tuning.rung_scores(t.trial_dir) for t in trials]
        for epoch in tuning.rungs(tune, max(t.epochs for t in trials)):
            pairs = [
                (rows_[epoch][column], score)
                for rows_, score, state in zip(history, selection.scores, selection.states)
                if state == "finished" and score == score and column in rows_.get(epoch, {})
            ]
            stopped = sum(s == "stopped" and max(h, default=0) == epoch for s, h in zip(selection.states, history))
            rho = float("nan")
            if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
                rung, final = np.array(pairs).T
                rho = float(spearmanr(sign_rung * rung, sign_final * final).statistic)
            rows.append({
                "setting": setting,
                "rung (epoch)": epoch,
                "configurations compared": len(pairs),
                "Spearman rho, rung vs final": round(rho, 3) if rho == rho else "-",
                **({"stopped at this rung": stopped} if tune.scheduler == "asha" else {}),
            })  # fmt: skip
    return pd.DataFrame(rows)


def budget_figure(curves: dict, select: str, methods: dict[str, str], search: str, path: Path) -> plt.Figure | None:
    """Expected best validation score against the number of configurations tried (a Bayesian search: the best of its
    first n), every method on one figure."""
    if not curves:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for setting, (ns, best, low, high) in curves.items():
            method = methods[setting]
            ax.plot(ns, best, marker="o", ms=3, color=color(method), label=plain(setting))
            ax.fill_between(ns, low, high, color=color(method), alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ticks = budgets(max(len(ns) for ns, *_ in curves.values()))
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.set_xlabel("configurations tried (budget)")
        best = "expected best" if search == "random" else "best so far,"
        ax.set_ylabel(f"{best} validation {METRICS.get(select).label}")
        ax.set_title(f"{'Expected best' if search == 'random' else 'Best'} validation score at each budget")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, path)
    return fig


def ranking_table(curves: dict, select: str, search: str = "random") -> pd.DataFrame:
    """At each budget (1, 2, 4, ..., N): the settings from best to worst validation score at that budget (a setting
    with no finished configuration yet ranks last)."""
    if not curves:
        return pd.DataFrame()
    sign = 1.0 if METRICS.get(select).direction == "higher" else -1.0
    total = min(len(ns) for ns, *_ in curves.values())
    rows = []
    for n in budgets(total):
        value = {s: curves[s][1][n - 1] for s in curves}
        order = sorted(curves, key=lambda s: (value[s] != value[s], -sign * value[s] if value[s] == value[s] else 0))
        rows.append({
            "configurations tried": n,
            "ranking (best first)": " > ".join(order),
            f"best {'expected ' if search == 'random' else ''}validation {select}": round(value[order[0]], 4),
        })  # fmt: skip
    return pd.DataFrame(rows)


def tuned_minus_recipe(finished: pd.DataFrame, resolved: tuning.Resolved) -> pd.DataFrame:
    """Per setting: the tuned configuration's headline test metrics minus the recipe's, paired by final seed: mean
    difference ± the half-width of its 95% t-interval over seeds (clipped to the difference's range, ‡)."""
    by_id = finished.set_index("trial_id")
    done = set(by_id.index)
    rows = []
    for setting, finals in resolved.finals.items():
        recipe = resolved.study.recipe.get(setting, [])
        pairs = [(t.trial_id, r.trial_id) for t, r in zip(finals, recipe) if {t.trial_id, r.trial_id} <= done]
        if not pairs:
            continue
        row = {"setting": setting, "seeds": len(pairs)}
        for metric in [m for m in headline_metrics() if m in by_id]:  # the terminal's columns (headline=True)
            diffs = np.array([by_id.loc[t, metric] - by_id.loc[r, metric] for t, r in pairs], float)
            half = t_halfwidth(diffs.std(ddof=1), len(diffs)) if len(diffs) > 1 else float("nan")
            name = METRICS.get(metric).label.replace(" %", " (points)")
            row[f"tuned - recipe, {name}"] = difference_cell(float(diffs.mean()), half, metric)
        rows.append(row)
    return pd.DataFrame(rows)


def section(
    resolved: tuning.Resolved, all_trials: pd.DataFrame, recipe: dict, val_size: int, out: Path, write_table
) -> list:
    """The tuning section (HTML), its tables and figure written under ``out``."""
    from analysis import cache

    study = resolved.study
    parts = [fragment("<h2>Tuning: the same budget for every method</h2><p>{}</p>", statement(resolved, val_size))]
    tried = configurations(resolved)
    write_table(tried, out / "tuning", "Every configuration tried, its validation score and whether it was selected.")
    caption = "Each searched key: the recipe's value → the configuration selected on the validation split."
    selected = selected_table(resolved, recipe)
    write_table(selected, out / "tuning_selected", caption)
    parts.append(table_html("Selected configurations", selected, caption, "tuning_selected", 3))
    curves = budget_curves(resolved)
    methods = {s: p.get("method", "") for s, p in study.points.items()}
    drawn = cache.figure(
        out / "figures" / "tuning_budget", budget_figure, curves, study.tune.select, methods, study.tune.search
    )
    if drawn.exists():
        how = (
            f"Expected best validation {study.tune.select} when n of the {study.tune.trials} configurations are "
            "tried (the unbiased estimator of Dodge et al. 2019 in Tang et al. 2020's form, without replacement); "
            "band: 95% percentile bootstrap over the configurations (2,000 resamples)."
            if study.tune.search == "random"
            else f"Best validation {study.tune.select} among the first n configurations the Bayesian search asked "
            "(one search per method, in its order: its later configurations learned from the earlier ones, so the "
            "i.i.d. estimator does not apply and there is no band)."
        )
        parts.append(figure_html("tuning_budget", how + " Where the curves cross, the ranking depends on the budget."))
    ranking = ranking_table(curves, study.tune.select, study.tune.search)
    if not ranking.empty:
        orders = set(ranking["ranking (best first)"])
        caption = "The settings ranked by expected best validation score at each budget: " + (
            "the ranking is the same at every budget." if len(orders) == 1 else "the ranking changes with the budget."
        )
        write_table(ranking, out / "tuning_ranking", caption)
        parts.append(table_html("Ranking at each budget", ranking, caption, "tuning_ranking", 3))
    agreement = rung_agreement(resolved)
    if not agreement.empty:
        caption = (
            f"Does an early epoch rank a method's configurations as the end does? Spearman's rho between the "
            f"validation {tuning.rung_metric(study.tune.select)[4:]} at each rung and the final validation "
            f"{study.tune.select}, over the configurations that ran to the end (1: the rung ranks them exactly as the "
            "end; '-': fewer than 3). "
            + (
                "Under ASHA the configurations it stopped have no final score: a low rho says it may have stopped "
                "the wrong ones."
                if study.tune.scheduler == "asha"
                else "Without early stopping, this says whether ASHA at these rungs would have been safe."
            )
        )
        write_table(agreement, out / "tuning_rungs", caption)
        parts.append(table_html("Early rungs against the final score", agreement, caption, "tuning_rungs", 3))
    finished = all_trials[all_trials.state == "finished"] if not all_trials.empty else all_trials
    difference = tuned_minus_recipe(finished, resolved) if study.recipe else pd.DataFrame()
    if not difference.empty:
        caption = (
            "The tuned configuration minus the untuned recipe on test, at the same final seeds: mean difference ± the "
            "half-width of its 95% paired t-interval over seeds (none with one seed)."
        )
        write_table(difference, out / "tuning_vs_recipe", caption)
        parts.append(table_html("Tuned minus recipe", difference, caption, "tuning_vs_recipe", 3))
    parts.append(
        fragment(
            "<p>Every configuration is a row of {} (method, searched keys, validation {}, selected); the test tables "
            "below hold the final phase{} only.</p>",
            fragment('<a href="tuning.csv">tuning.csv</a>'),
            study.tune.select,
            " and the recipe" if study.recipe else "",
        )
    )
    return parts
