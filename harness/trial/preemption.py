"""Stopping a sweep at its trials' next checkpoints: SLURM's warning before a walltime or a preemption.

The request is a file, ``<storage>/<suite>/drain``, so that anything can make it: the batch script's trap
(execution.slurm), `harness run`'s own SIGUSR1 handler, or ``touch``. Each trial checks it after writing an epoch's
checkpoint and stops there; a trial not started yet does not start; the driver then ends with
ExitCode.PREEMPTED, and the next `harness run` (a requeued job) clears the file and resumes every trial from
the epoch it stopped after: nothing finished is retrained, no epoch is trained twice.

A trial of several workers checks it only before it starts (its ranks would have to agree on an epoch), and
trials that keep their folders in an object store rather than on shared storage never see it.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from pathlib import Path

from harness.core import schema


class Drained(Exception):
    """A trial stopped at a checkpoint because its sweep drains: not a failure, it resumes from there."""


def request(suite_dir: Path, why: str) -> None:
    """Ask the sweep writing to ``suite_dir`` to stop at its trials' next checkpoints."""
    (suite_dir / schema.DRAIN).write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {why}\n")


def requested(suite_dir: Path) -> bool:
    return (suite_dir / schema.DRAIN).exists()


def clear(suite_dir: Path, before: float) -> None:
    """A new driver starts undrained: a request made before ``before`` (its start: the request was a requeued
    job's) is removed; one made since (a signal during its start) stands."""
    path = suite_dir / schema.DRAIN
    try:
        if path.stat().st_mtime < before:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def stop_at_checkpoint(trial_dir: Path, epoch: int, epochs: int) -> None:
    """Raise Drained after epoch ``epoch``'s checkpoint if the trial's sweep drains (never after the last epoch:
    the trial is about to finish)."""
    if epoch < epochs and requested(trial_dir.parent):
        raise Drained(f"{trial_dir.name}: stopped after epoch {epoch}, its checkpoint written")


@contextmanager
def drain_on_sigusr1(suite_dir: Path):
    """While in this block, SIGUSR1 (what ``scancel --signal=USR1`` or ``sbatch --signal=USR1@...`` sends) asks
    the sweep to drain."""
    try:
        previous = signal.signal(signal.SIGUSR1, lambda *_: request(suite_dir, "SIGUSR1"))
    except ValueError:  # not the main thread (a test's in-process driver): the file alone asks
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
