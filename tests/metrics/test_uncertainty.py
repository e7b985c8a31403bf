"""OOD detection, selective prediction and corruption metrics against values worked out by hand (ties included)."""

import math

import numpy as np
import pytest
import torch

from harness.metrics import risk_coverage, selective_metrics
from harness.metrics.uncertainty import (
    average_precision,
    confidence_scores,
    corruption_metrics,
    detection_metrics,
    fpr_at_tpr,
    ood_metrics,
    roc_curve,
)

# in-distribution scores 0.9, 0.8, 0.8, 0.3; OOD 0.8, 0.5, 0.1: the 0.8s tie across the two sets
IN = np.array([0.9, 0.8, 0.8, 0.3])
OUT = np.array([0.8, 0.5, 0.1])


def test_detection_metrics_by_hand_with_ties():
    m = detection_metrics(IN, OUT)
    # AUROC: pairs (in > out) + 1/2 (ties) over 12: 0.9 beats 3; each 0.8 beats 2 and ties 1; 0.3 beats 1
    assert m["auroc"] == pytest.approx(9 / 12)
    # AUPR-in: thresholds 0.9 (tp 1, fp 0), 0.8 (tp 3, fp 1), 0.5, 0.3 (tp 4, fp 2), 0.1
    assert m["aupr_in"] == pytest.approx(1 / 4 * 1 + 2 / 4 * 3 / 4 + 1 / 4 * 4 / 6)
    # AUPR-out (OOD positive, scores negated): -0.1 (tp 1), -0.3 (fp 1), -0.5 (tp 2), -0.8 (tp 3, fp 3), -0.9
    assert m["aupr_out"] == pytest.approx(1 / 3 * (1 + 2 / 3 + 3 / 6))
    # 95% of 4 in-distribution images needs all 4: threshold 0.3 keeps 0.8 and 0.5 of the OOD ones
    assert m["fpr95"] == pytest.approx(2 / 3)


def test_tie_groups_enter_whole():
    # the in-distribution image tied with both OOD ones: reaching it accepts them too
    assert fpr_at_tpr(np.array([1.0, 0.5, 0.5, 0.5]), np.array([True, True, False, False]), 0.95) == 1.0
    assert fpr_at_tpr(np.array([1.0, 0.5, 0.5, 0.5]), np.array([True, True, False, False]), 0.5) == 0.0
    # all scores equal: one threshold, precision 1/2 at full recall; AUROC 1/2
    assert average_precision(np.zeros(4), np.array([True, False, True, False])) == pytest.approx(0.5)
    assert detection_metrics(np.zeros(2), np.zeros(2))["auroc"] == pytest.approx(0.5)
    fpr, tpr = roc_curve(np.r_[IN, OUT], np.r_[np.ones(4, bool), np.zeros(3, bool)])
    assert fpr.tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert tpr.tolist() == pytest.approx([0, 1 / 4, 3 / 4, 3 / 4, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(9 / 12)  # the curve's area is the AUROC, ties as diagonals


def test_perfect_and_reversed_detection():
    m = detection_metrics(np.array([3.0, 2.0]), np.array([1.0, 0.0]))
    assert (m["auroc"], m["aupr_in"], m["aupr_out"], m["fpr95"]) == (1.0, 1.0, 1.0, 0.0)
    m = detection_metrics(np.array([0.0, 1.0]), np.array([2.0, 3.0]))
    assert m["auroc"] == 0.0 and m["fpr95"] == 1.0


def test_risk_coverage_ties_spread_errors():
    # confidences 0.9 (right), 0.7 (wrong), 0.7 (right), 0.2 (wrong): the tie's error is half in each order
    coverage, risk = risk_coverage(np.array([0.9, 0.7, 0.7, 0.2]), np.array([True, False, True, False]))
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0, 0.5 / 2, 1 / 3, 2 / 4])


def test_selective_metrics_by_hand():
    # 10 images, ensemble confidence falls with the index; the two least confident are wrong, so are #3
    k = 10
    conf = torch.linspace(5, 1, k)
    logits = torch.stack([conf, torch.zeros(k)], -1)[:, None]  # (10, 1, 2): predicts class 0
    labels = torch.zeros(k, dtype=torch.long)
    labels[[3, 8, 9]] = 1
    m = selective_metrics(logits, labels)
    errors = np.cumsum([0, 0, 0, 1, 0, 0, 0, 0, 1, 1])
    assert m["aurc"] == pytest.approx(np.mean(errors / np.arange(1, k + 1)))
    assert m["acc_at_90"] == pytest.approx(1 - 2 / 9)  # the 9 most confident
    assert m["acc_at_95"] == pytest.approx(1 - 3 / 10)  # ceil(9.5) = 10


