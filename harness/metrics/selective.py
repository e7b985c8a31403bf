"""Selective prediction: keep the most confident images, abstain on the rest (the risk-coverage curve, AURC and
the accuracy at fixed coverages)."""

from __future__ import annotations

import numpy as np
import torch

from harness.metrics.scores import correct, ensemble_logits, tie_groups

COVERAGES = (0.90, 0.95)  # selective prediction: top-1 on the most confident 90% and 95% of the images


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
