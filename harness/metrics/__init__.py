"""The metric registry: every final metric a trial, `harness evaluate`, a deep ensemble and the report compute, with
its group, direction, range and report column (``register_metric``, the plugin API), and the suites built from it.
The scores themselves are ``scores``; temperature scaling ``calibration``; selective prediction ``selective``;
OOD detection and robustness ``uncertainty``. Metrics are computed on saved head logits (N, M, K), the M heads
combined by one declared rule (``average``): "probabilities", the field's (deep ensembles, uncertainty-baselines,
torch-uncertainty), or "logits", the MixMo authors' (docs/recipe.md §6)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from harness.core.registry import Registry
from harness.metrics.calibration import LOG_T_BOUNDS, calibrate, fit_temperature, temperature_at_bound
from harness.metrics.scores import (
    AVERAGES,
    ECE_BINS,
    auroc,
    brier,
    calibration_bins,
    correct,
    diversity,
    ece,
    ensemble_logits,
    misclassification_auroc,
    nll,
    predictions,
    rule_shift,
    tace,
    tie_groups,
    topk_accuracy,
)
from harness.metrics.selective import COVERAGES, risk_coverage, selective_metrics

__all__ = [  # the scores, re-exported: ``from harness.metrics import ece`` (plugins, tests, the report)
    "AVERAGES", "COVERAGES", "ECE_BINS", "LOG_T_BOUNDS", "auroc", "brier", "calibrate", "calibration_bins", "correct",
    "diversity", "ece", "ensemble_logits", "fit_temperature", "misclassification_auroc", "nll", "predictions",
    "risk_coverage", "rule_shift", "selective_metrics", "tace", "temperature_at_bound", "tie_groups", "topk_accuracy",
]  # fmt: skip


# --- the one metric suite: training, `harness evaluate`, deep ensembles and the report all use it
GROUPS = ("accuracy", "calibration", "selective", "diversity", "cost")  # a metric's group: its place in the report
TABLE_OF_GROUP = {"selective": "selective", "cost": "cost"}  # the report table of a group (else "main")


@dataclass(frozen=True)
class Metric:
    """A final metric: its group, which way is better, whether it is a headline (the terminal's compact table,
    the evaluation's one line), and its report column."""

    label: str
    scale: float = 1.0  # 100: shown as a percentage
    decimals: int = 3
    of_ensemble: Callable[[torch.Tensor, torch.Tensor], float] | None = None  # (ensemble logits, labels) -> value
    group: str = "accuracy"
    direction: str = "lower"  # "lower" or "higher" is better
    help: str = ""
    bounds: tuple[float, float] = (0.0, 1.0)  # the values it can take: a report's intervals stay inside
    headline: bool = False
    calibrated_of: str | None = None  # cal_nll: "nll" of the temperature-scaled logits (under shift: clean T)

    @property
    def table(self) -> str:
        """The report table that shows it: "main", "selective" or "cost"."""
        return TABLE_OF_GROUP.get(self.group, "main")

    def format(self, value: float) -> str:
        """``label value`` for a line of text: "top-1 71.23%", "NLL 1.234"."""
        if self.label.endswith(" %"):
            return f"{self.label.removesuffix(' %')} {self.scale * value:.{self.decimals}f}%"
        return f"{self.label} {self.scale * value:.{self.decimals}f}"


# Every metric, in the report's column order (registration order). A metric of the ensemble's logits is one
# function with @register_metric, here or in a plugin: it then reaches metrics.json, MLflow (final_<name>), the
# report's tables and the evaluations of a corrupted test set (the report computes it from the saved logits for
# trials that finished before it existed). The cost metrics are measured by the trainer, declared here.
METRICS: Registry[Metric] = Registry("metric")


def register_metric(
    name: str,
    label: str,
    *,
    direction: str,
    scale: float = 1.0,
    decimals: int = 3,
    group: str = "accuracy",
    headline: bool = False,
    computed: bool = True,
    help: str | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    table: str | None = None,
    calibrated_of: str | None = None,
):
    """Decorator on ``fn(ensemble_logits (N, K), labels (N,)) -> float``: a final metric, computed for every
    trial (and deep ensemble) and shown under ``label`` in the report table of its ``group`` (one of ``GROUPS``:
    "selective" and "cost" have tables of their own). ``direction`` says which way is better ("higher" or
    "lower"); ``bounds`` the values it can take (the report's intervals are clipped to them); ``headline`` puts it
    in the terminal's compact table. ``computed=False`` declares a column that another part of the suite fills
    (calibration, diversity, costs); then the function only carries the docstring. (``table="selective"``, the
    earlier spelling, is ``group="selective"``.)"""
    if direction not in ("higher", "lower"):
        raise ValueError(f"register_metric({name!r}): direction is 'higher' or 'lower', got {direction!r}")
    if table is not None:
        if table not in ("main", "selective"):
            raise ValueError(f"register_metric({name!r}): table is 'main' or 'selective', got {table!r}")
        group = "selective" if table == "selective" else group
    if group not in GROUPS:
        raise ValueError(f"register_metric({name!r}): group is one of {', '.join(GROUPS)}, got {group!r}")

    def add(fn):
        doc = help or (fn.__doc__ or "").strip().split("\n")[0]
        of_ensemble = fn if computed else None
        metric = Metric(
            label, scale, decimals, of_ensemble, group, direction, doc, tuple(bounds), headline, calibrated_of
        )
        METRICS.register(name)(metric)
        return fn

    return add


def _declared(name: str, label: str, direction: str, help: str, **kw) -> None:
    register_metric(name, label, direction=direction, computed=False, help=help, **kw)(lambda: None)


def headline_metrics() -> list[str]:
    return [name for name, m in METRICS.items() if m.headline]


def headline_text(values: dict, prefix: str = "") -> str:
    """The headline metrics of a record in one line ("top-1 71.23%, NLL 1.234, ..."); ``prefix``: the keys'
    (corrupted_ for a corruption summary)."""
    return ", ".join(METRICS.get(n).format(values[prefix + n]) for n in headline_metrics() if prefix + n in values)


def shift_metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: float | None = None) -> dict[str, float]:
    """The suite on a shifted test set (a corruption at one severity): every metric of ``METRICS`` computed from
    the ensemble's logits alone, and with ``temperature`` (fitted on clean images, applied unchanged) every
    calibrated one (cal_nll, cal_ece)."""
    out = {name: m.of_ensemble(logits, labels) for name, m in METRICS.items() if m.of_ensemble is not None}
    if temperature:
        scaled = logits / temperature
        for name, m in METRICS.items():
            if m.calibrated_of is not None:
                out[name] = METRICS.get(m.calibrated_of).of_ensemble(scaled, labels)
    return out


