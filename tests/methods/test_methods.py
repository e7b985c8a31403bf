"""Mixing masks, loss weights, the patch schedule and the batch pairing of each method."""

import math

import pytest
import torch

from harness.methods import METHODS
from harness.methods.mixing import box_masks, loss_weights, patch_probability
from helpers import tiny_config


def make_method(name, num_classes=10, mix_size=16, **cfg):
    cfg = tiny_config(method=name, **cfg)
    return METHODS.get(name)(cfg, num_classes, mix_size)


def test_box_masks_are_binary_with_area_lam_in_expectation():
    torch.manual_seed(0)
    for lam in (0.1, 0.3, 0.5, 0.8):
        masks = box_masks(torch.full((4000,), lam), 32, 32)
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        assert masks.shape == (4000, 1, 32, 32)
        # Clipping at the borders loses area: the expected area lies below lam, by a bounded amount.
        side = math.floor(32 * math.sqrt(lam)) // 2 * 2 / 32
        mean = masks.mean().item()
        assert side**2 * 0.55 < mean <= side**2 + 1e-6
    # A box centred away from the border keeps its full area: floor(W sqrt(lam)) rounded to even sides.
    full = box_masks(torch.ones(1000), 32, 32)
    assert full.mean((1, 2, 3)).min() >= 0.25  # at least a quarter of the map survives any centre


def test_box_masks_without_clipping_have_exact_sides():
    torch.manual_seed(1)
    masks = box_masks(torch.full((500,), 0.25), 32, 32)  # side floor(32 * 0.5) = 16
    rows = masks[:, 0].amax(2).sum(1)
    cols = masks[:, 0].amax(1).sum(1)
    assert rows.max() == 16 and cols.max() == 16
    unclipped = (rows == 16) & (cols == 16)
    assert unclipped.any()
    assert (masks[unclipped].sum((1, 2, 3)) == 256).all()


def test_loss_weights_worked_numbers():
    lams = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    w3 = loss_weights(lams, r=3)
    a, b = 0.2 ** (1 / 3), 0.8 ** (1 / 3)
    assert torch.allclose(w3[0], torch.tensor([2 * a / (a + b), 2 * b / (a + b)]))
    assert torch.allclose(w3[0], torch.tensor([0.7730, 1.2270]), atol=1e-4)
    assert torch.allclose(w3[1], torch.ones(2))
    assert torch.allclose(w3[2], torch.tensor([0.0, 2.0]))
    # r = 1: proportional to lam
    assert torch.allclose(loss_weights(lams, r=1)[0], torch.tensor([0.4, 1.6]))
    assert torch.allclose(loss_weights(lams, r=3).sum(1), torch.full((3,), 2.0))


def test_patch_probability_decays_linearly_over_the_last_twelfth():
    start = 11 / 12
    assert patch_probability(0.5, 0.0, start) == 0.5
    assert patch_probability(0.5, 0.9, start) == 0.5
    assert patch_probability(0.5, start, start) == pytest.approx(0.5)
    assert patch_probability(0.5, 1 - 1 / 24, start) == pytest.approx(0.25)
    assert patch_probability(0.5, 1.0, start) == 0.0
    ts = [start + i / 120 for i in range(11)]
    ps = [patch_probability(0.5, t, start) for t in ts]
    assert all(x > y for x, y in zip(ps, ps[1:]))  # strictly decreasing inside the decay window


def batch(n=64, classes=10, size=16):
    x = torch.randn(n, 3, size, size)
    y = torch.arange(n) % classes
    return x, y


def test_vanilla_is_the_plain_batch_with_one_hot_targets():
    method = make_method("vanilla")
    x, y = batch()
    mb = method.prepare(x, y, progress=0.0)
    assert mb.inputs.shape == (64, 1, 3, 16, 16) and mb.mix is None
    assert torch.equal(mb.inputs[:, 0], x)
    assert torch.equal(mb.targets[:, 0], torch.nn.functional.one_hot(y, 10).float())


