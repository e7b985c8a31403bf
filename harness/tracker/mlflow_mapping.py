"""What MLflow receives of a trial folder and a suite, as pure functions of what they hold: the run tags that say
what a run is and how far it was sent, params, per-epoch metrics, final metrics (metrics.json less the trial's
facts, harness.core.schema.FACTS), evaluation metrics and the report's summary."""

from __future__ import annotations

import json

from harness.core import schema

# What a run is and how far it was sent, in the run's own tags: the store says what it holds.
SUITE_TAG, ROLE_TAG = "harness.suite", "harness.role"
EPOCHS_TAG, FINAL_TAG, EVALUATIONS_TAG = "harness.epochs_sent", "harness.final", "harness.evaluations_sent"
NODES_TAG, WORKERS_TAG = "harness.nodes", "harness.workers"
REPORT_TAG = "harness.report_sent"  # on the parent run: a digest of the last report's metrics and files
EPOCH_METRICS = ("train_loss", "train_top1", "test_top1", "test_nll", "lr", "epoch_time_s")  # history.csv's
ARTIFACTS = (schema.CONFIG, schema.HISTORY, schema.METRICS, schema.LOGITS, schema.ATTEMPTS)
TAG_KEYS = (
    "method",
    "model",
    "depth",
    "width",
    "M",
    "b",
    "seed",
    "dataset",
    "epochs",
    "trial_id",
    "engine",
    "workers_per_trial",
)


def trial_tags(config: dict, suite_name: str, parent_run_id: str) -> dict[str, str]:
    """A trial run's tags: its suite, role and identity; a plugin's files and code hashes (part of the trial id)."""
    tags = {
        "mlflow.parentRunId": parent_run_id,
        SUITE_TAG: suite_name,
        ROLE_TAG: "trial",
        **{k: str(config.get(k)) for k in TAG_KEYS},
    }
    if config.get("plugin_code"):
        tags["harness.plugins"] = ", ".join(config["plugins"])
        tags["harness.plugin_code"] = json.dumps(config["plugin_code"])
    return tags


def trial_params(config: dict) -> dict[str, str]:
    """config.yaml as params (lists and dicts as JSON); a method's keys left at their default, flat with them."""
    flat = {**(config.get("option_defaults") or {}), **config}
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in sorted(flat.items())}


def epoch_metrics(rows: list[dict]) -> list[tuple[str, float, int]]:
    """(name, value, epoch) of history rows."""
    return [(k, float(r[k]), int(r["epoch"])) for r in rows for k in EPOCH_METRICS if r.get(k) not in (None, "")]


def final_metrics(final: dict) -> dict[str, float]:
    """metrics.json's metrics as final_<name> (its facts are not metrics)."""
    return {f"final_{k}": float(v) for k, v in sorted(final.items()) if finite_number(v) and k not in schema.FACTS}


def suite_params(suite) -> dict[str, str]:
    """The suite as MLflow params: one per top-level key, one per key of base/resources/tracking."""
    params = {}
    for key, value in suite.model_dump(mode="json", exclude={"description"}).items():
        items = (
            value.items() if key in ("base", "resources", "tracking") and isinstance(value, dict) else [(None, value)]
        )
        for sub, v in items:
            name = f"{key}.{sub}" if sub else key
            params[name] = (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:6000]
    return params


def evaluation_metrics(record: dict) -> dict[str, float]:
    """An evaluation set's record as metrics named eval.<set id>.<name> (corruptions: the summary and the
    means per severity; OOD: <score>.<metric>; test: the clean metrics again)."""
    from harness.evaluation.kinds import kind_of

    items = kind_of(record).metrics(record).items()
    return {f"eval.{record['id']}.{k}": float(v) for k, v in items if finite_number(v)}


def summary_metrics(summary) -> dict[str, float]:
    """The report's aggregated results as parent-run metrics: '<metric>/<setting>' (mean over seeds) of the key
    metrics (harness.metrics.key_metrics)."""
    from harness.metrics import key_metrics

    out, metrics = {}, key_metrics()
    for _, r in summary.iterrows():
        msda = f"_{r.msda}" if r.get("msda") not in (None, "none") and r.get("msda") == r.get("msda") else ""
        setting = f"{r.method}{msda}-{r.model}{int(r.depth)}x{int(r.width)}-M{int(r.M)}"
        setting += f"-ensemble{int(r.members)}" if r.members > 1 else ""
        for metric in metrics:
            value = r.get(f"{metric}_mean")
            if value is not None and value == value:
                out[f"{metric}/{setting}"] = float(value)
    return out


def finite_number(v) -> bool:
    """A value MLflow can hold as a metric: a finite int or float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's search filter, which takes the text between its quotes as it is (no
    escapes): single quotes, or double quotes around a value holding one; a value holding both has no literal."""
    for quote in "'\"":
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"{value!r}: MLflow's search filter has no literal for a value with both kinds of quote")
