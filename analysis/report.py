"""`harness report`: a sweep's result folders -> tables (Markdown, CSV, LaTeX), figures (PNG, SVG)
and an HTML page, results/<suite>/report/index.html. Works on a partial sweep and says what is missing."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis import figures, tables
from analysis.collect import collect, ensemble_rows


def build_report(
    suite_dir: Path, ensemble_specs: list[tuple[str, list[int]]] | None = None, expected: dict[str, str] | None = None
) -> dict:
    """Write the report under suite_dir/report; returns {"dir", "tables", "figures", "missing", "corrupt"}
    (trial folders with an unreadable file: left out, and listed as missing with the reason).
    ``expected`` maps trial ids that should exist to a short description (from the suite file)."""
    suite_dir = Path(suite_dir)
    out = suite_dir / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    trials = collect(suite_dir)
    missing = _missing(trials, expected or {})
    corrupt = (
        {} if trials.empty else {t: e for t, s, e in zip(trials.trial_id, trials.state, trials.error) if s == "corrupt"}
    )
    report = {"dir": out, "tables": [], "figures": [], "missing": missing, "corrupt": corrupt}
    finished = trials[trials.state == "finished"] if not trials.empty else trials
    sections = []
    if finished.empty:
        sections.append("<p>No finished trial yet.</p>")
    else:
        ensembles = ensemble_rows(trials, ensemble_specs)
        rows = pd.concat([finished, ensembles], ignore_index=True) if not ensembles.empty else finished
        summary = tables.summarize(rows, trials.attrs.get("config_keys", []))
        summary.to_csv(out / "summary_raw.csv", index=False)
        main = tables.display_table(summary)
        compact = [c for c in ("network", "method", "n", "top-1 %", "NLL", "cal. NLL", "ECE") if c in main]
        report["summary"] = main[compact].to_string(index=False) + "\n" + tables.CAPTION
        published = tables.published_vs_reproduced(summary)
        report["tables"] += tables.write_table(main, out / "results", tables.CAPTION)
        report["tables"] += tables.write_table(
            published,
            out / "published_vs_reproduced",
            "Published top-1 (the authors' released runs) beside ours (± as in the results table); difference = ours "
            "- published (midpoint); verdict: whether our 95% interval meets the published value.",
        )
        sections.append(
            "<h2>Results</h2>"
            + main.to_html(index=False, classes="results", border=0)
            + f"<p>{html.escape(tables.CAPTION)}</p>"
        )
        sections.append("<h2>Calibration</h2>" + calibration_note(finished))
        sections.append(
            "<h2>Published vs reproduced</h2>"
            + (
                published.to_html(index=False, border=0)
                if not published.empty
                else "<p>No setting of this sweep matches a published one "
                "(same dataset, network, width, method, M).</p>"
            )
        )
        figs = []
        for key, group in summary.groupby(["dataset", "model", "depth", "epochs"]):
            stem = "{}_{}{}_{}ep".format(*key)
            figs.append(figures.width_figure(group, out / "figures" / f"width_{stem}"))
            figs.append(figures.calibration_width_figure(group, out / "figures" / f"calibration_{stem}"))
        figs.append(figures.reliability_figure(finished, out / "figures" / "reliability"))
        figs.append(figures.diversity_figure(finished, ensembles, out / "figures" / "diversity"))
        figs.append(figures.curves_figure(finished, out / "figures" / "curves"))
        for fig in filter(None, figs):
            plt.close(fig)
        report["figures"] = sorted(p for p in (out / "figures").iterdir() if p.suffix in (".png", ".svg"))
        for png in sorted((out / "figures").glob("*.png")):
            sections.append(
                f'<h2>{html.escape(png.stem)}</h2><img src="figures/{png.name}" alt="{html.escape(png.stem)}">'
            )
    if missing:
        items = "".join(f"<li><code>{html.escape(t)}</code>: {html.escape(s)}</li>" for t, s in missing.items())
        sections.insert(0, f'<h2>Missing ({len(missing)} trials)</h2><ul class="missing">{items}</ul>')
    (out / "index.html").write_text(_page(suite_dir.name, len(trials), len(finished), sections))
    (out / "missing.json").write_text(json.dumps(missing, indent=2) + "\n")
    return report


def calibration_note(finished: pd.DataFrame) -> str:
    """The page's statement of its one temperature-scaling protocol, and why calibrated metrics may come out
    worse than raw ones."""
    protocols = sorted(set(finished.calibration_protocol.dropna()))
    n = len(finished)
    worse_ece = int((finished.cal_ece > finished.ece).sum())
    worse_nll = int((finished.cal_nll > finished.nll).sum())
    text = (
        "<p>Every calibrated number on this page (tables, reliability diagrams) comes from the trials' saved "
        "logits through one protocol: " + "; ".join(html.escape(p) for p in protocols) + ".</p>"
    )
    if worse_ece or worse_nll:
        images = int(finished.test_images.min()) if "test_images" in finished else 0
        text += (
            f"<p>Temperature scaling made the ECE worse in {worse_ece} of {n} trials and the NLL worse in "
            f"{worse_nll}. T minimises the NLL of the images it is fitted on; scored on images it has not seen "
            f"(here as few as {images // 2 if 'cross-fit' in ' '.join(protocols) else images} per fit), a noisy T "
            f"can lose, and the 15-bin ECE of a few thousand images moves by more than the gain. With more test "
            f"images, or `val_size` for a held-out split, the gap closes.</p>"
        )
    return text


def _missing(trials: pd.DataFrame, expected: dict[str, str]) -> dict[str, str]:
    missing = {}
    states = {} if trials.empty else dict(zip(trials.trial_id, zip(trials.state, trials.error)))
    for tid, (state, error) in states.items():
        if state != "finished":
            missing[tid] = state + (f": {error}" if error else "")
    for tid, what in expected.items():
        if tid not in states:
            missing[tid] = f"not started ({what})"
    return missing


def _page(name: str, total: int, finished: int, sections: list[str]) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}: harness report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }}
th, td {{ padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }}
th {{ background: #f4f4f4; }} img {{ max-width: 100%; }} .missing {{ color: #a33; }}
</style></head><body>
<h1>Sweep <code>{html.escape(name)}</code></h1>
<p>{finished} of {total} trials finished.</p>
{"".join(sections)}
</body></html>
"""
