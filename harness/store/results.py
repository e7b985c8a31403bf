"""Reading and writing a trial's result folder (its files are named in harness.core.schema): every file is written
atomically (a crash never leaves a half-written file), every read says which file is unreadable and why, and
nothing read executes code.
"""

from __future__ import annotations

import copy
import csv
import errno
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.core import bounded_read
from harness.core.schema import (
    ASIDE_SUFFIX,
    ATTEMPTS,
    CHECKPOINT,
    CHECKPOINTS,
    CONFIG,
    CORRUPT_SUFFIX,
    ERROR,
    EVAL_DIR,
    EVAL_FINGERPRINT,
    HISTORY,
    LOGITS,
    LOGITS_MEMBERS,
    METRICS,
    PART_SUFFIX,
    PREVIOUS,
    STOPPED,
    SUITE_CACHE,
    VERIFIED,
)

logger = logging.getLogger(__name__)

_CONFIGS: dict[tuple, dict] = {}  # (config.yaml path, mtime, size) -> its parsed content


class CorruptFile(Exception):
    """A result file that exists but cannot be read (truncated, garbled, refused by the weights-only loader)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}")


class ResourceError(RuntimeError):
    """The machine ran out of something (disk, memory): said plainly, not as the library's internal error."""


# --- atomic writes
def _atomic_write(path: Path, write: Callable, keep_previous: Path | None = None) -> None:
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
                f"no space left on device for {path} ({_free(path.parent)} free on its filesystem); free some "
                f"space and run the same command again to resume"
            ) from err
        raise


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


def _free(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown"


def write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


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


def refusal(err: Exception) -> str:
    """Why the weights-only loader refused a file, without torch's advice to load it unsafely: the line that names
    what the pickle asked for."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "nsupported" in line]
    plain = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    reason = (named or plain or ["?"])[0]
    return f"refused by the weights-only loader: {reason[:200]}; it was not loaded, since that could run code"


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
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_logits(path: Path, members: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a logits file (``members``: only those, the others never read; KeyError names a missing one)."""
    try:
        bounded_read.require_regular(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in (z.files if members is None else members)}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:200]
        raise CorruptFile(path, f"unreadable ({why})") from None


class Verified:
    """Zip files already read whole against their CRCs, by identity (path, size, modification time, inode, ctime): each
    rerun of a suite reads a file once, not every time (10,000 CIFAR-100 trials hold 40 GB of logits)."""

    def __init__(self, suite_dir: Path):
        self.path = Path(suite_dir) / SUITE_CACHE / VERIFIED
        try:
            self.files = {tuple(i) for i in json.loads(self.path.read_text())}
        except (OSError, ValueError, TypeError):
            self.files = set()

    @staticmethod
    def identity(path: Path) -> tuple:
        info = os.stat(path)
        return (os.path.abspath(path), info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)

    def save(self) -> None:
        try:
            write_json(self.path, sorted(self.files))
        except OSError:  # a read-only folder: every file is read again next time, nothing worse
            pass


def _check_zip(
    path: Path, members: tuple[str, ...] = (), thorough: bool = False, verified: Verified | None = None
) -> None:
    """Integrity check: cheap by default (the zip directory sits at the end: a truncated file fails here, and so
    does a member whose recorded size the file cannot hold); thorough also reads every member against its CRC,
    unless ``verified`` holds the file as it is."""
    if thorough and verified is not None:
        try:
            identity = Verified.identity(path)
        except OSError:
            identity = None
        if identity in verified.files:
            thorough = False
    try:
        bounded_read.require_regular(path)
    except OSError as err:
        raise CorruptFile(path, err.strerror or str(err)) from None
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = {i.filename.rsplit("/", 1)[-1] for i in infos}
            end, size = max((i.header_offset + i.compress_size for i in infos), default=0), path.stat().st_size
            if end > size:
                raise CorruptFile(path, f"truncated (its members need {end} bytes, the file has {size})")
            damaged = z.testzip() if thorough else None
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as err:
        raise CorruptFile(path, f"truncated or not a zip archive ({err})") from None
    if damaged is not None:
        raise CorruptFile(path, f"damaged: {damaged} fails its CRC check")
    lacking = [m for m in members if m not in names]
    if lacking:
        raise CorruptFile(path, f"lacks {', '.join(lacking)}")
    if thorough and verified is not None and identity is not None:
        verified.files.add(identity)


@dataclass(frozen=True)
class TrialState:
    """pending | partial | finished | failed | stopped (by a study's ASHA) | corrupt (running is known to the driver,
    see harness.store.lock)."""

    state: str
    epochs: int = 0  # epochs done
    detail: str = ""  # failed: the error's last line; corrupt: the file and why it cannot be read


