"""Reading a file the harness did not write itself (a suite, a plugin, a trial's record from a shared folder): only a
regular file, and at most a stated number of bytes. A FIFO would block the reader forever and /dev/zero would fill
the memory; both are refused at once with the reason, as an OSError whose ``strerror`` says it."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}  # fmt: skip


def _require_regular_mode(mode: int, path: Path | str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise OSError(errno.EINVAL, f"{kind}, not a regular file", str(path))


def require_regular(path: Path | str) -> None:
    """OSError (``strerror`` naming what it is) unless ``path`` is a regular file; looked at without opening it, for
    readers that open files themselves (zip archives, numpy, torch)."""
    _require_regular_mode(os.stat(path).st_mode, path)


def read_bytes(path: Path | str, limit: int) -> bytes:
    """The file's bytes; OSError (``strerror`` naming why) when it is not a regular file or holds more than
    ``limit`` bytes. Opened without blocking, so a FIFO with no writer is refused rather than waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        _require_regular_mode(os.fstat(fd).st_mode, path)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes, the most this file may hold", str(path))
    return data
