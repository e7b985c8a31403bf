"""`harness report`: a sweep's result folders -> tables (Markdown, CSV, LaTeX), figures (PNG, SVG)
and an HTML page, results/<suite>/report/index.html. Works on a partial sweep and says what is missing."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis import cache, figures, protocol, robustness, tables
from analysis import tuning as analysis_tuning
from analysis.collect import collect, ensemble_rows
from analysis.output import figure_html, fragment, join, link, table_html, write_csv, write_page, write_table
from analysis.summary import compact_table, recorded_rule
from harness.core import schema
from harness.metrics import LOG_T_BOUNDS, temperature_at_bound
from harness.store.files import write_json

CAPTIONS = {  # the captions of the page's fixed tables
    "results": tables.CAPTION,
    "paired_differences": (
        "Cut-MixMo's top-1 minus a baseline's, trained at the same width with the same seeds: mean difference "
        "(points) ± the half-width of its 95% interval, and the two-sided p-value of the test named: a "
        "paired t-test over seeds (2 or more shared seeds), or a paired bootstrap over the same test images "
        "(one seed; 2,000 resamples, percentile interval, p = twice the smaller tail, so a p below 1/2,000 "
        "is shown as < 0.0005). An interval that would leave the difference's range is clipped to it, ‡."
    ),
    "published_vs_reproduced": (
        "Published top-1 (the authors' released runs) beside ours (± as in the results table); difference = "
        "ours - published (midpoint); verdict: whether our 95% interval meets the published value."
    ),
}


def build_report(
    suite_dir: Path,
    ensemble_specs: list[tuple[str, list[int]]] | None = None,
    expected: dict[str, str] | None = None,
    source: str | None = None,
    average: str | None = None,
    grid: dict[str, dict] | None = None,
    study: dict | None = None,
    verify: bool = False,
    figures: bool = True,
) -> dict:
    """Write the report under suite_dir/report; returns {"dir", "tables", "figures", "missing", "corrupt",
    "average", "not_in_suite"} (trial folders with an unreadable file: left out, and listed as missing with the
    reason). ``expected`` maps trial ids that should exist to a short description (from the suite file); ``grid``
    maps the suite's trial ids to their recorded configs (other folders are listed, never counted); ``average``
    is the aggregation rule (the suite's ``ensemble_average``; None: the one the trials recorded); ``study``, a
    tuned suite's {"resolved": harness.planning.tuning.Resolved, "recipe": setting -> the recipe's searched values,
    "val_size"}: its tuning section, and test tables of the final phase (and recipe) alone; ``verify``: every value
    recomputed from the saved logits (no cache read or written), metrics.json's disagreements in "disagreements";
    ``figures=False``: the tables and the page without figures (matplotlib draws most of a report's time), the page
    saying so."""
    rule = protocol.checked(average or recorded_rule(suite_dir))
    with cache.reading(suite_dir, rule, not verify, figures) as kept:
        built = _build_report(Path(suite_dir), ensemble_specs, expected, source, grid, study, rule=rule, verify=verify)
        report = {**built, "average": rule}
    if not figures:  # an earlier report's figure files may still be in the folder: none of them is this report's
        report["figures"] = []
    return {**report, "cache": {"hits": kept.hits, "misses": kept.misses}}


def _build_report(
    suite_dir: Path, ensemble_specs, expected, source, grid, study=None, *, rule: str, verify: bool
) -> dict:
    """The page and its files, in the page's order: what is missing or foreign, the run's metadata and protocol,
    a study's tuning, the figures, the tables, robustness, every one read under the aggregation ``rule``; -> the
    report's record."""
    out = suite_dir / schema.REPORT_DIR
    (out / "figures").mkdir(parents=True, exist_ok=True)
    trials = collect(suite_dir, grid, rule=rule, verify=verify)
    # pandas deep-copies attrs into every derived frame: at thousands of rows, most of the report's time
    foreign, config_keys = trials.attrs.pop("not_in_suite"), trials.attrs.pop("config_keys")
    missing = _missing(trials, expected or {})
    report = _new_record(trials, out, missing, foreign)
    tuning_parts, every = [], trials  # every trial of the suite: the page's count
    if study is not None:  # the search's configurations: the tuning section; the test tables: the final phase
        tuning_parts, trials = _tuning_part(study, trials, out, report)
    finished = trials[trials.state == "finished"] if not trials.empty else trials
    sections = []
    if finished.empty:
        sections.append(fragment("<p>No finished trial yet{}.</p>", " reported on test" if study else ""))
        sections.extend(tuning_parts)
    else:
        ensembles = ensemble_rows(trials, ensemble_specs, config_keys, rule=rule)
        if study is not None and not ensembles.empty:  # an ensemble is of the tuned configuration or the recipe
            of = dict(zip(trials.trial_id, trials.tuning))
            ensembles["tuning"] = [of[members[0]] for members in ensembles.member_trials]
        rows = pd.concat([finished, ensembles], ignore_index=True) if not ensembles.empty else finished
        summary = tables.summarize(rows, config_keys, rule=rule)
        write_csv(summary, out / schema.SUMMARY_RAW)
        report["summary_frame"] = summary
        main = tables.display_table(summary)
        report["summary"] = compact_table(main)
        published = tables.published_vs_reproduced(summary)
        split_by = ["tuning"] if study is not None else tables.varying_keys(finished, config_keys)
        paired = tables.paired_table(tables.paired_differences(finished, ensembles, by=split_by, rule=rule))
        captions = CAPTIONS
        report["tables"] += write_table(main, out / "results", captions["results"])
        report["tables"] += write_table(published, out / "published_vs_reproduced", captions["published_vs_reproduced"])
        if not paired.empty:
            report["tables"] += write_table(paired, out / "paired_differences", captions["paired_differences"])
        if cache.drawing_figures():
            sections += _figure_sections(out, summary, rows, finished, ensembles, report, rule)
        else:
            sections.append(fragment("<p class=meta>Figures not drawn (<code>harness report --no-figures</code>).</p>"))
        extra_sections = robustness.sections(
            finished,
            ensembles,
            summary,
            out,
            lambda table, stem, caption: report["tables"].extend(write_table(table, stem, caption)),
            rule=rule,
        )
        report["figures"] = sorted(p for p in (out / "figures").iterdir() if p.suffix in (".png", ".svg"))
        sections.append(table_html("Results", main, captions["results"], "results"))
        if not paired.empty:
            sections.append(
                table_html("Paired differences", paired, captions["paired_differences"], "paired_differences")
            )
        sections += _improvement_sections(finished, ensembles, split_by, out, report)
        sections.append(
            table_html(
                "Published vs reproduced", published, captions["published_vs_reproduced"], "published_vs_reproduced"
            )
            if not published.empty
            else fragment(
                "<h2>Published vs reproduced</h2><p>No setting of this sweep matches a published one "
                "(same dataset, network, width, method, M).</p>"
            )
        )
        sections.extend(extra_sections)  # robustness, OOD detection, selective prediction
        sections.insert(
            0, _metadata(finished, source) + _protocol_section(rows, out, report, rule) + join(tuning_parts)
        )
    sections[:0] = _leftover_sections(missing, foreign)
    write_json(out / schema.MISSING, missing)
    write_json(out / schema.NOT_IN_SUITE, foreign)
    files = sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.name != schema.REPORT_PAGE and (cache.drawing_figures() or p.parent.name != "figures")
    )
    sections.append(fragment("<h2>Files</h2><p class=meta>{}</p>", join((link(f) for f in files), " · ")))
    done = int((every.state == "finished").sum()) if not every.empty else 0
    write_page(out / schema.REPORT_PAGE, suite_dir.name, len(every), done, sections)
    return report


