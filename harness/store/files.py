"""Writing and reading the harness's files: every file is written atomically (a crash never leaves a half-written
file), every read says which file is unreadable and why, and nothing read executes code (weights-only
checkpoints, logits without pickles)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.core import bounded_read
from harness.store.errors import CorruptFile, ResourceError, free_space, out_of_space, refusal


def atomic_write(path: Path, write: Callable, keep_previous: Path | None = None) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it (``keep_previous``: the old
    file is first renamed there, so a crash between the two renames leaves the previous version)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users of a shared store
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, Exception) and out_of_space(err, path.parent):
            raise ResourceError(
                f"no space left on device for {path} ({free_space(path.parent)} free on its filesystem); free some "
                f"space and run the same command again to resume"
            ) from err
        raise


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    import yaml

    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_json(path: Path) -> Any:
    """JSON from a result file; CorruptFile (with the path) when it cannot be parsed."""
    path = Path(path)
    try:
        return json.loads(read_record(path))
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptFile(path, f"not valid JSON ({err})") from None


MAX_RECORD_BYTES = 256 << 20  # a trial's JSON, YAML or CSV record: kilobytes to a few MB; beyond that it is not one


def read_record(path: Path) -> bytes:
    """A trial folder's text record, a regular file of bounded size (a shared folder may hold a FIFO or a link to
    /dev/zero where a record should be): CorruptFile with the reason otherwise."""
    try:
        return bounded_read.read_bytes(path, MAX_RECORD_BYTES)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CorruptFile(Path(path), err.strerror or str(err)) from None


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, weights-only (no code runs on load); CorruptFile when it cannot be read or is refused."""
    import pickle

    import torch

    try:
        bounded_read.require_regular(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CorruptFile(path, refusal(err)) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:  # OSError: a truncated file
        raise CorruptFile(path, f"unreadable ({(str(err).splitlines() or ['?'])[0][:200]})") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CorruptFile(path, "not a harness checkpoint (no epoch)")
    return state


def save_logits(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_logits(path: Path, members: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a logits file (``members``: only those, the others never read; KeyError names a missing one)."""
    try:
        bounded_read.require_regular(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if members is None else members)}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:200]
        raise CorruptFile(path, f"unreadable ({why})") from None
