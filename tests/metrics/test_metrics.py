"""Metric functions against hand-computed cases."""

import math

import pytest
import torch

from harness import metrics as mt


def test_accuracy_nll_brier_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 3.0, 0.0], [1.0, 1.0, 5.0], [0.5, 0.2, 0.0]])
    labels = torch.tensor([0, 2, 2, 1])
    assert mt.topk_accuracy(logits, labels, 1) == pytest.approx(0.5)  # rows 0 and 2
    assert mt.topk_accuracy(logits, labels, 2) == pytest.approx(0.75)  # + row 3's second guess
    p = logits.softmax(-1)
    expected_nll = -sum(math.log(p[i, labels[i]].item()) for i in range(4)) / 4
    assert mt.nll(logits, labels) == pytest.approx(expected_nll, rel=1e-6)
    expected_brier = sum(((p[i] - torch.eye(3)[labels[i]]) ** 2).sum().item() for i in range(4)) / 4
    assert mt.brier(logits, labels) == pytest.approx(expected_brier, rel=1e-6)
    # perfectly confident and right: Brier 0; confidently wrong: Brier 2
    assert mt.brier(torch.tensor([[100.0, 0.0]]), torch.tensor([0])) == pytest.approx(0.0, abs=1e-6)
    assert mt.brier(torch.tensor([[100.0, 0.0]]), torch.tensor([1])) == pytest.approx(2.0, abs=1e-6)


def test_ece_by_hand():
    # two samples at confidence 0.9 (one right), two at 0.6 (both right)
    l9 = math.log(0.9 / 0.1)
    l6 = math.log(0.6 / 0.4)
    logits = torch.tensor([[l9, 0.0], [l9, 0.0], [l6, 0.0], [l6, 0.0]])
    labels = torch.tensor([0, 1, 0, 0])
    # bins: |0.9 - 0.5| * 2/4 + |0.6 - 1.0| * 2/4 = 0.2 + 0.2
    assert mt.ece(logits, labels) == pytest.approx(0.4, abs=1e-5)
    count, conf, acc = mt.calibration_bins(logits, labels)
    assert count.sum() == 4 and int(count[13]) == 2 and int(count[8]) == 2  # (13/15, 14/15] and (8/15, 9/15]


def test_diversity_counts_pairs_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 0])
    # head predictions: h0 = [0, 1, 1, 0, 1], h1 = [0, 0, 1, 1, 1]
    h0 = torch.tensor([0, 1, 1, 0, 1])
    h1 = torch.tensor([0, 0, 1, 1, 1])
    head_logits = torch.stack([torch.nn.functional.one_hot(h, 2).float() for h in (h0, h1)], 1)
    d = mt.diversity(head_logits, labels)
    # N00 (both wrong) = 2 (samples 2, 4); single errors = 2 (samples 1, 3)
    assert d["ratio_error"] == pytest.approx(1.0)
    assert d["disagreement"] == pytest.approx(2 / 5)


def test_the_two_aggregation_rules_on_the_same_heads():
    """ "logits": the MixMo authors' mean of the heads' logits; "probabilities": the members' mean softmax (deep
    ensembles), checked against scikit-learn's log loss and accuracy on the averaged probabilities."""
    from sklearn.metrics import accuracy_score, log_loss

    head_logits = torch.tensor([[[4.0, 0.0], [0.0, 1.0]]])  # (N=1, M=2, K=2)
    assert torch.allclose(mt.ensemble_logits(head_logits, "logits"), torch.tensor([[2.0, 0.5]]))
    m = mt.classification_metrics(head_logits, torch.tensor([0]), "logits")
    assert m["top1"] == 1.0 and m["head0_top1"] == 1.0 and m["head1_top1"] == 0.0
    assert m["heads_mean_top1"] == 0.5
    assert m["nll"] == pytest.approx(-math.log(torch.tensor([2.0, 0.5]).softmax(0)[0].item()), rel=1e-6)
    torch.manual_seed(0)
    heads, labels = 3 * torch.randn(500, 4, 7), torch.randint(0, 7, (500,))
    mean_probs = heads.softmax(-1).mean(1).double().numpy()
    assert torch.allclose(mt.ensemble_logits(heads).softmax(-1).double(), torch.from_numpy(mean_probs), atol=1e-6)
    p = mt.classification_metrics(heads, labels)  # the default: probabilities
    assert p["nll"] == pytest.approx(log_loss(labels.numpy(), mean_probs, labels=range(7)), rel=1e-5)
    assert p["top1"] == pytest.approx(accuracy_score(labels.numpy(), mean_probs.argmax(1)))
    shift = mt.rule_shift(heads, labels)
    lg = mt.classification_metrics(heads, labels, "logits")
    assert shift["rule_shift_nll"] == pytest.approx(p["nll"] - lg["nll"]) and shift["rule_shift_nll"] != 0
    assert shift["rule_shift_ece"] == pytest.approx(p["ece"] - lg["ece"])
    one = heads[:, :1]  # one head: both rules are the head itself
    assert mt.final_metrics(one, labels) == {**mt.final_metrics(one, labels, average="logits"),
                                             "ensemble_average": "probabilities"}  # fmt: skip
    with pytest.raises(ValueError, match="ensemble_average 'median': one of probabilities, logits"):
        mt.ensemble_logits(heads, "median")


