"""The ensembling-for-free family beside MixMo: BatchEnsemble, Packed-Ensembles, Masksembles, MC-Dropout.

Reference: torch-uncertainty 0.13.0 (PyPI), its WRN-28-10 models built with conv_bias=False, style="cifar" (the
harness's architecture: its vanilla 36,536,884 and MIMO M = 2 36,601,416 parameters equal theirs); the counts and
mask statistics below were read off those models and its masksembles.generation_wrapper."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.core import schema
from harness.core.config import ConfigError
from harness.evaluation.evaluate import evaluate_trial
from harness.evaluation.kinds import parse_eval_set
from harness.methods import METHODS
from harness.models import MODELS, build_model, count_parameters
from harness.models.ensemble_layers import BatchEnsembleConv2d, Masks, generate_masks
from harness.models.ensembles import PackedNet
from harness.store.trial_folder import TrialFolder
from harness.trial.catalog import build_config
from harness.trial.trainer import Trainer
from helpers import tiny_config, trial

FAMILY = ["batch_ensemble", "packed_ensemble", "masksembles", "mc_dropout"]


def wrn_28_10(method, **keys):
    cfg = trial(method=method, dataset="cifar100", depth=28, width=10, **keys)
    with torch.device("meta"):
        return cfg, build_model(cfg, 100)


@pytest.mark.parametrize(
    "method, keys, trainable",
    [
        ("batch_ensemble", {}, 36_615_868),
        ("packed_ensemble", {}, 19_467_568),  # alpha 2, gamma 2, M 4: the paper's and torch-uncertainty's recipe
        ("packed_ensemble", {"packed_gamma": 1}, 36_619_568),
        ("packed_ensemble", {"packed_alpha": 3.0, "packed_gamma": 1}, 82_269_952),
        ("masksembles", {}, 36_536_884),  # the masks are fixed: torch-uncertainty's frozen 37,888 mask entries aside
        ("mc_dropout", {}, 36_536_884),
    ],
)
def test_parameter_counts_equal_the_reference_at_wrn_28_10(method, keys, trainable):
    _, net = wrn_28_10(method, **keys)
    assert count_parameters(net) == trainable
    if method == "masksembles":
        assert sum(m.masks.numel() for m in net.modules() if isinstance(m, Masks)) == 37_888


def test_a_batch_ensemble_layer_is_m_convolutions_with_weights_w_times_s_r():
    torch.manual_seed(0)
    layer = BatchEnsembleConv2d(3, 5, 7, 3, stride=2, padding=1)
    x = torch.randn(3 * 4, 5, 9, 9)  # member-major: member i's 4 rows
    out = layer(x).unflatten(0, (3, 4))
    for i in range(3):
        w = layer.conv.weight * layer.s[i].view(-1, 1, 1, 1) * layer.r[i].view(1, -1, 1, 1)  # W o (s_i r_i^T)
        alone = F.conv2d(x.unflatten(0, (3, 4))[i], w, stride=2, padding=1)
        torch.testing.assert_close(out[i], alone, rtol=1e-5, atol=1e-5)


def test_packed_members_are_disjoint_channel_groups():
    cfg = tiny_config(method="packed_ensemble", depth=10, width=4, synthetic_classes=5)
    net = build_model(cfg, 5).eval()
    assert isinstance(net, PackedNet)
    x = torch.randn(6, 3, 16, 16)
    before = net(x)
    with torch.no_grad():  # member 2's share of every grouped layer after the first, and of the classifier
        for conv in [m for m in net.core.modules() if isinstance(m, torch.nn.Conv2d)]:
            per_member = conv.out_channels // cfg.num_inputs  # its gamma groups, member-major
            conv.weight[2 * per_member : 3 * per_member] += 1.0
        net.head.weight[2] += 1.0
    after = net(x)
    assert torch.equal(after[:, [0, 1, 3]], before[:, [0, 1, 3]]) and not torch.allclose(after[:, 2], before[:, 2])


def test_a_masked_member_is_the_network_with_its_masked_channels_removed():
    torch.manual_seed(0)
    masks = Masks(12, 3, 2.0, np.random.default_rng(0))
    x = torch.randn(3 * 2, 12, 4, 4)
    out = masks(x).unflatten(0, (3, 2))
    for i in range(3):
        keep = masks.masks[i].bool()
        assert torch.equal(out[i][:, ~keep], torch.zeros_like(out[i][:, ~keep]))
        assert torch.equal(out[i][:, keep], x.unflatten(0, (3, 2))[i][:, keep])


@pytest.mark.parametrize(
    "channels, members, scale, ones, overlap",
    [(160, 4, 2.0, 85, 0.498), (640, 4, 2.0, 341, 0.500), (320, 4, 3.0, 132, 0.328), (64, 2, 2.0, 42, 0.476)],
)
def test_the_mask_generator_matches_the_reference_statistics(channels, members, scale, ones, overlap):
    """Ones per mask exactly, the mean pairwise overlap (shared channels / ones) within 0.02 of the reference's
    mean over 20 draws (its std is at most 0.01), every channel kept by some member."""
    rng = np.random.default_rng(1)
    overlaps = []
    for _ in range(20):
        m = generate_masks(channels, members, scale, rng)
        assert m.shape == (members, channels) and set(np.unique(m)) == {0.0, 1.0}
        assert (m.sum(1) == ones).all() and (m.sum(0) >= 1).all()
        overlaps.append(np.mean([(m[i] * m[j]).sum() / ones for i in range(members) for j in range(i + 1, members)]))
    assert np.mean(overlaps) == pytest.approx(overlap, abs=0.02)


def test_masks_are_fixed_by_the_seed_and_saved_with_the_weights():
    cfg = tiny_config(method="masksembles", width=4, batch_size=32)
    a, b = build_model(cfg, 4), build_model(cfg, 4)
    other = build_model(cfg.model_copy(update={"seed": 1}), 4)
    masks = [k for k in a.state_dict() if k.endswith("masks")]
    assert masks and all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in masks)
    assert any(not torch.equal(a.state_dict()[k], other.state_dict()[k]) for k in masks)


def test_mc_dropout_samples_are_reproducible_and_differ_between_passes():
    cfg = tiny_config(method="mc_dropout", M=5)
    net = build_model(cfg, 4).eval()
    x = torch.randn(8, 3, 16, 16)
    first, second = net(x), net(x)
    assert first.shape == (8, 5, 4) and torch.equal(first, second)
    assert (first[:, 0] - first[:, 1]).abs().max() > 1e-4  # T different passes
    net.train()
    assert net(x.unsqueeze(1)).shape == (8, 1, 4)  # one network in training


IN_TIME = ("snapshot", "fge", "swa", "swag")  # wrap any network alike (WeightMembers): checked on wrn, the cheaper


def combinations():
    for method in METHODS.names():
        for model in MODELS.names():
            if METHODS.get(method).network in MODELS.get(model).networks and not (method in IN_TIME and model != "wrn"):
                yield method, model


@pytest.mark.slow  # trains or builds reports: the full lane
@pytest.mark.parametrize("method, model", list(combinations()))
def test_every_method_trains_and_evaluates_on_every_model_it_runs_on(tmp_path, method, model):
    shape = {"depth": 18, "width": 1, "synthetic_resolution": 16} if model == "preact_resnet" else {"width": 2}
    if method == "fge":  # its cycles need epochs: 1 of pre-training, then the minimum of 2 cycles of 2 epochs
        shape = {**shape, "epochs": 4, "M": 2, "fge_cycle": 2}
    if method in ("swag", "snapshot"):  # 3 members, not the papers' 30 and 5: the test's time
        shape = {**shape, "M": 3}
    cfg = tiny_config(**{"method": method, "model": model, "output_dir": tmp_path, "epochs": 1, "batch_size": 32,
                         **shape})  # fmt: skip
    if method == "mc_dropout":
        cfg = cfg.model_copy(update={"M": 3})
    metrics = Trainer(cfg).run()
    saved = TrialFolder(cfg.trial_dir).logits()[schema.TEST_LOGITS]
    assert saved.shape[1:] == (cfg.num_inputs, 4) and np.isfinite(saved).all()
    assert metrics["inference_images_per_s"] > 0 and metrics["inference_gflops"] > 0
    if method in FAMILY + list(IN_TIME):  # the checkpoint gives the logits back (MC-Dropout's, SWAG's samples seeded)
        record = evaluate_trial(cfg, [parse_eval_set("test")], "cpu")["test"]
        assert record["metrics"]["top1"] == pytest.approx(metrics["top1"], abs=1e-6)
        assert record["metrics"]["nll"] == pytest.approx(metrics["nll"], rel=1e-3)


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"method": "batch_ensemble", "M": 1}, "method 'batch_ensemble' needs M >= 2 subnetworks, got 1"),
        ({"method": "mc_dropout", "dropout": 0.0}, "dropout: Input should be greater than 0"),
        ({"method": "packed_ensemble", "M": 3, "width": 1},
         "packed_alpha 2 x 16 channels = 32 do not split into M x packed_gamma = 3 groups"),
        ({"method": "vanilla", "mask_scale": 3.0}, "mask_scale is a key of method masksembles, not of vanilla; in a "
         "suite, set it for masksembles alone with a rule"),
        ({"method": "batch_ensemble", "model": "preact_resnet", "depth": 18},
         "method 'batch_ensemble' builds its layers into the model (batch_ensemble network): it runs on model wrn"),
        ({"method": "masksembles", "batch_size": 30}, "batch_size 30: masksembles shares each batch out to its M = 4"),
        ({"method": "packed_ensemble", "msda": "cutmix"}, "msda (Mixup/CutMix on each input) is for MixMo's"),
    ],
)  # fmt: skip
def test_bad_family_settings_name_the_key(keys, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config({"dataset": "synthetic", "depth": 10, "width": 2, **keys}, "trial.yaml")


def test_batch_ensemble_optimizer_groups_follow_uncertainty_baselines():
    """batchensemble.py: every variable that is neither a kernel nor a batch norm (fast weights r, s and the
    classifier's per-member biases) at half the lr; no L2 on the fast weights."""
    from harness.engines.torch_engine import sgd

    cfg = tiny_config(method="batch_ensemble", depth=10, width=1)
    model = build_model(cfg, 4)
    groups = {id(p): g for g in sgd(cfg, model).param_groups for p in g["params"]}
    l2 = 2 * cfg.l2 + cfg.weight_decay
    for name, p in model.named_parameters():
        g = groups[id(p)]
        if name.endswith((".r", ".s")):
            assert (g["lr_scale"], g["weight_decay"]) == (0.5, 0.0), name
        elif name == "head.bias" or (name.endswith(".bias") and p.dim() == 2):  # the classifier's (M, K) biases
            assert (g["lr_scale"], g["weight_decay"]) == (0.5, l2), name
        else:
            assert (g["lr_scale"], g["weight_decay"]) == (1.0, l2), name
    assert sum(len(g["params"]) for g in sgd(cfg, model).param_groups) == len(list(model.parameters()))