def _new_record(trials, out: Path, missing: dict, foreign: dict) -> dict:
    """The report's record (what `harness report` prints and returns): its folder, tables and figures to come, the
    missing, corrupt and foreign trials, and the metrics recomputed or disagreeing (--verify)."""
    corrupt = (
        {} if trials.empty else {t: e for t, s, e in zip(trials.trial_id, trials.state, trials.error) if s == "corrupt"}
    )
    report = {"dir": out, "tables": [], "figures": [], "missing": missing, "corrupt": corrupt, "not_in_suite": foreign}
    if "recomputed_metrics" in trials:
        report["recomputed"] = {
            t: names
            for t, names in zip(trials.trial_id, trials.recomputed_metrics)
            if isinstance(names, list) and names
        }
    if "verify_disagreements" in trials:
        report["disagreements"] = {
            t: lines
            for t, lines in zip(trials.trial_id, trials.verify_disagreements)
            if isinstance(lines, list) and lines
        }
    return report


def _tuning_part(study: dict, trials, out: Path, report: dict):
    """A study's tuning section (planning.tuning), and the trials its test tables report: the final phase's, each
    marked tuned or recipe. -> (sections, trials)."""
    resolved = study["resolved"]
    tuning_parts = analysis_tuning.section(
        resolved,
        trials,
        study["recipe"],
        study["val_size"],
        out,
        lambda table, stem, caption: report["tables"].extend(write_table(table, stem, caption)),
    )
    tuned = {t.trial_id for ts in resolved.finals.values() for t in ts}
    reported = {t.trial_id for t in resolved.reported}
    if not trials.empty:
        trials = trials[trials.trial_id.isin(reported)]
        trials = trials.assign(tuning=["tuned" if t in tuned else "recipe" for t in trials.trial_id])
    return tuning_parts, trials