def test_mimo_pairs_permutations_and_sums_with_unit_weights():
    torch.manual_seed(0)
    method = make_method("mimo", M=3)
    x, y = batch()
    mb = method.prepare(x, y, progress=0.5)
    assert mb.inputs.shape == (64, 3, 3, 16, 16) and mb.mix is None  # None = plain sum in the model
    assert torch.allclose(mb.targets.sum(-1), torch.ones(64, 3))  # every loss weight is 1
    for i in range(3):  # each slot is a permutation of the batch, with matching labels
        idx = mb.inputs[:, i, 0, 0, 0].unsqueeze(1) == x[:, 0, 0, 0].unsqueeze(0)
        src = idx.float().argmax(1)
        assert sorted(src.tolist()) == list(range(64))
        assert torch.equal(mb.labels[:, i], y[src])
    assert not torch.equal(mb.inputs[:, 0], mb.inputs[:, 1])


def test_mimo_model_input_equals_the_plain_sum_of_encodings():
    from harness.models import MODELS

    torch.manual_seed(0)
    model = MODELS.get("wrn").build(10, 1, 10, 2).eval()
    x = torch.randn(4, 2, 3, 16, 16)
    enc = model.encoders(x.reshape(4, 6, 16, 16)).view(4, 2, 16, 16, 16)
    expected = model.heads(model.core(enc[:, 0] + enc[:, 1])).view(4, 2, 10)
    assert torch.allclose(model(x, None), expected, atol=1e-6)
    ones = torch.ones(4, 2, 1, 1, 1)
    assert torch.allclose(model(x, ones), expected, atol=1e-6)


def test_linear_mixmo_masks_are_constant_and_scaled_by_M():
    torch.manual_seed(0)
    method = make_method("linear_mixmo")
    x, y = batch(2000)
    mb = method.prepare(x, y, progress=0.0)
    assert mb.mix.shape == (2000, 2, 1, 1, 1)  # constant over the feature map
    lams = mb.mix.view(2000, 2) / 2
    assert torch.allclose(lams.sum(1), torch.ones(2000))
    # Beta(2, 2): mean 1/2, variance 1/20
    assert abs(lams[:, 0].mean() - 0.5) < 0.02 and abs(lams[:, 0].var() - 0.05) < 0.01
    w = mb.targets.sum(-1)
    assert torch.allclose(w, loss_weights(lams, 3.0), atol=1e-6)


def test_cut_mixmo_masks_are_binary_complementary_with_shuffled_roles():
    torch.manual_seed(0)
    method = make_method("cut_mixmo", p=1.0)  # always cut
    x, y = batch(256)
    boxed_first, lam_means = 0, []
    for _ in range(200):
        masks, lams = method.mixing(256, 0.0, x.device)
        assert masks.shape == (256, 2, 1, 16, 16)
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(masks.sum(1), torch.ones(256, 1, 16, 16))
        assert torch.allclose(lams, masks.mean((2, 3, 4)))  # lam reset to the mask's mean
        # the boxed input is the one whose mask is a rectangle of ones inside zeros
        m0 = masks[:, 0, 0]
        border = torch.cat([m0[:, 0], m0[:, -1], m0[:, :, 0], m0[:, :, -1]], 1)
        first = bool(border.mean() < 0.5)
        boxed_first += first
        lam_means.append(lams[:, 0 if first else 1].mean().item())  # the boxed input's share
    assert 70 < boxed_first < 130  # roles shuffled per batch, about half each
    # Beta(2, 2) box areas, shrunk by clipping at the border: the boxed input keeps well below 1/2 of the
    # map (0.284 measured; sd 0.009 per batch of 256, so 0.0006 for the mean of 200 batches)
    assert 0.27 < sum(lam_means) / len(lam_means) < 0.30


