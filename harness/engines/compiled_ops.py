"""DeepSpeed's compiled communication op, loaded so that it cannot hang.

On CPU, DeepSpeed compiles its shared-memory op (``deepspeed_shm_comm``) on first use through torch's
extension builder, which guards the build folder with a ``lock`` file. Older torch releases wait for as long
as that file exists, so a process killed mid-build blocked every later one, silently. Before DeepSpeed
loads the op, the lock is checked: a lock no living process holds is removed (with a line saying so), and a
live holder is waited for at most ``HARNESS_OP_BUILD_TIMEOUT`` seconds (then one line naming the lock file
and the process). ``python -m harness.engines.compiled_ops`` builds the op ahead (the install step)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from harness.core import environment

logger = logging.getLogger(__name__)

OP_NAME = "deepspeed_shm_comm"
BUILD_TIMEOUT_S = 900  # a cold build takes about a minute on 2 cores; fifteen is a stuck one


class OpBuildError(RuntimeError):
    """The op's build folder is held by a process that does not finish."""


def lock_path(name: str = OP_NAME) -> Path:
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(name, verbose=False)) / "lock"


def holders(path: Path) -> list[int]:
    """The processes (other than this one) that have ``path`` open: a builder, alive (Linux's /proc)."""
    target = os.path.realpath(path)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    found.append(int(pid))
                    break
            except OSError:
                continue
    return found


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        return " ".join(words)[:120]
    except OSError:
        return "?"


def clear_lock(path: Path | None = None, timeout: float | None = None) -> None:
    """Make the op's build lock safe to wait on: a stale one is removed, a live holder is waited for (bounded)."""
    path = path or lock_path()
    timeout = environment.seconds("HARNESS_OP_BUILD_TIMEOUT", BUILD_TIMEOUT_S) if timeout is None else timeout
    deadline, said = time.monotonic() + timeout, False
    while path.exists():
        alive = holders(path)
        if not alive:
            path.unlink(missing_ok=True)
            # torch releases that wait on the file's existence would have blocked on it for ever: said loudly
            logger.log(logging.WARNING if _existence_blocks() else logging.INFO, f"{path}: a stale build lock (its "
                       f"builder is gone) removed")  # fmt: skip
            return
        if time.monotonic() > deadline:
            raise OpBuildError(
                f"{path}: DeepSpeed's {path.parent.name} op has been built by pid {alive[0]} ({_command(alive[0])}) "
                f"for more than {timeout:.0f} s; if that process is stuck, stop it (its lock goes with it)"
            )
        if not said:
            logger.warning(f"waiting for pid {alive[0]} to finish building {path.parent.name} (lock {path})")
            said = True
        time.sleep(0.5)


def _existence_blocks() -> bool:
    """Whether this torch waits for the lock file to disappear (FileBaton) rather than on an OS lock."""
    import torch.utils.cpp_extension as extension

    return not hasattr(extension, "FileLock")


def prepare() -> None:
    """Before DeepSpeed starts on CPU (where it compiles the op): the build lock checked."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        clear_lock(lock_path())


def load_shm_op():
    """DeepSpeed's CPU shared-memory op, built if needed, after the lock check (None off the CPU accelerator)."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return None
    clear_lock(lock_path())
    return get_accelerator().create_op_builder("ShareMemCommBuilder").load(verbose=False)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    op = load_shm_op()
    print(f"DeepSpeed {OP_NAME}: {'built' if op is not None else 'not used on this accelerator'}")