def _figure_sections(out: Path, summary, rows, finished, ensembles, report: dict, rule: str) -> list:
    """The page's figures in order (Fig. 2 per setting, cost, calibration, reliability, diversity, learning curves),
    each under its heading once; drawn through the cache, listed in ``report["figures"]``."""
    out_sections = []
    setup = _setup(finished)
    groups = list(summary.groupby(["dataset", "model", "depth", "epochs"]))
    stems = ["{}_{}{}_{}ep".format(*key) for key, _ in groups]
    figs = [  # (figure, file stem, caption) in the page's order: Fig. 2, cost, calibration, diversity, curves
        *[
            (
                cache.figure(out / "figures" / f"width_{s}", figures.width_figure, g, runs=_runs_of(rows, key)),
                f"width_{s}",
                f"Fig. 2 style: top-1 against width and parameters ({setup}). " + _bars(g),
            )
            for s, (key, g) in zip(stems, groups)
        ],
        (
            cache.figure(out / "figures" / "cost", figures.cost_figure, summary),
            "cost",
            f"Cost: top-1 against training hours, parameters and inference FLOPs per image (a deep ensemble "
            f"counts all its members), every setting one point (squares: deep ensembles), the Pareto front "
            f"circled ({setup}).",
        ),
        *[
            (
                cache.figure(out / "figures" / f"calibration_{s}", figures.calibration_width_figure, g),
                f"calibration_{s}",
                f"NLL and ECE against width, before temperature scaling ({setup}). " + _bars(g),
            )
            for s, (key, g) in zip(stems, groups)
        ],
        (
            cache.figure(out / "figures" / "reliability", figures.reliability_figure, finished, rule=rule),
            "reliability",
            "Reliability diagrams of each method's widest trial (lowest seed), before and after temperature "
            "scaling (the protocol above): bars = accuracy per confidence bin with its image count, grey = share "
            "of test images per bin; the ECE in each title is the table's.",
        ),
        (
            cache.figure(out / "figures" / "diversity", figures.diversity_figure, finished, ensembles),
            "diversity",
            f"Diversity between heads or members against their individual top-1 ({setup}).",
        ),
        (
            cache.figure(out / "figures" / "curves", figures.curves_figure, finished),
            "curves",
            f"Test top-1 during training, one line per trial ({setup}).",
        ),
    ]
    report["figures"] = sorted(p for p in (out / "figures").iterdir() if p.suffix in (".png", ".svg"))
    headings = {
        "width": "Top-1 against width (Fig. 2)",
        "cost": "Cost",
        "calibration": "Calibration",
        "diversity": "Diversity",
        "curves": "Learning curves",
    }
    for drawn, stem, caption in figs:
        if not drawn.exists():
            continue
        kind = stem.split("_")[0]
        if kind in headings:  # each heading once, before its first figure
            out_sections.append(fragment("<h2>{}</h2>", headings.pop(kind)))
            if kind == "calibration":
                out_sections.append(calibration_note(finished))
        out_sections.append(figure_html(stem, caption))
    if "curves" in headings:  # no trial has a history of two evaluations or more: say why, not nothing
        out_sections.append(
            fragment(
                "<h2>{}</h2><p>No learning curve: no finished trial was evaluated on its test set at two epochs "
                "or more (<code>eval_every: 0</code> evaluates only at the end; set <code>eval_every: 1</code> in "
                "the suite's <code>base:</code> for a curve, at the cost of an evaluation per epoch).</p>",
                headings.pop("curves"),
            )
        )
    return out_sections


