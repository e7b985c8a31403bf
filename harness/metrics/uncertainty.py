"""Beyond clean top-1, from saved head logits (N, M, K): robustness to corruptions, out-of-distribution
detection and selective prediction.

Every score is a confidence (higher = more in-distribution). Ties between scores are handled exactly:
thresholds are the distinct score values (as ``sklearn.metrics.roc_curve``), and a risk at a coverage
that cuts through a tie group is its expectation over the tied images' orders.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from harness.metrics import auroc, ensemble_logits, predictions, shift_metrics, tie_groups

# OOD scores, name -> (label, what it is); the last two need M >= 2 heads: what an ensemble of heads adds over one
# network. Every score is a confidence (higher = more in-distribution).
OOD_SCORES = {
    "msp": ("max softmax prob.", "maximum softmax probability of the ensemble"),
    "max_logit": ("max logit", "maximum of the ensemble's (head-averaged) logits"),
    "entropy": ("entropy", "minus the predictive entropy of the ensemble"),
    "mutual_information": ("mutual information", "minus the mutual information between prediction and head (M >= 2)"),
    "disagreement": ("head disagreement", "minus the share of head pairs whose top-1 differ (M >= 2)"),
}


class Detection(NamedTuple):
    """A detection metric (``detection_metrics``): its label, direction and range (shown as percentages)."""

    label: str
    direction: str
    bounds: tuple[float, float] = (0.0, 1.0)  # every one is a rate or an area under a curve in the unit square


DETECTION_METRICS = {
    "auroc": Detection("AUROC %", "higher"),
    "aupr_in": Detection("AUPR-in % (AP)", "higher"),  # average precision (scikit-learn's)
    "aupr_out": Detection("AUPR-out % (AP)", "higher"),
    "aupr_in_trapezoid": Detection("AUPR-in % (trapezoid)", "higher"),  # OpenOOD's: the PR curve's trapezoidal area
    "aupr_out_trapezoid": Detection("AUPR-out % (trapezoid)", "higher"),
    "fpr95": Detection("FPR@95 % (ID +)", "lower"),  # in-distribution images positive (ODIN's)
    "fpr95_ood": Detection("FPR@95 % (OOD +)", "lower"),  # OOD images positive (OpenOOD's)
}
# uncertainty-baselines' CIFAR-100-C set (its utils.load_corrupted_test_info): the 15 of the benchmark without
# motion blur and snow, plus the four extra ones
UB_CIFAR100_C = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "glass_blur", "gaussian_blur",
    "gaussian_noise", "impulse_noise", "jpeg_compression", "pixelate", "saturate", "shot_noise", "spatter",
    "speckle_noise", "zoom_blur",
)  # fmt: skip
# the corruption averages in use, each labelled in the report
CONVENTIONS = {
    "corrupted": "mean over the benchmark's 15 corruptions x 5 severities (Hendrycks & Dietterich)",
    "ub17": "mean over uncertainty-baselines' 17 CIFAR-100-C corruptions x 5 severities",
    "pooled": "every corruption file x severity pooled into one test set (the MixMo authors')",
}


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def confidence_scores(head_logits: torch.Tensor, average: str = "probabilities") -> dict[str, torch.Tensor]:
    """Per image, every score of ``OOD_SCORES`` that the number of heads allows (higher = more confident).
    The ensemble's prediction combines the heads by ``average`` (MSP, entropy); the max logit is that of the
    heads' mean logits (a logit score needs logits); the mutual information is that of the heads'
    probabilities, H(mean_m p_m) - mean_m H(p_m), the usual (non-negative) ensemble definition."""
    heads = head_logits.double()
    probs = ensemble_logits(heads, average).double().softmax(-1)
    max_logit = heads.mean(1).max(-1).values
    scores = {"msp": probs.max(-1).values, "max_logit": max_logit, "entropy": -_entropy(probs)}
    m = heads.shape[1]
    if m >= 2:
        head_probs = heads.softmax(-1)
        mean_probs = head_probs.mean(1)
        scores["mutual_information"] = -(_entropy(mean_probs) - _entropy(head_probs).mean(1))
        preds = predictions(heads)
        pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
        scores["disagreement"] = -torch.stack([(preds[:, i] != preds[:, j]).double() for i, j in pairs]).mean(0)
    return scores


def precision_recall(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """(recall gained, recall, precision) at each distinct score from the highest down (a tie group enters whole);
    None without both classes."""
    positives = np.asarray(positives, bool)
    n_pos = positives.sum()
    if n_pos == 0 or n_pos == len(positives):
        return None
    pos, neg = tie_groups(np.asarray(scores, np.float64), positives)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    return pos / n_pos, tp / n_pos, tp / (tp + fp)


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AUPR as average precision: sum over thresholds (distinct scores, highest first) of the recall gained
    times the precision at that threshold (ties enter together, as in sklearn)."""
    curve = precision_recall(scores, positives)
    if curve is None:
        return float("nan")
    gained, _, precision = curve
    return float(np.sum(gained * precision))


def trapezoidal_aupr(scores: np.ndarray, positives: np.ndarray) -> float:
    """AUPR as OpenOOD v1.5 computes it: the trapezoidal area under the precision-recall curve, one point per
    distinct score (highest first) and the curve's start at (recall 0, precision 1): scikit-learn's
    ``auc(recall, precision)`` of ``precision_recall_curve``. It differs from average precision where scores tie
    or saturate (a tie group is one point, joined to the previous by a straight line)."""
    curve = precision_recall(scores, positives)
    if curve is None:
        return float("nan")
    recall, precision = np.r_[0.0, curve[1]], np.r_[1.0, curve[2]]
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2))


