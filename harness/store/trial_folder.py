"""One trial's result folder (its files are named in harness.core.schema): what it holds, its state (pending,
partial, finished, failed, stopped, corrupt), and the trainer's, sweep's, tracker's and report's reads and writes
of it."""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

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
)
from harness.store.errors import CorruptFile
from harness.store.files import (
    atomic_write,
    load_checkpoint,
    load_logits,
    read_json,
    read_record,
    save_logits,
    write_csv,
    write_json,
    write_text,
    write_yaml,
)
from harness.store.verified import Verified, check_zip

logger = logging.getLogger(__name__)

_CONFIGS: dict[tuple, dict] = {}  # (config.yaml path, mtime, size) -> its parsed content


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
                check_zip(self.path / LOGITS, tuple(f"{m}.npy" for m in LOGITS_MEMBERS), thorough, verified)
                if CHECKPOINT in checkpoints:  # what `harness evaluate` and every later evaluation start from
                    check_zip(self.path / CHECKPOINT)
                return TrialState("finished", epochs)
            for name in checkpoints:
                check_zip(self.path / name)
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

        atomic_write(self.path / CHECKPOINT, lambda f: torch.save(state, f), keep_previous=self.path / PREVIOUS)
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
