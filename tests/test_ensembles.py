import pytest

from analysis.ensembles import compose_ensemble
from harness.config import TrialConfig
from helpers import finished_trial


def fake_trial(root, seed, logits, labels, width=2):
    cfg = TrialConfig(method="cutmix", depth=10, width=width, seed=seed, name="s", output_dir=root)
    return finished_trial(cfg, logits, labels)


def test_ensemble_averages_member_logits_exactly(tmp_path):
    labels = [0, 1, 1]
    a = fake_trial(tmp_path, 0, [[[2.0, 0.0]], [[0.0, 1.0]], [[3.0, 0.0]]], labels)  # right, right, wrong
    b = fake_trial(tmp_path, 1, [[[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 4.0]]], labels)  # wrong, wrong, right
    m = compose_ensemble([a, b])
    # averaged logits: [1, .5] -> 0 (right), [.5, .5] -> tie -> 0 (wrong), [1.5, 2] -> 1 (right)
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["head0_top1"] == pytest.approx(2 / 3) and m["head1_top1"] == pytest.approx(1 / 3)
    assert m["members"] == 2 and m["seeds"] == [0, 1]
    assert m["disagreement"] == pytest.approx(1.0)


def test_members_must_differ_only_by_seed(tmp_path):
    a = fake_trial(tmp_path, 0, [[[1.0, 0.0]]], [0])
    b = fake_trial(tmp_path, 1, [[[1.0, 0.0]]], [0], width=4)
    with pytest.raises(ValueError, match="differs .* in width"):
        compose_ensemble([a, b])
