"""The trainer: lr schedule, a short synthetic training, the result folder, resume after SIGKILL."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.core import schema
from harness.core.schedule import learning_rate, milestone_epochs
from harness.store.files import load_logits
from harness.trial.trainer import Trainer
from helpers import FAULTS, tiny_config


def test_milestones_scale_with_the_epoch_budget():
    assert milestone_epochs(tiny_config(epochs=300)) == [100, 200, 225]  # drops at 1-indexed 101, 201, 226
    assert milestone_epochs(tiny_config(epochs=30)) == [10, 20, 22]
    assert milestone_epochs(tiny_config(epochs=12)) == [4, 8, 9]


def test_warmup_then_steps():
    cfg = tiny_config(epochs=300, b=4, batch_size=64)  # lr = 0.1 / (2 * 4)
    steps = 3125
    assert learning_rate(cfg, 0, 0, steps) == pytest.approx(0.0125 / steps)
    assert learning_rate(cfg, 0, steps // 2 - 1, steps) == pytest.approx(0.0125 / 2, rel=1e-3)
    assert learning_rate(cfg, 1, 0, steps) == pytest.approx(0.0125)
    assert learning_rate(cfg, 99, 5, steps) == pytest.approx(0.0125)
    assert learning_rate(cfg, 100, 0, steps) == pytest.approx(0.00125)
    assert learning_rate(cfg, 200, 0, steps) == pytest.approx(0.000125)
    assert learning_rate(cfg, 225, 0, steps) == pytest.approx(0.0000125)


@pytest.mark.parametrize(
    "method, M, b",
    [("vanilla", 1, 1), pytest.param("cut_mixmo", 2, 2, marks=pytest.mark.slow)],  # M = 2: the full lane
)
def test_short_training_learns_and_writes_the_result_folder(tmp_path, method, M, b):
    cfg = tiny_config(method=method, b=b, epochs=4, output_dir=tmp_path, synthetic_size=512, lr=0.05)
    metrics = Trainer(cfg).run()
    d = cfg.trial_dir
    assert {p.name for p in d.iterdir()} >= {
        "config.yaml",
        "history.csv",
        "metrics.json",
        "logits.npz",
        "checkpoint.pt",
    }
    rows = list(csv.DictReader(open(d / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]
    assert metrics["top1"] > 0.6  # 4 classes: chance is 0.25
    logits = load_logits(d / "logits.npz")
    assert logits[schema.TEST_LOGITS].dtype == np.float16 and logits[schema.TEST_LOGITS].shape == (
        len(logits[schema.TEST_LABELS]),
        M,
        4,
    )
    saved = json.loads((d / "metrics.json").read_text())
    assert saved["top1"] == metrics["top1"] and saved["trial_id"] == cfg.trial_id
    assert "calibration_protocol" in saved and f"head{M - 1}_top1" in saved
    # the ensemble top-1 is recomputed from the saved (float16) logits
    ens = torch.from_numpy(logits[schema.TEST_LOGITS]).float().mean(1).argmax(-1)
    assert (ens.numpy() == logits[schema.TEST_LABELS]).mean() == pytest.approx(metrics["top1"], abs=0.02)


def test_validation_split_and_bf16_path(tmp_path):
    cfg = tiny_config(method="linear_mixmo", epochs=1, val_size=64, precision="bf16", output_dir=tmp_path)
    metrics = Trainer(cfg).run()
    assert "validation split (64 train images)" in metrics["calibration_protocol"]
    assert schema.VAL_LOGITS in load_logits(cfg.trial_dir / "logits.npz")
    assert np.isfinite(metrics["nll"])


def train_cli(cfg_overrides, out, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_TEST_FAULT", None)
    if fault:
        env["HARNESS_TEST_FAULT"] = fault
    args = [sys.executable, "-m", "harness", "train", "--set", f"output_dir={out}"]
    args += ["--plugin", str(FAULTS)] if fault else []
    for k, v in cfg_overrides.items():
        args += ["--set", f"{k}={v}"]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # four training processes
def test_resume_after_sigkill_is_bit_for_bit(tmp_path):
    overrides = dict(
        dataset="synthetic",
        synthetic_size=256,
        synthetic_classes=4,
        synthetic_resolution=16,
        depth=10,
        width=1,
        epochs=3,
        batch_size=32,
        method="cut_mixmo",
        b=2,
        progress="false",
    )
    cfg = tiny_config(**{k: v for k, v in overrides.items() if k != "progress"})
    killed = train_cli(overrides, tmp_path / "a", fault="kill@1")
    assert killed.returncode == -9, killed.stderr
    trial_a = tmp_path / "a" / "trial" / cfg.trial_id
    assert not (trial_a / "metrics.json").exists()
    assert torch.load(trial_a / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train_cli(overrides, tmp_path / "a")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    straight = train_cli(overrides, tmp_path / "b")
    assert straight.returncode == 0, straight.stderr
    trial_b = tmp_path / "b" / "trial" / cfg.trial_id
    la, lb = load_logits(trial_a / "logits.npz"), load_logits(trial_b / "logits.npz")
    assert np.array_equal(la[schema.TEST_LOGITS], lb[schema.TEST_LOGITS])
    ma, mb = json.loads((trial_a / "metrics.json").read_text()), json.loads((trial_b / "metrics.json").read_text())
    timing = {"train_time_s", "eval_time_s", "inference_images_per_s", "inference_peak_memory_mb"}  # measured
    assert {k: v for k, v in ma.items() if k not in timing} == {k: v for k, v in mb.items() if k not in timing}
    ha = list(csv.DictReader(open(trial_a / "history.csv")))
    hb = list(csv.DictReader(open(trial_b / "history.csv")))
    assert [r["epoch"] for r in ha] == ["1", "2", "3"]  # no restarted or repeated epoch
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    # a finished trial is not trained again
    again = train_cli(overrides, tmp_path / "a")
    assert "already finished" in again.stdout


def _first_steps(cfg, steps=3):
    trainer = Trainer(cfg)
    torch.manual_seed(1)
    x, y = next(iter(trainer.train_loader))
    losses = []
    for _ in range(steps):
        loss_sum, _, count = trainer.step(x, y, lr=0.05, progress=0.0)
        losses.append(loss_sum.item() / count)
    return trainer, losses


@pytest.mark.slow  # torch.compile on the CPU
def test_compiled_channels_last_step_matches_the_eager_step(tmp_path):
    cfg = tiny_config(method="cut_mixmo", b=2, output_dir=tmp_path)
    eager, eager_losses = _first_steps(cfg)
    lean, lean_losses = _first_steps(cfg.model_copy(update={"compile": True, "channels_last": True}))
    assert lean.engine.train_module is not lean.model  # the compiled module trains, sharing the parameters
    assert lean.model.encoders.weight.is_contiguous(memory_format=torch.channels_last)
    assert lean_losses == pytest.approx(eager_losses, rel=1e-4)  # same function, same batches: fp32 rounding only
    for p, q in zip(eager.model.parameters(), lean.model.parameters()):
        assert torch.allclose(p, q, atol=1e-4)


@pytest.mark.slow  # torch.compile on the CPU
def test_compiled_bf16_trial_learns_on_cpu(tmp_path):
    cfg = tiny_config(
        method="cut_mixmo",
        b=2,
        epochs=3,
        lr=0.05,
        synthetic_size=512,
        compile=True,
        precision="bf16",
        output_dir=tmp_path,
    )
    metrics = Trainer(cfg).run()
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(cfg.trial_dir / "history.csv"))]
    assert losses[-1] < losses[0] and metrics["top1"] > 0.5  # 4 classes: chance 0.25


def test_a_step_too_short_to_split_trains_nothing_and_counts_nothing(tmp_path):
    """drop_last: false leaves a last batch smaller than the micro-batches: no rows to train on, no error."""
    cfg = tiny_config(output_dir=tmp_path, drop_last=False, grad_accum_steps=2, synthetic_size=33, epochs=1)
    trainer = Trainer(cfg)
    x, y = next(iter(trainer.train_loader))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss_sum, right, count = trainer.step(x[:1], y[:1], lr=0.1, progress=0.0)
    assert count == 0 and float(loss_sum) == 0 and float(right) == 0 and isinstance(right, torch.Tensor)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    row = trainer.train_epoch(0)  # 33 images, batch 32: the last batch of one image is the short one
    assert row["train_loss"] > 0 and 0 <= row["train_top1"] <= 1