def _improvement_sections(finished, ensembles, split_by, out: Path, report: dict) -> list:
    """The improvement-over-baselines table (IQM, probability of improvement, seeds needed) and its sentence."""
    parts = []
    improvement = tables.improvement_table(finished, ensembles, by=split_by)
    if improvement.empty:
        return []
    caption = (
        "Each method against the vanilla network and a deep ensemble of as many vanilla networks as it has "
        "members, at the same network: the interquartile means of the runs' top-1, the probability of "
        "improvement P(a run of the method beats a run of the baseline) with its 95% stratified bootstrap "
        "interval (2,000 resamples, each side's runs resampled on their own, percentile interval; inside "
        "[0, 1] at any n; none with one run a side, where it decides nothing), and the seeds per "
        "method a two-sided 5% test would need to confirm the observed difference with 80% power at the "
        "observed spread. The IQMs are point values: no interval is computed for them."
    )
    report["tables"] += write_table(improvement, out / "improvement", caption)
    parts.append(table_html("Improvement over baselines", improvement, caption, "improvement"))
    parts.append(fragment("<p>{}</p>", seeds_sentence(improvement)))
    return parts


def _leftover_sections(missing: dict, foreign: dict) -> list:
    """What the page says first: folders under the suite's storage that are not its trials, then its missing trials."""
    parts = []
    if foreign:
        items = join(fragment("<li><code>{}</code>: {}</li>", t, s) for t, s in foreign.items())
        parts.append(
            fragment(
                "<h2>Not in this suite ({} folders)</h2><p>Under the suite's storage but not its trials: never "
                "counted in a table, an interval or an ensemble.</p><ul>{}</ul>",
                len(foreign),
                items,
            ),
        )
    if missing:
        items = join(fragment("<li><code>{}</code>: {}</li>", t, s) for t, s in missing.items())
        parts.append(fragment('<h2>Missing ({} trials)</h2><ul class="missing">{}</ul>', len(missing), items))
    return parts


def _runs_of(rows: pd.DataFrame, key: tuple) -> pd.DataFrame:
    """The runs (trials, ensembles) of one width figure's group: dataset, model, depth, epochs."""
    keys = ["dataset", "model", "depth", "epochs"]
    mask = pd.Series(True, index=rows.index)
    for k, v in zip(keys, key):
        mask &= rows[k] == v
    return rows[mask].assign(msda=rows[mask].get("msda", pd.Series("none", index=rows[mask].index)))


def seeds_sentence(improvement: pd.DataFrame) -> str:
    """One sentence: how many seeds the claimed differences need at the observed spread."""
    needed = improvement["seeds needed"].replace(float("inf"), float("nan")).dropna()
    if needed.empty:
        return "With one run per side there is no spread to size a test from: run at least two seeds per method."
    have = improvement["n"].str.split(" vs ").str[0].astype(int)
    short = int((needed > have.loc[needed.index]).sum())
    return (
        f"At the spread observed here, confirming these differences needs {int(needed.min())}-{int(needed.max())} "
        f"seeds per method (median {int(needed.median())}); {short} of {len(needed)} comparisons have fewer."
    )


def _protocol_section(rows: pd.DataFrame, out: Path, report: dict, rule: str) -> str:
    """The aggregation rule in one sentence, and per method of several heads or members how much the other rule
    moves top-1, NLL and ECE (the same saved logits, read both ways)."""
    text = fragment("<h2>Protocol</h2><p>{}, in every table and figure.</p>", protocol.STATEMENT[rule])
    shifts = [c for c in ("rule_shift_top1", "rule_shift_nll", "rule_shift_ece") if c in rows]
    several = rows[rows[shifts[0]].notna()] if shifts else rows.iloc[0:0]
    if several.empty:
        return text + fragment("<p>Every network here has one head: both rules give the same numbers.</p>")
    table = (
        several.assign(method=[tables.label(r) for _, r in several.iterrows()])
        .groupby("method", sort=False)[shifts]
        .mean()
        .reset_index()
        .rename(
            columns={
                "rule_shift_top1": "top-1 (points)",
                "rule_shift_nll": "NLL",
                "rule_shift_ece": "ECE",
            }
        )
    )
    table["top-1 (points)"] *= 100
    table = table.round({"top-1 (points)": 2, "NLL": 4, "ECE": 4})
    caption = (
        "What the aggregation rule moves: averaging probabilities minus averaging logits, on the same saved logits "
        "(mean over seeds or ensembles); one-head networks are unaffected."
    )
    report["tables"] += write_table(table, out / "aggregation_rule", caption)
    return text + table_html("Aggregation rule", table, caption, "aggregation_rule")


