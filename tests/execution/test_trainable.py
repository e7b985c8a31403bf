"""harness.execution.trainable: the Tune trainable, run in this process as a Ray worker runs it, with its one
contact with Tune (``_report``) recorded: what the driver hears of a trial, in order."""

import pytest

from harness.core import schema
from harness.execution import trainable
from harness.execution.progress import TrialReport
from harness.execution.tune_run import trial_case
from harness.store.trial_folder import TrialFolder
from helpers import tiny_config


@pytest.fixture
def heard(monkeypatch):
    """The reports the trial sends its driver, as the driver reads them back (TrialReport.from_tune)."""
    reports = []
    monkeypatch.setattr(trainable, "_report", lambda r: reports.append(TrialReport.from_tune(r.to_tune())))
    return reports


def tune_config(cfg, **extra) -> dict:
    """Tune's config of one trial, as harness.execution.tune_run builds it."""
    return {"cpus": 1, "gpus": 0, "eval_sets": [], "plugins": [], "case": trial_case(cfg), **extra}


def test_a_trial_reports_its_steps_its_epochs_then_done_with_its_numbers(tmp_path, heard, monkeypatch):
    monkeypatch.setenv("HARNESS_PROGRESS_S", "0")  # a report at every step after an epoch's first
    cfg = tiny_config(output_dir=tmp_path, epochs=2)
    trainable.run_trial(tune_config(cfg))
    assert {r.trial_id for r in heard} == {cfg.trial_id}
    kinds = ["step" if r.in_epoch else "epoch" if r.epoch else "done" if r.done else "?" for r in heard]
    metrics = TrialFolder(cfg.trial_dir).metrics()
    steps = metrics["train_images"] // 32  # full batches of 32 (the last partial one is dropped)
    assert kinds == (["step"] * (steps - 1) + ["epoch"]) * 2 + ["done"], kinds
    epoch_ends = [r for r in heard if r.epoch]
    history = TrialFolder(cfg.trial_dir).history()
    assert [r.epoch for r in epoch_ends] == [1, 2] == [int(row["epoch"]) for row in history]
    assert [r.train_loss for r in epoch_ends] == [float(row["train_loss"]) for row in history]
    in_epoch = [r for r in heard if r.in_epoch]
    assert [r.step for r in in_epoch[: steps - 1]] == list(range(2, steps + 1)) and all(
        r.steps == steps for r in in_epoch
    )
    assert all(r.steps_per_s > 0 for r in in_epoch)
    final = heard[-1].metrics
    assert final["top1"] == metrics["top1"] and final["nll"] == metrics["nll"]
    assert all(isinstance(v, (int, float)) for v in final.values())  # Tune carries numbers: no node lists


def test_a_trial_not_started_when_the_sweep_drains_stays_pending(tmp_path, heard):
    cfg = tiny_config(output_dir=tmp_path)
    cfg.trial_dir.parent.mkdir(parents=True)
    (cfg.trial_dir.parent / schema.DRAIN).write_text("")
    trainable.run_trial(tune_config(cfg))
    assert heard == [] and not cfg.trial_dir.exists()


def test_an_evaluation_set_that_fails_leaves_the_trained_trial_done(tmp_path, heard, said_by):
    cfg = tiny_config(output_dir=tmp_path, epochs=1)
    warnings = said_by("harness.execution.trainable")
    trainable.run_trial(tune_config(cfg, eval_sets=[f"ood:{tmp_path / 'no_such_folder'}"]))
    assert heard[-1].done and TrialFolder(cfg.trial_dir).is_finished()
    assert len(warnings) == 1 and warnings[0].startswith(f"{cfg.trial_id}: evaluation sets not evaluated yet (")


def test_memory_is_released_unless_the_baseline_is_asked(monkeypatch):
    import gc

    collected = []
    monkeypatch.setattr(gc, "collect", lambda: collected.append(1))
    trainable.release_memory()
    monkeypatch.setenv("HARNESS_WORKER_TRIM", "0")
    trainable.release_memory()
    assert collected == [1]