def fpr_at_tpr(scores: np.ndarray, positives: np.ndarray, tpr: float = 0.95) -> float:
    """The share of negatives accepted at the highest threshold that accepts at least ``tpr`` of the
    positives (score >= threshold accepted; a tie group is accepted whole)."""
    positives = np.asarray(positives, bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    pos, neg = tie_groups(np.asarray(scores, np.float64), positives)
    reached = np.flatnonzero(np.cumsum(pos) >= tpr * n_pos - 1e-9)[0]
    return float(np.cumsum(neg)[reached] / n_neg)


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) from (0, 0) to (1, 1), one point per distinct score."""
    positives = np.asarray(positives, bool)
    pos, neg = tie_groups(np.asarray(scores, np.float64), positives)
    return np.r_[0, np.cumsum(neg) / max(neg.sum(), 1)], np.r_[0, np.cumsum(pos) / max(pos.sum(), 1)]


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray) -> dict[str, float]:
    """In-distribution images as positives: AUROC, AUPR-in (in = positive, score as is), AUPR-out (out =
    positive, score negated), each AUPR as average precision and as OpenOOD's trapezoidal area, and FPR at 95%
    TPR in both conventions: ``fpr95`` with the in-distribution images positive (ODIN's: the share of OOD images
    kept when 95% of in-distribution ones are) and ``fpr95_ood`` with the OOD images positive (OpenOOD's: the
    share of in-distribution images flagged when 95% of OOD ones are)."""
    scores = np.concatenate([in_scores, out_scores]).astype(np.float64)
    is_in = np.r_[np.ones(len(in_scores), bool), np.zeros(len(out_scores), bool)]
    return {
        "auroc": auroc(torch.from_numpy(scores), torch.from_numpy(is_in)),
        "aupr_in": average_precision(scores, is_in),
        "aupr_out": average_precision(-scores, ~is_in),
        "aupr_in_trapezoid": trapezoidal_aupr(scores, is_in),
        "aupr_out_trapezoid": trapezoidal_aupr(-scores, ~is_in),
        "fpr95": fpr_at_tpr(scores, is_in, 0.95),
        "fpr95_ood": fpr_at_tpr(-scores, ~is_in, 0.95),
    }


def ood_metrics(
    in_heads: torch.Tensor, out_heads: torch.Tensor, average: str = "probabilities"
) -> dict[str, dict[str, float]]:
    """Every score's detection metrics, the in-distribution test set always one side of the comparison."""
    if len(in_heads) == 0 or len(out_heads) == 0:
        raise ValueError("OOD detection needs in-distribution and OOD images")
    ins, outs = confidence_scores(in_heads, average), confidence_scores(out_heads, average)
    return {name: detection_metrics(ins[name].numpy(), outs[name].numpy()) for name in ins}


# --- corruptions
def corruption_metrics(
    parts: dict[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]],
    benchmark: tuple[str, ...],
    temperature: float | None = None,
    average: str = "probabilities",
    ub17: bool = False,
) -> dict:
    """``parts``: corruption -> (head logits, labels, severity per image). The metric suite of the ensemble per
    corruption and severity (harness.metrics.shift_metrics: every metric, and with ``temperature``, the one
    fitted on clean images, the calibrated ones: calibration under shift); per severity and overall, their means over
    the ``benchmark`` corruptions present (the reference tables' "mean over 15 corruptions x 5 severities"; all
    present ones if none is). Beside it, the two other conventions in use (``CONVENTIONS``): uncertainty-
    baselines' 17 corruptions (``ub17_*``, only with ``ub17``: the list is CIFAR-100-C's) and MixMo's pooled set,
    every corruption file x severity concatenated into one test set (``pooled_*``)."""
    per: dict[str, dict[str, dict[str, float]]] = {}
    pooled = []
    for name, (heads, labels, severity) in parts.items():
        ens = ensemble_logits(heads, average)
        pooled.append((ens, labels))
        per[name] = {}
        for s in sorted(set(severity.tolist())):
            rows = torch.from_numpy(np.flatnonzero(severity == s))
            per[name][str(s)] = {**shift_metrics(ens[rows], labels[rows], temperature), "images": len(rows)}
    first_cell = next(cell for cells in per.values() for cell in cells.values())
    names = [m for m in first_cell if m != "images"]  # shift_metrics' keys
    in_mean = [c for c in benchmark if c in per] or list(per)
    severities = sorted({s for c in in_mean for s in per[c]}, key=int)
    by_severity = {
        s: {m: float(np.mean([per[c][s][m] for c in in_mean if s in per[c]])) for m in names} for s in severities
    }
    cells = [per[c][s] for c in in_mean for s in per[c]]
    summary = {f"corrupted_{m}": float(np.mean([cell[m] for cell in cells])) for m in names}
    summary.update(corruptions_in_mean=len(in_mean), benchmark_corruptions=len(benchmark))
    ub17_present = [c for c in UB_CIFAR100_C if c in per] if ub17 else []
    if ub17_present:
        cells17 = [per[c][s] for c in ub17_present for s in per[c]]
        summary.update({f"ub17_{m}": float(np.mean([cell[m] for cell in cells17])) for m in names})
        summary["ub17_corruptions"] = len(ub17_present)
    logits, y = torch.cat([p[0] for p in pooled]), torch.cat([p[1] for p in pooled])
    summary.update({f"pooled_{m}": v for m, v in shift_metrics(logits, y, temperature).items()})
    summary["pooled_corruptions"] = len(per)
    return {"per_corruption": per, "by_severity": by_severity, "summary": summary, "temperature": temperature}