def _setup(finished: pd.DataFrame) -> str:
    """Dataset, subset and budget of the trials, for captions."""
    parts = []
    for key, name in (("dataset", ""), ("epochs", " epochs")):
        values = sorted(set(finished[key].dropna()))
        parts.append(", ".join(f"{v}{name}" for v in values))
    images = sorted(set(finished.train_images.dropna().astype(int))) if "train_images" in finished else []
    tests = sorted(set(finished.test_images.dropna().astype(int))) if "test_images" in finished else []
    if images:
        parts.append(f"{'/'.join(f'{i:,}' for i in images)} training images")
    if tests:
        parts.append(f"{'/'.join(f'{i:,}' for i in tests)} test images")
    return "; ".join(p for p in parts if p)


def _bars(group: pd.DataFrame) -> str:
    ns = sorted(set(group.n.astype(int)))
    return (
        f"Error bars: 95% interval over seeds (n = {', '.join(map(str, ns))}), clipped to the metric's range; with "
        f"one seed, top-1's bootstrap interval over test images, and no bar for the other metrics. Small points: "
        f"each seed (or ensemble)."
    )


def _metadata(finished: pd.DataFrame, source: str | None) -> str:
    """Harness version and commit, hardware, training time, the suite file."""
    import importlib.metadata
    import subprocess

    try:
        version = importlib.metadata.version("harness")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    devices = ", ".join(sorted(set(finished.device_name.dropna()))) if "device_name" in finished else "unknown"
    hours = finished.train_time_s.sum() / 3600 if "train_time_s" in finished else float("nan")
    items = [
        f"harness {version} (commit {commit})",
        f"hardware: {devices}",
        f"training time: {hours:.2f} h over {len(finished)} trials",
    ]
    if source:
        items.append(fragment("suite file: <code>{}</code>", str(source)))
    return fragment("<p class=meta>{}</p>", join(items, " · "))


def calibration_note(finished: pd.DataFrame) -> str:
    """The page's statement of its one temperature-scaling protocol, and why calibrated metrics may come out
    worse than raw ones."""
    protocols = sorted(set(finished.calibration_protocol.dropna()))
    n = len(finished)
    worse_ece = int((finished.cal_ece > finished.ece).sum())
    worse_nll = int((finished.cal_nll > finished.nll).sum())
    text = fragment(
        "<p>Every calibrated number on this page (tables, reliability diagrams) comes from the trials' saved "
        "logits through one protocol: {}.</p>",
        "; ".join(protocols),
    )
    at_bound = [
        tid
        for tid, ts in zip(finished.trial_id, finished.get("temperatures", pd.Series([None] * n)))
        if isinstance(ts, list) and any(temperature_at_bound(t) for t in ts)
    ]
    if at_bound:
        low, high = (f"{math.exp(b):.4g}" for b in LOG_T_BOUNDS)
        text += fragment(
            "<p>{}</p>",
            f"In {len(at_bound)} of {n} trials ({', '.join(at_bound[:5])}{', ...' if len(at_bound) > 5 else ''}) a "
            f"temperature stopped at the search's bound (T = {low} or {high}): the NLL still falls beyond it, so that "
            f"T is a bound, not an optimum (confidences that carry no signal, or too few images to fit on); their "
            f"calibrated numbers are shown but mean little.",
        )
    if worse_ece or worse_nll:
        images = int(finished.test_images.min()) if "test_images" in finished else 0
        text += fragment(
            "<p>{}</p>",
            f"Temperature scaling made the ECE worse in {worse_ece} of {n} trials and the NLL worse in "
            f"{worse_nll}. T minimises the NLL of the images it is fitted on; scored on images it has not seen "
            f"(here as few as {images // 2 if 'cross-fit' in ' '.join(protocols) else images} per fit), a noisy T "
            f"can lose, and the 15-bin ECE of a few thousand images moves by more than the gain. With more test "
            f"images, or `val_size` for a held-out split, the gap closes.",
        )
    return text


def _missing(trials: pd.DataFrame, expected: dict[str, str]) -> dict[str, str]:
    missing = {}
    states = {} if trials.empty else dict(zip(trials.trial_id, zip(trials.state, trials.error)))
    for tid, (state, error) in states.items():
        if state not in ("finished", "stopped"):  # stopped: a study's ASHA ended it, by design (tuning.csv)
            missing[tid] = state + (f": {error}" if error else "")
    for tid, what in expected.items():
        if tid not in states:
            missing[tid] = f"not started ({what})"
    return missing
