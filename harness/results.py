"""A trial's result folder, written atomically: a crash never leaves a half-written file.

<output_dir>/<name>/<trial_id>/
    config.yaml     the resolved trial configuration
    history.csv     one row per epoch
    checkpoint.pt   the last end-of-epoch training state (resume point)
    logits.npz      float16 test logits of every head (N, M, K) + labels (and validation ones)
    attempts.json   where each run of the trial (first start and every retry) ran, from which epoch
    metrics.json    final metrics; written last, so its presence means "finished"
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

CONFIG, HISTORY, CHECKPOINT, LOGITS, METRICS, ERROR, ATTEMPTS = (
    "config.yaml", "history.csv", "checkpoint.pt", "logits.npz", "metrics.json", "error.txt", "attempts.json")


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users of a shared store
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_checkpoint(path: Path, state: dict) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # weights-only: no code runs on load


def save_logits(path: Path, **arrays: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_logits(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def record_attempt(trial_dir: Path, node: str, from_epoch: int) -> None:
    """Append this run of the trial (node, the epoch it starts after, when) to attempts.json."""
    import time

    path = Path(trial_dir) / ATTEMPTS
    attempts = read_json(path) if path.exists() else []
    attempts.append({"node": node, "from_epoch": from_epoch, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json(path, attempts)


def trial_nodes(trial_dir: Path) -> list[str]:
    """Every node that ran the trial (first start and retries), in order, each once."""
    path = Path(trial_dir) / ATTEMPTS
    return list(dict.fromkeys(a["node"] for a in read_json(path))) if path.exists() else []


def is_finished(trial_dir: Path) -> bool:
    return (Path(trial_dir) / METRICS).exists()


def completed_epochs(trial_dir: Path) -> int:
    path = Path(trial_dir) / HISTORY
    return max(0, len(path.read_text().strip().splitlines()) - 1) if path.exists() else 0


def trial_state(trial_dir: Path) -> tuple[str, str]:
    """(state, error): finished | failed (with the error's last line) | partial | pending."""
    trial_dir = Path(trial_dir)
    if is_finished(trial_dir):
        return "finished", ""
    if (trial_dir / ERROR).exists():
        return "failed", (trial_dir / ERROR).read_text().strip().splitlines()[-1][:200]
    return ("partial" if (trial_dir / CHECKPOINT).exists() else "pending"), ""
