"""The worker side of a sweep: the Tune trainable that runs one trial in a Ray worker process and reports its
progress to the driver as harness.execution.progress.TrialReport messages."""

from __future__ import annotations

import logging
import time

from ray import tune

from harness.core import environment, logs
from harness.core.config import TrialConfig
from harness.execution.progress import TrialReport, progress_every_s
from harness.trial import catalog, preemption

logger = logging.getLogger(__name__)


def run_trial(config: dict) -> None:
    """The Tune trainable: one trial through the launcher, its epochs and in-epoch progress reported to Tune."""
    import torch

    _freeze_imports()
    logs.setup(logging.WARNING)  # a Ray worker: Tune shows the progress, the terminal only warnings
    cfg = catalog.in_worker(config["case"]["trial"], config.get("plugins"))
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    if preemption.requested(cfg.trial_dir.parent):  # the sweep drains: a trial not started stays pending
        return
    try:
        numbers = _train(cfg, config)
    except preemption.Drained as stop:  # stopped at its checkpoint; the next `harness run` resumes it
        logger.warning(str(stop))
        return
    finally:  # Tune reuses this worker for the next trial: what this one held goes back to the system first
        release_memory()  # (~0.2 s, inside the trial's time: the slot is free the moment the trial reports done)
    _report(TrialReport(cfg.trial_id, done=True, metrics=numbers))


def _freeze_imports() -> None:
    """What the worker imported (torch, Ray, the harness: ~0.6 million objects) frozen out of garbage collection, once
    per worker: each collection (release_memory's after every trial, Python's own while training) then scans only
    what trials allocate (0.5 s -> ~0 per full collection, measured here)."""
    import gc

    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()


def release_memory() -> None:
    """Everything a finished trial held, freed and returned to the operating system (glibc keeps freed heap pages
    otherwise, and a reused worker grew by ~0.1 GB a trial): a collection, then malloc_trim."""
    import ctypes
    import gc

    if environment.text("HARNESS_WORKER_TRIM") == "0":  # benchmarks/worker_memory: the baseline
        return
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _train(cfg: TrialConfig, config: dict) -> dict:
    """The trial trained (and its suite's evaluation sets evaluated); -> its final numbers."""
    from harness.trial.launch import train_trial

    metrics = train_trial(
        cfg,
        cpus_per_worker=config.get("cpus", 1),
        gpus_per_worker=config.get("gpus", 0),
        on_epoch=lambda row: _report(
            TrialReport(
                cfg.trial_id,
                epoch=row["epoch"],
                epoch_time_s=row["epoch_time_s"],
                train_loss=row["train_loss"],
                test_top1=row.get("test_top1"),
                metrics=row,
            )
        ),
        on_step=_step_reporter(cfg.trial_id),
    )
    if config.get("eval_sets"):  # the suite's evaluation sets, as the trial finishes
        _evaluate_finished(cfg, config["eval_sets"])
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _report(report: TrialReport) -> None:
    tune.report(report.to_tune())


def _evaluate_finished(cfg: TrialConfig, names: list[str]) -> None:
    """A failed evaluation does not fail the trained trial: the sweep's last pass tries again and says why."""
    from harness.evaluation.evaluate import evaluate_trial
    from harness.evaluation.kinds import parse_eval_set

    try:
        evaluate_trial(
            cfg,
            [parse_eval_set(n) for n in names],
            cfg.device,
            on_set=lambda spec: _report(TrialReport(cfg.trial_id, evaluating=spec.name)),
        )
    except Exception as err:
        logger.warning(f"{cfg.trial_id}: evaluation sets not evaluated yet ({type(err).__name__}: {err})")


def _step_reporter(trial_id: str):
    """An on_step callback that reports in-epoch progress to Tune every ``progress_every_s()``."""
    every_s = progress_every_s()
    clock = {"last": time.monotonic(), "epoch": -1, "t0": 0.0}

    def on_step(epoch: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if epoch != clock["epoch"]:
            clock.update(epoch=epoch, t0=now, first=step)
        if now - clock["last"] >= every_s and step > clock["first"]:
            clock["last"] = now
            rate = (step - clock["first"]) / (now - clock["t0"])  # steps/s in this epoch so far
            _report(TrialReport(trial_id, in_epoch=epoch + 1, step=step, steps=steps, steps_per_s=rate))

    return on_step