def test_temperature_scaling_lowers_nll_of_overconfident_logits():
    torch.manual_seed(0)
    n, k = 4000, 10
    clean = 2 * torch.randn(n, k)
    labels = torch.distributions.Categorical(logits=clean).sample()  # clean logits are calibrated...
    overconfident = 4 * clean  # ...and 4x them over-confident
    t = mt.fit_temperature(overconfident, labels)
    assert 3.0 < t < 5.5  # recovers roughly the factor 4
    assert mt.nll(overconfident / t, labels) < 0.8 * mt.nll(overconfident, labels)
    heads = overconfident.unsqueeze(1)
    cal = mt.calibrate(heads, labels)[1]
    assert cal["cal_nll"] < mt.nll(overconfident, labels) and cal["cal_ece"] < mt.ece(overconfident, labels)
    assert "cross-fit" in cal["calibration_protocol"]
    # the cross-fit exactly: each half scaled by the T fitted on the other, metrics over all images
    t_a, t_b = (
        mt.fit_temperature(overconfident[:2000], labels[:2000]),
        mt.fit_temperature(overconfident[2000:], labels[2000:]),
    )
    scaled = torch.cat([overconfident[:2000] / t_b, overconfident[2000:] / t_a])
    assert cal["temperatures"] == [t_a, t_b] and cal["temperature"] == (t_a + t_b) / 2
    assert cal["cal_nll"] == mt.nll(scaled, labels) and cal["cal_ece"] == mt.ece(scaled, labels)
    cal_val = mt.calibrate(heads[:2000], labels[:2000], heads[2000:], labels[2000:])[1]
    assert "validation" in cal_val["calibration_protocol"]
    assert cal_val["cal_nll"] < mt.nll(overconfident[:2000], labels[:2000])


def test_one_correctness_rule_on_tied_top_logits():
    """Image 0's two top logits tie; the label is the second of them. Every metric must call it wrong, as
    argmax (the first largest) does: top-1, the ECE's accuracy, AUROC's and AURC's right/wrong flags."""
    logits = torch.tensor([[[3.0, 3.0, 0.0]], [[0.0, 5.0, 1.0]], [[2.0, 0.0, 0.0]]])  # (N=3, M=1, K=3)
    labels = torch.tensor([1, 1, 0])
    m = mt.final_metrics(logits, labels)
    assert m["top1"] == pytest.approx(2 / 3) and m["heads_mean_top1"] == pytest.approx(2 / 3)
    assert m["top5"] == 1.0
    count, _, acc = mt.calibration_bins(mt.ensemble_logits(logits), labels)
    assert (acc * count).sum().item() == pytest.approx(2)  # two right images in the bins
    # the wrong image (tie, confidence ~0.49) is the least confident: AUROC 1, no risk until it is kept
    assert m["misclassification_auroc"] == 1.0
    assert m["aurc"] == pytest.approx((0 + 0 + 1 / 3) / 3)


def test_the_suite_names_every_metric_it_computes_and_the_report_shows_them():
    """A metric the suite computes without an entry in METRICS would reach metrics.json but not the report."""
    from analysis.tables import metric_columns

    torch.manual_seed(0)
    m = mt.final_metrics(torch.randn(200, 2, 10), torch.randint(0, 10, (200,)))
    facts = {"head0_top1", "head1_top1", "temperature", "temperatures", "calibration_protocol", "ensemble_average"}
    assert set(m) - facts == {name for name, metric in mt.METRICS.items() if metric.group != "cost"}
    shown = [c[0] for c in metric_columns() + metric_columns("selective")]
    assert all(name in shown for name in mt.METRICS)
    assert [c[0] for c in metric_columns()][-5:] == [n for n, x in mt.METRICS.items() if x.group == "cost"]


