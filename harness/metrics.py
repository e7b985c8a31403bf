"""Evaluation metrics on saved head logits (N, M, K): the ensemble averages the M heads' logits."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

ECE_BINS = 15


def ensemble_logits(head_logits: torch.Tensor) -> torch.Tensor:
    """(N, M, K) -> (N, K): the mean of the heads' logits (docs/recipe.md §6), softmax comes after."""
    return head_logits.float().mean(1)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(-1).float().mean().item()


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return F.cross_entropy(logits.float(), labels).item()


def brier(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over samples of sum_k (p_k - y_k)^2 (ranges over [0, 2])."""
    probs = logits.float().softmax(-1)
    return (probs - F.one_hot(labels, probs.shape[-1]).float()).pow(2).sum(-1).mean().item()


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS):
    """Per equal-width confidence bin: (count, mean confidence, accuracy), on the top-1 confidence."""
    conf, pred = logits.float().softmax(-1).max(-1)
    correct = (pred == labels).float()
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1  # bin i holds (i/bins, (i+1)/bins]
    count = torch.bincount(idx, minlength=bins).float()
    sum_conf = torch.bincount(idx, weights=conf, minlength=bins)
    sum_acc = torch.bincount(idx, weights=correct, minlength=bins)
    safe = count.clamp_min(1)
    return count, sum_conf / safe, sum_acc / safe


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    count, conf, acc = calibration_bins(logits, labels, bins)
    return ((count / count.sum()) * (conf - acc).abs()).sum().item()


def tace(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS, threshold: float = 1e-3) -> float:
    """Thresholded adaptive calibration error (the authors' TACE): per class, the probabilities above
    ``threshold`` sorted into ``bins`` bins of equal count (the last one takes the remainder); the mean
    |confidence - accuracy| of each bin, weighted by its size, summed, over N * K. Empty bins add nothing."""
    probs = logits.float().softmax(-1)
    n, k = probs.shape
    total = 0.0
    for c in range(k):
        conf, order = probs[:, c].sort()
        hit = (labels[order] == c).float()
        keep = conf > threshold
        conf, hit = conf[keep], hit[keep]
        size = len(conf) // bins
        for i in range(bins):
            start, end = i * size, (i + 1) * size if i < bins - 1 else len(conf)
            if end > start:
                total += (conf[start:end].mean() - hit[start:end].mean()).abs().item() * (end - start)
    return total / (n * k)


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
    conf, pred = logits.float().softmax(-1).max(-1)
    return auroc(conf, pred == labels)


def diversity(head_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Averaged over pairs of heads: ratio-error (N01 + N10) / N00 (single errors over shared errors)
    and disagreement (share of samples whose top-1 predictions differ)."""
    preds = head_logits.argmax(-1)  # (N, M)
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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T), by LBFGS on log T."""
    logits = logits.float()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return log_t.exp().item()


def epoch_metrics(head_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The ensemble's test top-1 and NLL, in the history of every evaluated epoch."""
    ens = ensemble_logits(head_logits)
    return {"test_top1": (ens.argmax(-1) == labels).float().mean().item(), "test_nll": nll(ens, labels)}


def classification_metrics(head_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Ensemble top-1/top-5/NLL/ECE/Brier, per-head accuracy and diversity."""
    ens = ensemble_logits(head_logits)
    out = {
        "top1": topk_accuracy(ens, labels, 1),
        "top5": topk_accuracy(ens, labels, 5),
        "nll": nll(ens, labels),
        "ece": ece(ens, labels),
        "tace": tace(ens, labels),
        "brier": brier(ens, labels),
        "misclassification_auroc": misclassification_auroc(ens, labels),
    }
    heads = [topk_accuracy(head_logits[:, i].float(), labels) for i in range(head_logits.shape[1])]
    out.update({f"head{i}_top1": a for i, a in enumerate(heads)})
    out["heads_mean_top1"] = sum(heads) / len(heads)
    out.update(diversity(head_logits, labels))
    return out


def calibrate(
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    val_logits: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The one temperature-scaling protocol: the ensemble's test logits scaled, and the record of it
    (temperatures, protocol, calibrated NLL and ECE). With a validation split, one T fitted on it. Without,
    the authors' cross-fit: T_a fitted on the first half of the test set scales the second half, T_b fitted
    on the second scales the first; every test image is scored by a temperature that never saw it, and the
    calibrated metrics are those of all N scaled images together."""
    ens = ensemble_logits(test_logits)
    if val_logits is not None:
        t = fit_temperature(ensemble_logits(val_logits), val_labels)
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


def calibrated_metrics(
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    val_logits: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
) -> dict:
    """Temperature-scaled NLL and ECE of the ensemble (``calibrate``'s protocol), with the temperatures."""
    return calibrate(test_logits, test_labels, val_logits, val_labels)[1]
