"""harness.evaluation.ensembles: deep ensembles of hand-made members, whose metrics the math fixes."""

import pytest

from harness.evaluation.ensembles import ensemble_members, ensemble_metrics
from helpers import finished_trial, trial


def fake_trial(root, seed, logits, labels, width=2):
    cfg = trial(method="cutmix", depth=10, width=width, seed=seed, name="s", output_dir=root)
    return finished_trial(cfg, logits, labels)


def test_ensemble_averages_member_logits_exactly(tmp_path):
    labels = [0, 1, 1]
    a = fake_trial(tmp_path, 0, [[[2.0, 0.0]], [[0.0, 1.0]], [[3.0, 0.0]]], labels)  # right, right, wrong
    b = fake_trial(tmp_path, 1, [[[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 4.0]]], labels)  # wrong, wrong, right
    m = ensemble_metrics([a, b], rule="probabilities")
    # averaged logits: [1, .5] -> 0 (right), [.5, .5] -> tie -> 0 (wrong), [1.5, 2] -> 1 (right)
    assert m["top1"] == pytest.approx(2 / 3)
    assert m["head0_top1"] == pytest.approx(2 / 3) and m["head1_top1"] == pytest.approx(1 / 3)
    assert m["members"] == 2 and m["seeds"] == [0, 1]
    assert m["disagreement"] == pytest.approx(1.0)


def test_members_must_differ_only_by_seed_and_be_at_least_two(tmp_path):
    a = fake_trial(tmp_path, 0, [[[1.0, 0.0]]], [0])
    b = fake_trial(tmp_path, 1, [[[1.0, 0.0]]], [0], width=4)
    with pytest.raises(ValueError, match="differs .* in width"):
        ensemble_metrics([a, b], rule="probabilities")
    with pytest.raises(ValueError, match="a deep ensemble needs at least 2 members"):
        ensemble_metrics([a], rule="probabilities")
    with pytest.raises(ValueError, match="a deep ensemble needs at least 2 members"):
        ensemble_members([a, b], [("cutmix", [1])])


def test_seeds_form_disjoint_ensembles_of_each_size(tmp_path):
    """Five seeds, sizes 2 and 4: ensembles {0, 1} and {2, 3} of two (seed 4 left over), {0, 1, 2, 3} of four."""
    dirs = [fake_trial(tmp_path, s, [[[1.0, 0.0]], [[0.0, 1.0]]], [0, 1]) for s in range(5)]
    rows = [
        ensemble_metrics(members, rule="probabilities")
        for _, _, members in ensemble_members(dirs, [("cutmix", [2, 4])])
    ]
    assert [(r["members"], r["seeds"]) for r in rows] == [(2, [0, 1]), (2, [2, 3]), (4, [0, 1, 2, 3])]


def test_a_batch_ensembles_heads_join_a_deep_ensemble(tmp_path):
    """Family methods give (N, M, K) heads like MixMo's: a deep ensemble of two M = 4 trials has 8 heads."""
    labels = [0, 1]
    members = []
    for seed in (0, 1):
        cfg = trial(method="batch_ensemble", depth=10, width=2, seed=seed, name="s", output_dir=tmp_path)
        members.append(finished_trial(cfg, [[[1.0, 0.0]] * 4, [[0.0, 1.0]] * 4], labels))
    m = ensemble_metrics(members, rule="probabilities")
    assert m["top1"] == 1.0 and [f"head{i}_top1" in m for i in range(8)] == [True] * 8 and "head8_top1" not in m
