"""What went wrong with a file or the machine, said plainly: a result file that cannot be read (CorruptFile), the
machine out of disk or memory (ResourceError and its tests on any exception), a refused checkpoint's reason."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class CorruptFile(Exception):
    """A result file that exists but cannot be read (truncated, garbled, refused by the weights-only loader)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


class ResourceError(RuntimeError):
    """The machine ran out of something (disk, memory): said plainly, not as the library's internal error."""


def out_of_space(err: BaseException, folder: Path | None = None) -> bool:
    """ENOSPC anywhere in the exception's chain (sqlite says 'database or disk is full'); with ``folder``, also a
    library's wrapped write error (torch: 'enforce fail ... inline_container.cc') when that disk is full."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(cause) for s in ("No space left on device", "database or disk is full")):
            return True
        cause = cause.__cause__ or cause.__context__
    if folder is None:
        return False
    try:
        return shutil.disk_usage(folder).free < 1 << 20  # the write failed and less than 1 MiB is left
    except OSError:
        return False


def out_of_memory(err: BaseException) -> bool:
    """torch.OutOfMemoryError (GPU), MemoryError, or the CPU allocator's "can't allocate memory"."""
    return (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err))
    )


def free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown"


def refusal(err: Exception) -> str:
    """Why the weights-only loader refused a file, without torch's advice to load it unsafely: the line that names
    what the pickle asked for."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "nsupported" in line]
    plain = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    reason = (named or plain or ["?"])[0]
    return f"refused by the weights-only loader: {reason[:200]}; it was not loaded, since that could run code"
