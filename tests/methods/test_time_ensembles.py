"""Ensembles in time (Snapshot, FGE, SWA, SWAG) and the method hooks that reach the training loop: each schedule is
its paper's formula, SWA's average and SWAG's moments and samples equal torch-uncertainty's on the same weights,
members are weight states kept in the checkpoint and evaluated as members."""

import importlib
import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import torch

from harness.core import schema
from harness.methods import METHODS
from harness.models import build_model, count_parameters
from harness.models.weight_members import WeightMembers, recompute_batch_norm
from harness.store.trial_folder import TrialFolder
from harness.trial.trainer import Trainer
from helpers import tiny_config


def method(cfg):
    return METHODS.get(cfg.method)(cfg, 4, 8)


def torch_uncertainty(name: str):
    """torch-uncertainty's methods/<name>.py (0.13.0, installed without its dependencies by .ci/run), loaded without
    the package's __init__ (which imports Lightning)."""
    spec = importlib.util.find_spec("torch_uncertainty")
    assert spec is not None, "torch-uncertainty is not installed: pip install --no-deps torch-uncertainty==0.13.0"
    if "tu_methods" not in sys.modules:
        package = types.ModuleType("tu_methods")
        package.__path__ = [f"{spec.submodule_search_locations[0]}/methods"]
        sys.modules["tu_methods"] = package
    return importlib.import_module(f"tu_methods.{name}")


# --- schedules: each paper's formula
def test_snapshot_anneals_m_cosine_cycles_and_keeps_a_snapshot_at_each_cycle_end():
    cfg = tiny_config(method="snapshot", M=3, epochs=3)
    snapshot, steps = method(cfg), 4  # 12 steps, cycles of ceil(12 / 3) = 4
    lrs = [snapshot.schedule(99.0, e, s, steps) for e in range(3) for s in range(steps)]
    expected = [cfg.learning_rate / 2 * (math.cos(math.pi * ((t - 1) % 4) / 4) + 1) for t in range(1, 13)]
    assert lrs == pytest.approx(expected) and lrs[0] == pytest.approx(cfg.learning_rate)
    net = build_model(cfg, 4)
    assert isinstance(net, WeightMembers) and net.count == 3
    kept = []
    net.keep = kept.append
    loop = types.SimpleNamespace(model=net, steps_per_epoch=steps)
    for t in range(1, 13):
        loop.global_step = t
        snapshot.after_step(loop)
    assert kept == [0, 1]  # after steps 4 and 8; the third member is the live network at the end


def test_fge_pretrains_with_the_recipe_then_cycles_between_the_two_rates_and_collects_at_each_minimum():
    cfg = tiny_config(method="fge", M=3, epochs=9, fge_cycle=2)
    fge = method(cfg)
    assert fge.pretrain_epochs(cfg) == 9 - 2 * 2 - 1 == 4
    steps = 2
    lrs = {(e, s): fge.schedule(0.0, e, s, steps) for e in range(9) for s in range(steps)}
    assert lrs[4, 0] == pytest.approx(0.05) and lrs[4, 1] == pytest.approx((1 - 0.5) * 0.05 + 0.5 * 0.0005)
    assert lrs[5, 0] == pytest.approx(0.0005)  # halfway through the first cycle: its minimum
    assert lrs[5, 1] == pytest.approx(0.5 * 0.0005 + 0.5 * 0.05)
    kept = []
    loop = types.SimpleNamespace(model=types.SimpleNamespace(keep=kept.append))
    for epoch in range(9):
        loop.epoch = epoch
        fge.after_epoch(loop)
    assert kept == [0, 1]  # the ends of epochs 5 and 7 (lr at its minimum); the live network at epoch 9's end
    with pytest.raises(Exception, match="need more than 5 epochs"):
        tiny_config(method="fge", M=3, epochs=5, fge_cycle=2)


