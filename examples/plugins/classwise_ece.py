"""Classwise ECE (Kull et al., "Beyond temperature scaling", NeurIPS 2019), as a harness metric plugin: one file.

For each class k, the images are binned by their predicted probability of k (15 equal-width bins); the class's
error is the bin-weighted |frequency of k - mean probability of k|; classwise ECE is its mean over classes. It
sees the calibration of every probability, not only the top one (ECE). Computed for every trial that trains with
the plugin loaded, and by `harness report --plugin classwise_ece.py` from the saved logits of trials that
finished without it.
"""

import torch

from harness.metrics import register_metric

BINS = 15


@register_metric("classwise_ece", "cw-ECE", direction="lower", decimals=5)
def classwise_ece(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Classwise ECE (Kull et al. 2019): the mean over classes of each class's binned calibration error."""
    probs = logits.float().softmax(-1)  # (N, K)
    n, k = probs.shape
    truth = torch.nn.functional.one_hot(labels, k).float()
    bins = (probs * BINS).long().clamp_max(BINS - 1)  # (N, K): bin of each class probability
    flat = bins + BINS * torch.arange(k)  # one bin index per (class, bin)
    conf = torch.bincount(flat.flatten(), probs.flatten(), minlength=k * BINS)
    freq = torch.bincount(flat.flatten(), truth.flatten(), minlength=k * BINS)
    # sum over a class's bins of |sum of p_k - count of k| / n = sum_b (n_b / n) |freq_b - conf_b|; mean over classes
    return float((conf - freq).abs().sum() / (n * k))