def test_cut_mixmo_patch_frequency_follows_p():
    torch.manual_seed(0)
    method = make_method("cut_mixmo", p=0.5)

    def is_cut(progress):
        masks, _ = method.mixing(8, progress, "cpu")
        return bool((masks.amax((2, 3, 4)) - masks.amin((2, 3, 4))).max() > 0)

    early = sum(is_cut(0.1) for _ in range(400)) / 400
    late = sum(is_cut(0.999) for _ in range(400)) / 400
    assert 0.42 < early < 0.58
    assert late < 0.05


def test_cut_mixmo_with_three_inputs_cuts_one_into_a_linear_mix_of_the_others():
    torch.manual_seed(0)
    method = make_method("cut_mixmo", M=3, p=1.0)
    masks, lams = method.mixing(64, 0.0, "cpu")
    assert torch.allclose(masks.sum(1), torch.ones(64, 1, 16, 16), atol=1e-6)
    assert torch.allclose(lams.sum(1), torch.ones(64), atol=1e-6)
    binary = [bool(((masks[:, i] == 0) | (masks[:, i] == 1)).all()) for i in range(3)]
    assert sum(binary) >= 1  # the boxed input; the others share the complement linearly


def test_batch_statistics_of_mixup_and_cutmix_single_networks():
    torch.manual_seed(0)
    x, y = batch(4000)
    for name in ("mixup", "cutmix"):
        mb = make_method(name).prepare(x, y, progress=0.0)
        own = (mb.targets[:, 0] * torch.nn.functional.one_hot(y, 10)).sum(1)
        untouched = (own == 1).float().mean().item()
        # applied with probability 0.5 (a partner of the same class also leaves the label whole)
        assert 0.45 < untouched < 0.62, name
        assert torch.allclose(mb.targets.sum(-1), torch.ones(4000, 1))


def test_cutmix_label_ratio_is_the_pasted_area():
    torch.manual_seed(0)
    n = 512  # one class per image, and image j is the constant j: pasted pixels are recognisable
    x = torch.arange(n).float().view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    y = torch.arange(n)
    mb = make_method("cutmix", num_classes=n, msda_prob=1.0).prepare(x, y, progress=0.0)
    pasted = (mb.inputs[:, 0, 0] != x[:, 0]).float().mean((1, 2))
    own_mass = mb.targets[torch.arange(n), 0, y]
    assert torch.allclose(own_mass, 1 - pasted, atol=1e-6)
    assert pasted.mean() > 0.2  # Beta(1, 1) areas, shrunk by clipping at the borders


def test_cutmix_on_top_of_cut_mixmo_counts_only_the_visible_part_of_the_box():
    torch.manual_seed(0)
    n = 256  # one class per image, and image j is the constant j: pasted pixels are recognisable
    method = make_method("cut_mixmo", num_classes=n, p=1.0, msda="cutmix", msda_prob=1.0)
    x = torch.arange(n).float().view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    y = torch.arange(n)
    mb = method.prepare(x, y, progress=0.0)
    masks = mb.mix / 2  # binary visibility of each input in the mixed features
    w = loss_weights(masks.mean((2, 3, 4)), 3.0)
    checked = 0
    for i in range(2):
        own = mb.labels[:, i]
        visible = masks[:, i, 0]
        pasted = (mb.inputs[:, i, 0] != own.view(n, 1, 1).float()).float()
        kappa = (pasted * visible).sum((1, 2)) / visible.sum((1, 2)).clamp_min(1)
        own_mass = mb.targets[torch.arange(n), i, own] / w[:, i].clamp_min(1e-9)
        ok = (visible.sum((1, 2)) > 0) & (w[:, i] > 1e-3) & (pasted.sum((1, 2)) > 0)
        assert torch.allclose(own_mass[ok], 1 - kappa[ok], atol=1e-4)
        checked += int(ok.sum())
        # the box share inside the mask differs from the box's plain area for some samples
        assert (kappa[ok] - pasted.mean((1, 2))[ok]).abs().max() > 0.05
    assert checked > 100
