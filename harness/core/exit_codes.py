"""The exit codes of every `harness` command (docs/guarantees.md's list is this module's, checked by a test); which
exception ends a command with which code is harness.cli's table."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    DONE = 0
    FAILED = 1
    REFUSED = 2
    OUT_OF_RESOURCES = 3
    PREEMPTED = 75  # EX_TEMPFAIL: run the same command again (what harness.execution.slurm's batch script does)
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.DONE: "done",
    ExitCode.FAILED: "a trial failed (its `error.txt` says why) or diverged",
    ExitCode.REFUSED: (
        "refused before anything ran (suite, data, paths, lock, an unreadable file), one line naming the file and key"
    ),
    ExitCode.OUT_OF_RESOURCES: "the machine ran out of disk or memory",
    ExitCode.PREEMPTED: (
        "stopped at the trials' checkpoints as asked (SIGUSR1 or the suite's `drain` file: a walltime or a "
        "preemption); the same command resumes"
    ),
    ExitCode.INTERRUPTED: "Ctrl-C",
}


class Interrupted(Exception):
    """Ctrl-C, with what was kept: ends a command with ExitCode.INTERRUPTED, its message on stderr."""


def readme_line() -> str:
    """docs/guarantees.md's list of exit codes."""
    return "; ".join(f"{int(code)}: {code.meaning}" for code in ExitCode) + "."
