"""Evaluation metrics on saved head logits (N, M, K). The M heads are combined by one declared rule
(``average``): "probabilities", the field's (deep ensembles, uncertainty-baselines, torch-uncertainty), or
"logits", the MixMo authors' (docs/recipe.md §6)."""

from __future__ import annotations

import itertools
import math
import typing
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.config import EnsembleAverage
from harness.core.registry import Registry

ECE_BINS = 15
COVERAGES = (0.90, 0.95)  # selective prediction: top-1 on the most confident 90% and 95% of the images


AVERAGES = typing.get_args(EnsembleAverage)  # how members are combined: a suite's `ensemble_average`


def ensemble_logits(head_logits: torch.Tensor, average: str = "probabilities") -> torch.Tensor:
    """(N, M, K) -> (N, K) logits of the ensemble, softmax comes after: "probabilities": log of the members' mean
    softmax (so every metric, the temperature fit and the OOD scores see the averaged probabilities); "logits":
    the mean of the heads' logits. One head: both are the head itself (same softmax, same temperature)."""
    if average not in AVERAGES:
        raise ValueError(f"ensemble_average {average!r}: one of {', '.join(AVERAGES)}")
    h = head_logits.float()
    if h.shape[1] == 1:
        return h[:, 0]
    if average == "logits":
        return h.mean(1)
    last = _LAST_COMBINED
    if last and last[0]() is head_logits and last[1] == head_logits._version:  # the metric suite asks several times
        return last[2]
    combined = torch.logsumexp(h.log_softmax(-1), 1) - math.log(h.shape[1])
    _LAST_COMBINED[:] = [weakref.ref(head_logits), head_logits._version, combined]
    return combined


_LAST_COMBINED: list = []  # (a weak reference to the heads, their version counter, their averaged probabilities)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class: the first of the largest logits (torch.argmax's rule). The one rule behind top-1,
    ECE, AUROC, AURC and every other right-or-wrong question."""
    return logits.argmax(-1)


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image, whether the prediction (``predictions``) is the label."""
    return predictions(logits) == labels


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Share of images whose label is among the k first classes of a stable descending sort of the logits: tied
    logits rank by class index, so k = 1 is exactly ``correct``."""
    k = min(k, logits.shape[-1])
    if torch.isnan(logits).any():  # a NaN ranks first in torch's sort: let the sort itself decide
        top = logits.sort(dim=-1, descending=True, stable=True).indices[:, :k]
        return (top == labels[:, None]).any(-1).float().mean().item()
    # the label's place in that sort without sorting: the classes above it, and the tied ones of lower index
    target = logits.gather(-1, labels[:, None].long())
    tied_before = (logits == target) & (torch.arange(logits.shape[-1]) < labels[:, None])
    return (((logits > target) | tied_before).sum(-1) < k).float().mean().item()


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return F.cross_entropy(logits.float(), labels).item()


def brier(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over samples of sum_k (p_k - y_k)^2 (ranges over [0, 2])."""
    probs = logits.float().softmax(-1)
    return (probs - F.one_hot(labels, probs.shape[-1]).float()).pow(2).sum(-1).mean().item()


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS):
    """Per equal-width confidence bin: (count, mean confidence, accuracy), on the top-1 confidence."""
    conf = logits.float().softmax(-1).max(-1).values
    right = correct(logits, labels).float()
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1  # bin i holds (i/bins, (i+1)/bins]
    count = torch.bincount(idx, minlength=bins).float()
    sum_conf = torch.bincount(idx, weights=conf, minlength=bins)
    sum_acc = torch.bincount(idx, weights=right, minlength=bins)
    safe = count.clamp_min(1)
    return count, sum_conf / safe, sum_acc / safe


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    count, conf, acc = calibration_bins(logits, labels, bins)
    return ((count / count.sum()) * (conf - acc).abs()).sum().item()