def key_metrics() -> list[str]:
    """The metrics the compact views show: the headline ones, then the calibrated ones (the robustness tables'
    clean and corrupted columns, the parent run's summary in MLflow)."""
    names = [n for n, m in METRICS.items() if m.headline and (m.of_ensemble is not None or m.calibrated_of)]
    return names + [n for n, m in METRICS.items() if m.calibrated_of and n not in names]


register_metric("top1", "top-1 %", direction="higher", scale=100, decimals=2, headline=True, help="top-1 accuracy")(
    lambda logits, labels: topk_accuracy(logits, labels, 1)
)
register_metric("top5", "top-5 %", direction="higher", scale=100, decimals=2, help="top-5 accuracy")(
    lambda logits, labels: topk_accuracy(logits, labels, 5)
)
register_metric(
    "nll",
    "NLL",
    direction="lower",
    headline=True,
    help="negative log-likelihood of the true class",
    bounds=(0, math.inf),
)(nll)
register_metric(
    "ece", "ECE", direction="lower", group="calibration", headline=True, decimals=4,
    help=f"expected calibration error, {ECE_BINS} bins",
)(ece)  # fmt: skip
register_metric("tace", "TACE", direction="lower", group="calibration", decimals=5)(tace)
register_metric("brier", "Brier", direction="lower", group="calibration", decimals=4, bounds=(0, 2))(brier)
register_metric("misclassification_auroc", "AUROC (right vs wrong)", direction="higher", decimals=4)(
    misclassification_auroc
)
_declared(
    "cal_nll", "cal. NLL", "lower", "NLL after temperature scaling (calibrate)", group="calibration", headline=True,
    bounds=(0, math.inf), calibrated_of="nll",
)  # fmt: skip
_declared(
    "cal_ece", "cal. ECE", "lower", "ECE after temperature scaling (calibrate)", group="calibration", decimals=4,
    calibrated_of="ece",
)  # fmt: skip
_declared("heads_mean_top1", "heads top-1 %", "higher", "each head alone, averaged", scale=100, decimals=2)
_declared(
    "ratio_error",
    "ratio-error",
    "higher",
    "diversity: disagreement over the members' errors (M >= 2)",
    group="diversity",
    bounds=(0, math.inf),
)
_declared(
    "disagreement", "disagreement", "higher", "diversity: how often two members disagree (M >= 2)", group="diversity"
)
_declared("aurc", "AURC", "lower", "area under the risk-coverage curve", group="selective", decimals=4)
for _coverage in COVERAGES:
    _declared(
        f"acc_at_{round(100 * _coverage)}",
        f"top-1 @{round(100 * _coverage)}% cov. %",
        "higher",
        f"top-1 on the {round(100 * _coverage)}% most confident",
        group="selective",
        scale=100,
        decimals=2,
    )
