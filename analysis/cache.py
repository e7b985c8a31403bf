"""What the report computed from saved logits, kept for the next report: a value per (kind, input files), keyed
by the files' identity (path, size, modification time), the aggregation rule and the analysis code, in
<suite>/.cache/report.json. A second report of an unchanged suite reads every per-trial and per-ensemble number
from it; a changed file, rule or code computes that value again."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from analysis import protocol

_ACTIVE: list["ReportCache"] = []
_CODE = ("analysis/collect.py", "analysis/ensembles.py", "analysis/stats.py", "harness/metrics.py")


def _code_version() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


class ReportCache:
    def __init__(self, suite_dir: Path):
        self.path = Path(suite_dir) / ".cache" / "report.json"
        self.version = _code_version()
        try:
            stored = json.loads(self.path.read_text())
            self.values = stored["values"] if stored.get("version") == self.version else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.values = {}
        self.hits = self.misses = 0

    def get(self, kind: str, files: list[Path], compute: Callable[[], Any]) -> Any:
        identity = []
        for f in files:
            info = os.stat(f)
            identity.append((str(Path(f).resolve()), info.st_size, info.st_mtime_ns))
        key = hashlib.sha256(json.dumps([kind, protocol.average(), identity]).encode()).hexdigest()
        if key in self.values:
            self.hits += 1
            return self.values[key]
        self.misses += 1
        self.values[key] = value = compute()
        return value

    def save(self) -> None:
        from harness.results import write_json

        try:
            write_json(self.path, {"version": self.version, "values": self.values})
        except OSError:  # a read-only results folder: the cache is only a cache
            pass


@contextlib.contextmanager
def reading(suite_dir: Path):
    """Values computed inside the block are looked up in, and added to, the suite's cache (saved at the end)."""
    cache = ReportCache(suite_dir)
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.pop()
        cache.save()


def cached(kind: str, files: list[Path], compute: Callable[[], Any]) -> Any:
    """``compute()``, or its value from the active cache (none active: always computed)."""
    return _ACTIVE[-1].get(kind, files, compute) if _ACTIVE else compute()