def test_swa_holds_then_decays_to_the_swa_rate_as_izmailov_et_al():
    cfg = tiny_config(method="swa", epochs=20, swa_start=0.5, swa_lr=0.01)
    swa = method(cfg)
    base = cfg.learning_rate
    assert swa.start_epoch() == 10
    assert swa.schedule(0, 5, 0, 4) == pytest.approx(base)  # t = 0.5
    assert swa.schedule(0, 7, 0, 4) == pytest.approx(base * (1 - (1 - 0.01 / base) * (0.7 - 0.5) / 0.4))
    assert swa.schedule(0, 12, 0, 4) == pytest.approx(0.01)
    assert [e for e in range(20) if swa.collects(e)] == list(range(9, 20))


# --- equal to torch-uncertainty on the same weights
def weight_sequence(net, count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [{k: torch.randn(p.shape, generator=generator) for k, p in net.named_parameters()} for _ in range(count)]


def test_swa_average_equals_torch_and_differs_from_torch_uncertainty_by_its_count():
    """The average of the collected weights is uniform, as Izmailov et al.'s moving_average and torch's AveragedModel;
    torch-uncertainty 0.13.0's SWA counts its first model twice (num_avgd_models 1, then += 1), so from the second
    update on it weights the newest model 1/(n + 2): the test pins that difference rather than copying it."""
    tu = torch_uncertainty("swa")
    cfg = tiny_config(method="swa", epochs=4, swa_start=0.25)
    net = build_model(cfg, 4)
    averaged = torch.optim.swa_utils.AveragedModel(net)
    reference = tu.SWA(net, cycle_start=0, cycle_length=1)
    swa = method(cfg)
    sequence = weight_sequence(net, 5)
    for epoch, weights in enumerate(sequence):
        with torch.no_grad():
            for k, p in net.named_parameters():
                p.copy_(weights[k])
        averaged.update_parameters(net)
        reference.update_wrapper(epoch)
        swa.after_epoch(types.SimpleNamespace(model=net, epoch=epoch))
    assert swa.averaged == 5
    theirs = dict(reference.swa_model.named_parameters())
    for k, p in averaged.module.named_parameters():
        assert torch.allclose(swa.average[k], p, atol=1e-6), k
        assert torch.allclose(swa.average[k], sum(w[k] for w in sequence) / 5, atol=1e-6)
        offset = sequence[0][k].clone()
        for n, w in enumerate(sequence[1:], start=2):
            offset += (w[k] - offset) / (n + 1)
        assert torch.allclose(theirs[k], offset, atol=1e-6), k


def test_swag_moments_deviations_and_samples_equal_torch_uncertainty():
    tu = torch_uncertainty("swag")
    cfg = tiny_config(method="swag", epochs=4, M=3, swag_rank=3, swag_scale=0.5)
    net = build_model(cfg, 4).live
    reference = tu.SWAG(net, cycle_start=0, cycle_length=1, scale=0.5, max_num_models=3, num_estimators=1)
    swag = method(cfg)
    for epoch, weights in enumerate(weight_sequence(net, 5)):  # 5 collections, K = 3 deviations kept
        with torch.no_grad():
            for k, p in net.named_parameters():
                p.copy_(weights[k])
        reference.update_wrapper(epoch + 1)  # it collects after cycle_start
        swag.collect(dict(net.named_parameters()))
    prefix = reference.prfx
    for k in swag.mean:
        assert torch.allclose(swag.mean[k], reference.swag_stats[prefix + k + "_mean"], atol=1e-6)
        assert torch.allclose(swag.sq_mean[k], reference.swag_stats[prefix + k + "_sq_mean"], atol=1e-6)
        assert torch.allclose(swag.deviations[k], reference.swag_stats[prefix + k + "_covariance_sqrt"], atol=1e-6)
        assert swag.deviations[k].shape[0] == 3
    torch.manual_seed(7)
    expected = dict(reference.sample(0.5).named_parameters())
    ours = swag.sample(torch.Generator().manual_seed(7))
    for k, v in ours.items():
        assert torch.allclose(v, expected[k], atol=1e-5), k


# --- members are weight states
def test_weight_members_are_evaluated_side_by_side_counted_and_saved():
    cfg = tiny_config(method="snapshot", M=3)
    net = build_model(cfg, 4)
    single = build_model(tiny_config(method="vanilla"), 4)
    assert count_parameters(net) == 3 * count_parameters(single)  # every member is stored
    x = torch.randn(5, 3, 16, 16)
    net.eval()
    assert net(x).shape == (5, 1, 4)  # nothing kept yet: the live network alone
    net.keep(0)
    with torch.no_grad():
        for p in net.live.parameters():
            p.add_(1.0)
    out = net(x)
    assert out.shape == (5, 2, 4) and not torch.allclose(out[:, 0], out[:, 1])
    again = build_model(cfg, 4)
    again.load_state_dict(net.state_dict())
    assert torch.equal(again.eval()(x), out)  # the kept members come back with the weights
    net.train()
    assert net(x.unsqueeze(1)).shape == (5, 1, 4)  # training runs the live network


def test_batch_norm_statistics_are_recomputed_as_torch_does():
    cfg = tiny_config(method="vanilla")
    ours, theirs = build_model(cfg, 4), build_model(cfg, 4)
    theirs.load_state_dict(ours.state_dict())
    batches = [torch.randn(8, 3, 16, 16) for _ in range(3)]
    recompute_batch_norm(ours, lambda: iter(batches))
    torch.optim.swa_utils.update_bn(batches, theirs)
    for (k, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


@pytest.mark.slow  # trains each (resume and seed: the plugin checks over every built-in method, test_plugins.py)
@pytest.mark.parametrize(
    "keys",
    [
        {"method": "snapshot", "M": 2, "epochs": 2},
        {"method": "fge", "M": 2, "epochs": 4, "fge_cycle": 2},
        {"method": "swa", "epochs": 3, "swa_start": 0.5},
        {"method": "swag", "M": 3, "epochs": 3, "swa_start": 0.3, "swag_rank": 2},
    ],
    ids=lambda k: k["method"],
)
def test_each_trains_and_evaluates_its_members_with_their_cost(tmp_path, keys):
    cfg = tiny_config(output_dir=tmp_path, **keys)
    metrics = Trainer(cfg).run()
    logits = TrialFolder(cfg.trial_dir).logits()[schema.TEST_LOGITS]
    assert logits.shape[1:] == (cfg.num_inputs, 4) and np.isfinite(logits).all()  # one head per member
    single = count_parameters(build_model(tiny_config(method="vanilla"), 4))
    assert metrics["num_params"] == cfg.num_inputs * single  # every member stored
    trainer = Trainer(cfg)
    steps = len(trainer.train_loader)
    lrs = [float(r["lr"]) for r in TrialFolder(cfg.trial_dir).history()]
    assert lrs[-1] == pytest.approx(trainer.method.schedule(0.0, cfg.epochs - 1, steps - 1, steps))  # its schedule


def test_the_public_api_documents_every_hook_and_the_batch_contract():
    """`help()` shows each hook's contract, the batch's shapes and the model's (what a plugin author reads)."""
    from harness.methods import Loop, Method, MixedBatch
    from harness.models import MultiIONet

    for hook in ("schedule", "after_step", "after_epoch", "after_training", "weight_members", "prepare", "state_dict"):
        assert len(getattr(Method, hook).__doc__ or "") > 60, hook
    assert "(B, heads, K)" in MixedBatch.__doc__ and "checks these shapes" in MixedBatch.__doc__
    assert "logits (B, M, K)" in MultiIONet.__doc__ and "In training" in MultiIONet.__doc__
    assert "global_step" in dir(Loop) and Loop.__doc__


def test_weight_members_train_with_one_worker_per_trial():
    with pytest.raises(Exception, match="frozen members get no gradient, which data-parallel training refuses"):
        tiny_config(method="snapshot", M=2, workers_per_trial=2)
    assert tiny_config(method="swa", workers_per_trial=2).workers_per_trial == 2  # one averaged network: no members
