"""The exit codes of every `harness` command, and which exception ends a command with which (docs/guarantees.md's list
is this module's, checked by a test)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    DONE = 0
    FAILED = 1
    REFUSED = 2
    OUT_OF_RESOURCES = 3
    PREEMPTED = 75  # EX_TEMPFAIL: run the same command again (what harness.slurm's batch script does)
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


def exception_codes() -> list[tuple[tuple[type, ...], ExitCode]]:
    """Which exceptions end a command with which code, in the order they are tried (one line on stderr each)."""
    from harness.config import ConfigError
    from harness.data import DataError
    from harness.plugins import PluginError
    from harness.results import CorruptFile, ResourceError

    return [
        ((ConfigError, DataError, CorruptFile, PluginError), ExitCode.REFUSED),
        ((ResourceError,), ExitCode.OUT_OF_RESOURCES),
        ((FloatingPointError,), ExitCode.FAILED),  # the trainer's divergence check
    ]


def readme_line() -> str:
    """docs/guarantees.md's list of exit codes."""
    return "; ".join(f"{int(code)}: {code.meaning}" for code in ExitCode) + "."