class TrialFolder:
    """Reads and writes one trial folder; the trainer, sweep, tracking, storage and analysis all go through it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def trial_id(self) -> str:
        return self.path.name

    # --- reading
    def config(self) -> dict:
        from harness.core.config import ConfigError
        from harness.core.yaml_files import parse_yaml

        path = self.path / CONFIG
        try:
            info = path.stat()
        except OSError as err:
            raise CorruptFile(path, err.strerror or str(err)) from None
        key = (str(path), info.st_mtime_ns, info.st_size, info.st_ctime_ns, info.st_ino)
        if key not in _CONFIGS:  # read once per process while the file is unchanged (status, report: many readers)
            try:
                config = parse_yaml(read_record(path).decode("utf-8"), str(path))
            except (ConfigError, UnicodeDecodeError) as err:
                raise CorruptFile(path, str(err).removeprefix(f"{path}: ")) from None
            if not isinstance(config, dict) or "trial_id" not in config:
                raise CorruptFile(path, "not a trial configuration (no trial_id)")
            _CONFIGS[key] = config
        return {k: copy.copy(v) if isinstance(v, (list, dict)) else v for k, v in _CONFIGS[key].items()}

    def metrics(self) -> dict:
        metrics = read_json(self.path / METRICS)
        if not isinstance(metrics, dict) or not isinstance(metrics.get("top1"), (int, float)):
            raise CorruptFile(self.path / METRICS, "not a metrics record (no top1)")
        return metrics

    def history(self) -> list[dict]:
        path = self.path / HISTORY
        if not path.exists():
            return []
        try:
            rows = list(csv.DictReader(io.StringIO(read_record(path).decode("utf-8"))))
            [float(r["epoch"]) for r in rows]
        except (UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as err:
            raise CorruptFile(path, f"not a history table ({err})") from None
        return rows

    def logits(self) -> dict[str, np.ndarray]:
        return load_logits(self.path / LOGITS)

    def attempts(self) -> list[dict]:
        path = self.path / ATTEMPTS
        return read_json(path) if path.exists() else []

    def nodes(self) -> list[str]:
        """Every node that ran the trial (first start and retries), in order, each once."""
        return list(dict.fromkeys(a["node"] for a in self.attempts()))

    def error(self) -> str | None:
        path = self.path / ERROR
        return path.read_text(errors="replace") if path.exists() else None

    def is_finished(self) -> bool:
        return self.state().state == "finished"

    def state(self, thorough: bool = False, verified: Verified | None = None) -> TrialState:
        """Reads every file that decides the state; an unreadable one makes the trial `corrupt` (the next
        `harness run` recomputes it from what still reads). Checkpoints are checked by their zip directory, the
        logits too unless ``thorough`` (`harness run`), which reads them whole against their CRCs (once: the
        files in ``verified`` are not read again)."""
        if not self.path.is_dir():
            return TrialState("pending")
        try:
            epochs = len(self.history())
            checkpoints = [c for c in CHECKPOINTS if (self.path / c).exists()]
            if (self.path / METRICS).exists():
                self.config()
                self.metrics()
                _check_zip(self.path / LOGITS, tuple(f"{m}.npy" for m in LOGITS_MEMBERS), thorough, verified)
                if CHECKPOINT in checkpoints:  # what `harness evaluate` and every later evaluation start from
                    _check_zip(self.path / CHECKPOINT)
                return TrialState("finished", epochs)
            for name in checkpoints:
                _check_zip(self.path / name)
        except CorruptFile as err:
            return TrialState("corrupt", 0, f"{err.path.name}: {err.reason}")
        error = self.error()
        if error is not None:
            return TrialState("failed", epochs, (error.strip().splitlines() or [f"(empty {ERROR})"])[-1][:200])
        if (self.path / STOPPED).exists():
            return TrialState("stopped", epochs, self._stopped_by())
        if checkpoints:
            return TrialState("partial", epochs)
        return TrialState("pending", epochs, self._stopped_before_a_checkpoint())

    def _stopped_by(self) -> str:
        """Why a study's scheduler stopped the trial (stopped.json): its rung and score."""
        try:
            why = json.loads(read_record(self.path / STOPPED))
            return f"stopped by {why['by']} after epoch {why['epoch']} ({why['metric']} {why['value']:.4f})"
        except (CorruptFile, ValueError, KeyError, TypeError):
            return "stopped by the study's scheduler"

    def stop(self, why: dict) -> None:
        """Mark the trial stopped by a study's scheduler (execution.tune_run.StudyScheduler); resuming clears it."""
        write_json(self.path / STOPPED, why)

    def _stopped_before_a_checkpoint(self) -> str:
        """Why a started trial with no checkpoint is pending: its last attempt (when, where) ended before one."""
        try:
            attempts = self.attempts() if (self.path / ATTEMPTS).exists() else []
            last = attempts[-1] if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict) else {}
        except CorruptFile:
            return ""
        if not last:
            return ""
        return (
            f"started {last.get('started', '?')} on {last.get('node', '?')} (attempt {len(attempts)}), stopped before "
            "its first checkpoint: its worker exited or was killed; `harness run` starts it again"
        )

    # --- writing (the trainer, on the main rank)
    def begin(self, config: dict, node: str, from_epoch: int, extra: dict[str, dict] | None = None) -> None:
        """Record this run of the trial (node, the epoch it starts after) and write its configuration."""
        import time

        attempts = self.attempts() if (self.path / ATTEMPTS).exists() else []
        attempts.append({"node": node, "from_epoch": from_epoch, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_json(self.path / ATTEMPTS, attempts)
        write_yaml(self.path / CONFIG, config)
        for name, content in (extra or {}).items():
            write_json(self.path / name, content)

    def clear(self) -> None:
        """A fresh start: drop what an earlier run left (results, checkpoints, the error)."""
        for name in (METRICS, LOGITS, HISTORY, CHECKPOINT, PREVIOUS, ERROR, STOPPED):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / EVAL_DIR, ignore_errors=True)  # evaluations of the network being replaced

    def read_checkpoint(self, name: str) -> dict | None:
        path = self.path / name
        return load_checkpoint(path) if path.exists() else None

    def set_aside(self, name: str) -> Path:
        """Move an unreadable checkpoint out of the resume chain (kept for inspection)."""
        target = self.path / (name + CORRUPT_SUFFIX)
        os.replace(self.path / name, target)
        return target

    def save_epoch(self, state: dict, history: list[dict]) -> None:
        """The end-of-epoch checkpoint (the previous one kept as the fallback), then the history."""
        import torch

        _atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f), keep_previous=self.path / PREVIOUS)
        write_csv(self.path / HISTORY, history)

    def finish(self, metrics: dict, arrays: dict[str, np.ndarray]) -> None:
        save_logits(self.path / LOGITS, **arrays)
        write_json(self.path / METRICS, metrics)  # last: its presence means finished

    def fail(self, text: str) -> None:
        write_text(self.path / ERROR, text)

    # --- evaluation sets (harness.evaluation.evaluate)
    def evaluation(self, set_id: str, problem: Callable[[Any], str | None] | None = None) -> dict | None:
        """The metrics record of an evaluated set, or None if it has not been evaluated (to the end); CorruptFile
        when it does not read or ``problem(record)`` (harness.evaluation.kinds.record_problem) finds one."""
        path = self.path / EVAL_DIR / set_id / METRICS
        if not path.exists():
            return None
        record = read_json(path)
        if not isinstance(record, dict) or "kind" not in record:
            raise CorruptFile(path, "not an evaluation record (no kind)")
        why = problem(record) if problem is not None else None
        if why:
            raise CorruptFile(path, why)
        return record

    def evaluations(self, problem: Callable[[Any], str | None] | None = None) -> dict[str, dict]:
        """Every evaluated set's record, by set id; an unreadable one is left out with a warning (it is evaluated
        again)."""
        out = {}
        for path in sorted((self.path / EVAL_DIR).glob(f"*/{METRICS}")):
            if path.parent.name.endswith(ASIDE_SUFFIX):
                continue
            try:
                out[path.parent.name] = self.evaluation(path.parent.name, problem)
            except CorruptFile as err:
                logger.warning(f"{err}; left out (`harness evaluate` computes it again)")
        return out

    def eval_part(self, set_id: str, part: str) -> dict[str, np.ndarray] | None:
        path = self.path / EVAL_DIR / set_id / f"{part}{PART_SUFFIX}"
        return load_logits(path) if path.exists() else None

    def save_eval_part(self, set_id: str, part: str, arrays: dict[str, np.ndarray]) -> None:
        save_logits(self.path / EVAL_DIR / set_id / f"{part}{PART_SUFFIX}", **arrays)

    def begin_eval(self, set_id: str, fingerprint: str | None) -> None:
        """Before a set's parts are predicted: parts an interrupted run saved for other images (another
        fingerprint, or none recorded) are dropped; then the images' fingerprint is written."""
        folder = self.path / EVAL_DIR / set_id
        marker = folder / EVAL_FINGERPRINT
        if folder.exists() and (not marker.exists() or marker.read_text() != str(fingerprint)):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(marker, str(fingerprint))

    def finish_eval(self, set_id: str, record: dict) -> None:
        write_json(self.path / EVAL_DIR / set_id / METRICS, record)

    def set_eval_aside(self, set_id: str) -> None:
        """Before a forced re-evaluation: the set's folder moves aside, to come back if no new record completes
        (``settle_eval``). An aside copy already there (a forced run that stopped) is the complete one: kept."""
        current, aside = self.path / EVAL_DIR / set_id, self.path / EVAL_DIR / (set_id + ASIDE_SUFFIX)
        if aside.exists():
            shutil.rmtree(current, ignore_errors=True)
        elif current.exists():
            os.replace(current, aside)

    def settle_eval(self, set_id: str) -> None:
        """After (or instead of) a forced re-evaluation: a complete new record stays and the aside copy goes;
        without one, the aside copy comes back. Nothing to do when nothing was set aside."""
        current, aside = self.path / EVAL_DIR / set_id, self.path / EVAL_DIR / (set_id + ASIDE_SUFFIX)
        if not aside.exists():
            return
        if (current / METRICS).exists():
            shutil.rmtree(aside)
        else:
            shutil.rmtree(current, ignore_errors=True)
            os.replace(aside, current)
