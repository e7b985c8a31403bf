"""The results table `harness run` prints when its trials are done: the report's numbers in a few columns, without
the report's figures (this module imports no plotting library: the driver loads it after every sweep)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import cache, protocol, tables
from analysis.collect import collect, ensemble_rows
from harness.core import schema
from harness.core.config import RECORDED_BEFORE_THE_RULE
from harness.metrics import METRICS, headline_metrics
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder


def recorded_rule(suite_dir: Path) -> str:
    """The aggregation rule the suite's trials were run under (config.yaml's ``ensemble_average``; trials from
    before it was recorded count as "logits", the rule of that code), the most common one; else the default."""
    rules = []
    for path in sorted(Path(suite_dir).glob("*/" + schema.CONFIG))[:200]:
        try:
            rules.append(TrialFolder(path.parent).config().get("ensemble_average", RECORDED_BEFORE_THE_RULE))
        except CorruptFile:
            continue
    return max(set(rules), key=rules.count) if rules else "probabilities"


def compact_table(main: pd.DataFrame) -> str:
    """The results table in a few columns, for the terminal."""
    labels = [METRICS.get(name).label for name in headline_metrics()]  # harness.metrics: headline=True
    columns = [c for c in ("network", "method", "n", *labels) if c in main]
    return main[columns].to_string(index=False) + "\n" + tables.CAPTION


def terminal_summary(
    suite_dir: Path,
    ensemble_specs: list[tuple[str, list[int]]] | None = None,
    average: str | None = None,
    grid: dict[str, dict] | None = None,
) -> str:
    """The compact results table of a sweep's finished trials (and its deep ensembles), or '' if none."""
    rule = protocol.checked(average or recorded_rule(suite_dir))
    with cache.reading(suite_dir, rule):
        trials = collect(suite_dir, grid, rule=rule)
        config_keys = trials.attrs.pop("config_keys", [])
        trials.attrs.clear()
        if trials.empty or not (trials.state == "finished").any():
            return ""
        finished = trials[trials.state == "finished"]
        ensembles = ensemble_rows(trials, ensemble_specs, config_keys, rule=rule)
        rows = pd.concat([finished, ensembles], ignore_index=True) if not ensembles.empty else finished
        return compact_table(tables.display_table(tables.summarize(rows, config_keys, rule=rule)))
