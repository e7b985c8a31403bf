"""The scores, as pure functions of logits and labels: the ensemble's logits under an aggregation rule, accuracy,
NLL, Brier, calibration error, AUROC and the members' diversity. The metric registry (harness.metrics) names them."""

from __future__ import annotations

import itertools
import math
import typing
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from harness.core.config import EnsembleAverage

ECE_BINS = 15
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


def tie_groups(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores from the highest down: per group, (positives, negatives) in it."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positives[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(p.astype(np.int64), starts)
    size = np.diff(np.r_[starts, len(s)])
    return pos, size - pos


def rule_shift(head_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How much the aggregation rule moves top-1, NLL and ECE: probabilities minus logits (0 for one head)."""
    p, lg = ensemble_logits(head_logits, "probabilities"), ensemble_logits(head_logits, "logits")
    return {
        "rule_shift_top1": topk_accuracy(p, labels) - topk_accuracy(lg, labels),
        "rule_shift_nll": nll(p, labels) - nll(lg, labels),
        "rule_shift_ece": ece(p, labels) - ece(lg, labels),
    }