def test_ensemble_scores():
    big = 30.0
    # head 1 certain of class 0, head 2 of class 1: mutual information log 2, disagreement 1
    heads = torch.tensor([[[big, 0.0], [0.0, big]], [[big, 0.0], [big, 0.0]]])
    s = confidence_scores(heads)
    assert -s["mutual_information"][0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert -s["mutual_information"][1].item() == pytest.approx(0, abs=1e-6)
    assert s["disagreement"].tolist() == [-1.0, 0.0]
    three = torch.zeros(1, 3, 2)
    three[0, 2, 1] = 1.0  # top-1 of the heads: 0, 0, 1 -> 2 of 3 pairs differ
    assert confidence_scores(three)["disagreement"].item() == pytest.approx(-2 / 3)
    assert set(confidence_scores(heads[:, :1])) == {"msp", "max_logit", "entropy"}  # one head: no ensemble score
    msp, ent = s["msp"][1].item(), -s["entropy"][1].item()
    assert msp == pytest.approx(1.0) and ent == pytest.approx(0, abs=1e-6)


def test_ood_metrics_need_both_sides():
    with pytest.raises(ValueError, match="in-distribution"):
        ood_metrics(torch.zeros(0, 1, 3), torch.zeros(2, 1, 3))
    scores = ood_metrics(torch.randn(20, 2, 5), torch.randn(10, 2, 5))
    assert set(scores) == {"msp", "max_logit", "entropy", "mutual_information", "disagreement"}


def test_corruption_summary_averages_the_benchmark_corruptions():
    def part(right_per_severity):
        rows = [(s, r) for s, n in enumerate(right_per_severity, 1) for r in [1] * n + [0] * (4 - n)]
        severity = np.array([s for s, _ in rows])
        labels = torch.zeros(len(rows), dtype=torch.long)
        logits = torch.tensor([[[5.0, 0.0]] if r else [[0.0, 5.0]] for _, r in rows])
        return logits, labels, severity

    parts = {"a": part([4, 3, 2, 1, 0]), "b": part([4, 4, 4, 4, 4]), "extra": part([0, 0, 0, 0, 0])}
    out = corruption_metrics(parts, ("a", "b", "missing"))
    assert out["per_corruption"]["a"]["2"]["top1"] == 0.75
    assert out["per_corruption"]["a"]["2"]["images"] == 4
    assert out["by_severity"]["5"]["top1"] == 0.5  # mean of a (0) and b (1); the extra one is left out
    assert out["summary"]["corrupted_top1"] == pytest.approx((10 / 20 + 1) / 2)
    assert out["summary"]["corruptions_in_mean"] == 2
    assert "cal_ece" not in out["per_corruption"]["a"]["1"]  # no temperature, no calibrated numbers
    scaled = corruption_metrics(parts, ("a", "b"), temperature=2.0)
    logits, labels, severity = parts["a"]
    rows = torch.from_numpy(np.flatnonzero(severity == 2))
    expected = torch.nn.functional.cross_entropy(logits[rows, 0] / 2.0, labels[rows]).item()
    assert scaled["per_corruption"]["a"]["2"]["cal_nll"] == pytest.approx(expected)
    assert scaled["per_corruption"]["a"]["2"]["nll"] == out["per_corruption"]["a"]["2"]["nll"]
    assert scaled["summary"]["corrupted_cal_nll"] == pytest.approx(
        np.mean([scaled["per_corruption"][c][s]["cal_nll"] for c in "ab" for s in "12345"])
    )


def test_three_corruption_conventions_from_the_same_logits():
    """15-mean (the benchmark's), uncertainty-baselines' 17 (no motion blur or snow, four extras) and MixMo's
    pooled set, each computed from the same per-image logits."""
    from harness.data.eval_sets import CORRUPTIONS
    from harness.metrics import ece, nll
    from harness.metrics.uncertainty import corruption_metrics

    torch.manual_seed(0)
    n = 40
    parts, cells = {}, {}
    for name in ("motion_blur", "brightness", "saturate"):  # benchmark only, both, uncertainty-baselines' only
        heads, labels = 2 * torch.randn(2 * n, 1, 5), torch.randint(0, 5, (2 * n,))
        parts[name] = (heads, labels, np.repeat([1, 2], n))
        cells[name] = (heads[:, 0], labels)
    s = corruption_metrics(parts, CORRUPTIONS, ub17=True)["summary"]
    assert not any(k.startswith("ub17_") for k in corruption_metrics(parts, CORRUPTIONS)["summary"])  # CIFAR-10-C

    def top1(names):  # equal cells: the mean over corruptions and severities is the mean over their images
        return float(np.mean([(cells[c][0].argmax(-1) == cells[c][1]).float().mean() for c in names]))

    assert s["corrupted_top1"] == pytest.approx(top1(["motion_blur", "brightness"]))
    assert s["ub17_top1"] == pytest.approx(top1(["brightness", "saturate"])) and s["ub17_corruptions"] == 2
    pooled_logits = torch.cat([cells[c][0] for c in parts])
    pooled_labels = torch.cat([cells[c][1] for c in parts])
    assert s["pooled_top1"] == pytest.approx(top1(list(parts)))
    assert s["pooled_nll"] == pytest.approx(nll(pooled_logits, pooled_labels), rel=1e-6)
    assert s["pooled_ece"] == pytest.approx(ece(pooled_logits, pooled_labels), rel=1e-6)
    assert s["pooled_corruptions"] == 3


def test_ub17_is_cifar100_c_alone():
    """uncertainty-baselines' 17-corruption list is CIFAR-100-C's: a CIFAR-10-C (or Tiny ImageNet-C) record has no
    UB-17 average, generated stand-ins follow their dataset."""
    from harness.evaluation.kinds.corruption import ub17_applies

    assert ub17_applies("cifar100-c") and ub17_applies("cifar100-c-generated")
    assert not ub17_applies("cifar10-c") and not ub17_applies("cifar10-c-generated")
    assert not ub17_applies("tinyimagenet-c") and not ub17_applies("nonsense")