# the cost, the point of ensembling "for free" (measured by the trainer; train_hours is train_time_s / 3600)
_COST = {"group": "cost", "bounds": (0, math.inf)}
_declared("num_params", "params (M)", "lower", "parameters, all members", scale=1e-6, decimals=2, **_COST)
_declared("train_hours", "train h", "lower", "training time (wall clock, all workers)", **_COST)
_declared("eval_time_s", "test s", "lower", "time to predict the test set", decimals=2, **_COST)
_declared(
    "inference_images_per_s", "test img/s", "higher", "inference throughput at batch 256, all members", decimals=0,
    **_COST,
)  # fmt: skip
_declared("inference_gflops", "test GFLOP/img", "lower", "inference FLOPs per image, all members", decimals=2, **_COST)


def classification_metrics(
    head_logits: torch.Tensor, labels: torch.Tensor, average: str = "probabilities"
) -> dict[str, float]:
    """The ensemble's metrics of ``METRICS``, per-head accuracy and diversity."""
    ens = ensemble_logits(head_logits, average)
    out = {name: m.of_ensemble(ens, labels) for name, m in METRICS.items() if m.of_ensemble is not None}
    heads = [topk_accuracy(head_logits[:, i].float(), labels) for i in range(head_logits.shape[1])]
    out.update({f"head{i}_top1": a for i, a in enumerate(heads)})
    out["heads_mean_top1"] = sum(heads) / len(heads)
    out.update(diversity(head_logits, labels))
    return out


def final_metrics(
    head_logits: torch.Tensor,
    labels: torch.Tensor,
    val_logits: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    average: str = "probabilities",
) -> dict:
    """The one metric suite of a trained classifier on its test set (head logits (N, M, K)): every metric of
    ``METRICS`` (classification, selective, calibrated with ``calibrate``'s protocol: a validation split's
    temperature if given, else the test-set cross-fit) and the temperatures, with the M heads combined by
    ``average`` (recorded as ``ensemble_average``)."""
    return {
        **classification_metrics(head_logits, labels, average),
        **selective_metrics(head_logits, labels, average),
        **calibrate(head_logits, labels, val_logits, val_labels, average)[1],
        "ensemble_average": average,
    }


def metric_code() -> dict[str, dict[str, str]]:
    """The code of every metric a plugin registered: name -> its plugin's sha256 (16 hex digits) and file. Recorded
    in metrics.json beside the values; the report recomputes a value whose metric's code has changed since."""
    return {
        name: {"sha256": plugin.sha256[:16], "plugin": plugin.spec}
        for name in METRICS.names()
        if (plugin := METRICS.source(name)) is not None
    }


EPOCH_METRICS = ("top1", "nll")  # recorded at every evaluated epoch: history.csv's test_* and val_* columns


def epoch_metrics(
    head_logits: torch.Tensor, labels: torch.Tensor, average: str = "probabilities", split: str = "test"
) -> dict[str, float]:
    """The ensemble's top-1 and NLL on a split (``test_top1``, ``val_nll``, ...), in the history of every evaluated
    epoch."""
    ens = ensemble_logits(head_logits, average)
    return {f"{split}_top1": correct(ens, labels).float().mean().item(), f"{split}_nll": nll(ens, labels)}