def test_a_new_metric_is_one_entry_and_reaches_the_suite_the_tables_and_the_terminal():
    """Registered once with its group and headline flag: computed by the one suite (training, evaluation, deep
    ensembles), a column of its group's table with its direction and bounds, a column of the compact table."""
    import pandas as pd

    from analysis import tables
    from analysis.summary import compact_table

    @mt.register_metric("top1_error", "error %", direction="lower", scale=100, group="accuracy", headline=True)
    def top1_error(logits, labels):
        """top-1 error"""
        return 1 - mt.topk_accuracy(logits, labels)

    try:
        torch.manual_seed(0)
        logits, labels = torch.randn(100, 2, 10), torch.randint(0, 10, (100,))
        m = mt.final_metrics(logits, labels)
        assert m["top1_error"] == pytest.approx(1 - m["top1"])
        assert ("top1_error", "error %", 100, 3) in tables.metric_columns()
        assert "top1_error" not in [c[0] for c in tables.metric_columns("selective")]
        assert tables.metric_bounds("top1_error") == (0.0, 1.0) and "top1_error" in mt.headline_metrics()
        main = pd.DataFrame({"network": ["wrn"], "method": ["vanilla"], "n": [1], "top-1 %": [50.0], "error %": [50.0]})
        assert "error %" in compact_table(main).splitlines()[0]
        line = mt.headline_text({"top1": 0.5, "top1_error": 0.5, "nll": 2.0})
        assert line == "top-1 50.00%, NLL 2.000, error 50.000%"
        from harness.commands.train import format_summary
        from helpers import tiny_config

        summary = format_summary(tiny_config(), {**m, "num_params": 1000, "train_time_s": 36.0}).splitlines()
        accuracy = next(line for line in summary if line.startswith("accuracy"))
        assert "top-1 " in accuracy and f"error {100 * m['top1_error']:.3f}%" in accuracy
        assert any(line.startswith("cost") and "train h 0.010" in line for line in summary)
        with pytest.raises(ValueError, match="group is one of accuracy, calibration"):
            mt.register_metric("x", "x", direction="lower", group="speed")
    finally:
        mt.METRICS._entries.pop("top1_error"), mt.METRICS._sources.pop("top1_error")


def _lbfgs_temperature(logits, labels):
    """The temperature fit before it became a 1-D solve: LBFGS on log T through autograd (float32)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits.float() / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return log_t.exp().item()


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 10.0])
def test_the_temperature_is_the_nll_minimum_found_by_scipy_and_never_worse_than_lbfgs(scale):
    from scipy.optimize import minimize_scalar

    g = torch.Generator().manual_seed(int(scale * 10))
    labels = torch.randint(0, 100, (5000,), generator=g)
    logits = torch.randn(5000, 100, generator=g) * scale
    logits[torch.arange(5000), labels] += 1.5 * scale
    z = logits.double()

    def nll64(log_t: float) -> float:
        return torch.nn.functional.cross_entropy(z / math.exp(log_t), labels).item()

    reference = math.exp(minimize_scalar(nll64, bounds=(-6, 6), method="bounded", options={"xatol": 1e-10}).x)
    t = mt.fit_temperature(logits, labels)
    assert t == pytest.approx(reference, rel=1e-6)
    old = _lbfgs_temperature(logits, labels)
    assert nll64(math.log(t)) <= nll64(math.log(old)) + 1e-9  # LBFGS in float32 stops short of the minimum
    assert t == pytest.approx(old, rel=2e-3) and nll64(math.log(t)) == pytest.approx(nll64(math.log(old)), abs=5e-6)


def test_temperature_bounds_where_the_nll_has_no_minimum():
    labels = torch.arange(10) % 3
    separable = torch.nn.functional.one_hot(labels, 3).float() * 10  # every image right: T -> 0 keeps lowering it
    assert mt.fit_temperature(separable, labels) == pytest.approx(math.exp(mt.LOG_T_BOUNDS[0]), rel=1e-6)