def tace(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS, threshold: float = 1e-3) -> float:
    """Thresholded adaptive calibration error (the authors' TACE): per class, the probabilities above
    ``threshold`` sorted into ``bins`` bins of equal count (the last one takes the remainder); the mean
    |confidence - accuracy| of each bin, weighted by its size, summed, over N * K. Empty bins add nothing.
    Computed for every class at once: a bin's |mean conf - mean hit| x size is |sum conf - sum hit|."""
    probs = logits.float().softmax(-1)
    n, k = probs.shape
    conf, order = probs.sort(dim=0)  # ascending per class: the kept probabilities are each column's last ones
    hit = (labels[order] == torch.arange(k)).double()
    kept = (conf > threshold).sum(0)  # (K,)
    zero = torch.zeros(1, k, dtype=torch.float64)
    sums = torch.cat([zero, (conf.double() - hit).cumsum(0)])  # (N + 1, K): prefix sums of conf - hit
    size = kept // bins
    start = n - kept
    edges = start[None, :] + torch.arange(bins + 1)[:, None] * size[None, :]  # (bins + 1, K)
    edges[-1] = n  # the last bin takes the remainder
    gaps = sums.gather(0, edges[1:]) - sums.gather(0, edges[:-1])  # per bin: sum conf - sum hit (0 if empty)
    return (gaps.abs().sum() / (n * k)).item()


def auroc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` separating ``positives`` (bool) from the rest: the
    Mann-Whitney statistic, ties counted one half (average ranks). nan without both classes."""
    scores, positives = scores.double().flatten(), positives.bool().flatten()
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if not n_pos or not n_neg:
        return float("nan")
    sorted_scores, order = scores.sort()
    _, inverse, counts = sorted_scores.unique_consecutive(return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1  # rank of each tie group's first member
    average = (first + (counts - 1) / 2).double()  # each member of a tie group gets the group's mean rank
    ranks = torch.empty_like(scores)
    ranks[order] = average[inverse]
    return ((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


def misclassification_auroc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """How well the top-1 confidence separates correct from wrong predictions (the authors' "auc")."""
    return auroc(logits.float().softmax(-1).max(-1).values, correct(logits, labels))


def diversity(head_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Averaged over pairs of heads: ratio-error (N01 + N10) / N00 (single errors over shared errors)
    and disagreement (share of samples whose top-1 predictions differ)."""
    preds = predictions(head_logits)  # (N, M)
    ratios, disagreements = [], []
    for i, j in itertools.combinations(range(preds.shape[1]), 2):
        wrong_i, wrong_j = preds[:, i] != labels, preds[:, j] != labels
        n00 = (wrong_i & wrong_j).sum().item()
        n_single = (wrong_i ^ wrong_j).sum().item()
        ratios.append(n_single / n00 if n00 else float("inf"))
        disagreements.append((preds[:, i] != preds[:, j]).float().mean().item())
    if not ratios:
        return {}
    return {"ratio_error": sum(ratios) / len(ratios), "disagreement": sum(disagreements) / len(disagreements)}


LOG_T_BOUNDS = (-6.0, 6.0)  # T in [0.0025, 403]: past these the NLL is flat to float precision


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T). The NLL is convex in beta = 1/T (its
    derivative: E_p[z] - z_y, averaged; its second: Var_p[z] >= 0), so a safeguarded Newton solve on beta (float64,
    bisection when a step leaves the bracket) finds it in a few passes over the logits, no autograd."""
    z = logits.double()
    y = z.gather(1, labels[:, None]).squeeze(1)
    lo, hi = math.exp(-LOG_T_BOUNDS[1]), math.exp(-LOG_T_BOUNDS[0])  # the bracket on beta

    def derivatives(beta: float) -> tuple[float, float]:
        p = (z * beta).softmax(-1)
        mean = (p * z).sum(-1)
        return (mean - y).mean().item(), ((p * z * z).sum(-1) - mean * mean).mean().item()

    beta = 1.0
    for _ in range(100):
        grad, curvature = derivatives(beta)
        if grad > 0:
            hi = beta
        else:
            lo = beta
        step = beta - grad / curvature if curvature > 0 else float("nan")
        new = step if lo < step < hi else (lo + hi) / 2
        if abs(new - beta) <= 1e-10 * beta or hi - lo <= 1e-12 * hi:
            beta = new
            break
        beta = new
    return 1.0 / beta


def temperature_at_bound(t: float) -> bool:
    """Whether a fitted temperature stopped at the search's bracket (``LOG_T_BOUNDS``): the NLL still falls
    beyond it (confidences that carry no signal, or a split too small), so T is a bound, not an optimum."""
    return abs(abs(math.log(t)) - LOG_T_BOUNDS[1]) < 1e-6 if t > 0 else True


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


def calibrate(
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    val_logits: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    average: str = "probabilities",
) -> tuple[torch.Tensor, dict]:
    """The one temperature-scaling protocol: the ensemble's test logits scaled, and the record of it
    (temperatures, protocol, calibrated NLL and ECE). With a validation split, one T fitted on it. Without,
    the authors' cross-fit: T_a fitted on the first half of the test set scales the second half, T_b fitted
    on the second scales the first; every test image is scored by a temperature that never saw it, and the
    calibrated metrics are those of all N scaled images together."""
    ens = ensemble_logits(test_logits, average)
    if val_logits is not None:
        t = fit_temperature(ensemble_logits(val_logits, average), val_labels)
        info = {
            "temperature": t,
            "temperatures": [t],
            "calibration_protocol": f"T fitted on a held-out validation split ({len(val_labels)} train images)",
        }
        return _scored(ens / t, test_labels, info)
    half = len(test_labels) // 2
    t_a = fit_temperature(ens[:half], test_labels[:half])
    t_b = fit_temperature(ens[half:], test_labels[half:])
    scaled = torch.cat([ens[:half] / t_b, ens[half:] / t_a])
    info = {
        "temperature": (t_a + t_b) / 2,
        "temperatures": [t_a, t_b],
        "calibration_protocol": (
            f"test-set cross-fit (authors'): T fitted on each half of the {len(test_labels)} test images scales "
            f"the other half; metrics over all of them"
        ),
    }
    return _scored(scaled, test_labels, info)


def _scored(scaled: torch.Tensor, labels: torch.Tensor, info: dict) -> tuple[torch.Tensor, dict]:
    return scaled, {**info, "cal_nll": nll(scaled, labels), "cal_ece": ece(scaled, labels)}


def tie_groups(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores from the highest down: per group, (positives, negatives) in it."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positives[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(p.astype(np.int64), starts)
    size = np.diff(np.r_[starts, len(s)])
    return pos, size - pos


# --- selective prediction: keep the most confident images, abstain on the rest
def risk_coverage(confidence: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage k/N, expected error rate among the k most confident) for k = 1..N; inside a tie group the
    errors are spread evenly (the expectation over the group's orders)."""
    confidence, right = np.asarray(confidence, np.float64), np.asarray(right, bool)
    n = len(confidence)
    errors_in, right_in = tie_groups(confidence, ~right)
    size = errors_in + right_in
    ends = np.cumsum(size)
    group = np.repeat(np.arange(len(size)), size)  # the tie group of the k-th kept image
    k = np.arange(1, n + 1)
    before = ends[group] - size[group]
    errors_before = np.r_[0, np.cumsum(errors_in)][group]
    expected_errors = errors_before + (k - before) * errors_in[group] / size[group]
    return k / n, expected_errors / k


def selective_metrics(
    head_logits: torch.Tensor, labels: torch.Tensor, average: str = "probabilities"
) -> dict[str, float]:
    """AURC (mean risk over coverages k/N, k = 1..N, on the ensemble's top-1 confidence) and the accuracy
    on the 90% and 95% most confident images."""
    ens = ensemble_logits(head_logits, average)
    conf = ens.softmax(-1).max(-1).values
    coverage, risk = risk_coverage(conf.numpy(), correct(ens, labels).numpy())
    out = {"aurc": float(risk.mean())}
    for c in COVERAGES:
        k = max(1, int(np.ceil(c * len(risk) - 1e-9)))
        out[f"acc_at_{round(100 * c)}"] = float(1 - risk[k - 1])
    return out


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


def rule_shift(head_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How much the aggregation rule moves top-1, NLL and ECE: probabilities minus logits (0 for one head)."""
    p, lg = ensemble_logits(head_logits, "probabilities"), ensemble_logits(head_logits, "logits")
    return {
        "rule_shift_top1": topk_accuracy(p, labels) - topk_accuracy(lg, labels),
        "rule_shift_nll": nll(p, labels) - nll(lg, labels),
        "rule_shift_ece": ece(p, labels) - ece(lg, labels),
    }
