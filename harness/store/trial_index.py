"""A suite's expanded trials kept on disk (a few fields each), so that `harness status` lists a grid of thousands
of trials without importing the registries (and torch) or validating every trial again.

The index is keyed by everything the expansion reads: the suite file's bytes and path, the working directory, the
environment variables it may expand, the data folder given, the harness's own source and the plugin files' bytes.
Anything it cannot key (a plugin module, an installed entry-point plugin, an object-store `storage`) means no index:
the suite is expanded as before."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

VERSION = 1
KEEP = 64  # indexes kept per user; the oldest beyond are removed
_ENV = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class TrialRow:
    """What `harness status` shows of a trial that has not necessarily started."""

    trial_id: str
    method: str
    width: int
    num_inputs: int
    b: int
    seed: int
    epochs: int
    trial_dir: Path

    @classmethod
    def of(cls, cfg) -> "TrialRow":
        return cls(cfg.trial_id, cfg.method, cfg.width, cfg.num_inputs, cfg.b, cfg.seed, cfg.epochs, cfg.trial_dir)


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """The harness package's code: a changed method, recipe or schema changes trial ids."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def key(suite_file: Path, data_dir: str | None, cli_plugins: list[str] = ()) -> str | None:
    """The index's key for this suite file as this command would expand it, or None when it cannot be keyed."""
    import yaml

    try:
        data = Path(suite_file).read_bytes()
        raw = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(raw, dict) or "://" in str(raw.get("storage", "")) or _entry_points():
        return None
    digest = hashlib.sha256(f"v{VERSION}\0{_source_digest()}\0{Path(suite_file).resolve()}\0{os.getcwd()}".encode())
    digest.update(data)
    text = data.decode("utf-8", "replace")
    names = sorted({"HOME", *_ENV.findall(text), *(k for k in os.environ if k.startswith(("HARNESS_", "MLFLOW_")))})
    digest.update(json.dumps([[[n, os.environ.get(n)] for n in names], data_dir]).encode())
    plugin_files = [Path(suite_file).parent / p for p in raw.get("plugins") or []] + [Path(p) for p in cli_plugins]
    for path in plugin_files:
        if not path.is_file():  # a module plugin: its code is not keyed here
            return None
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _entry_points() -> bool:
    from importlib.metadata import entry_points

    return bool(entry_points(group="harness.plugins"))


def _folder() -> Path:
    from harness.store.filesystems import user_cache

    return user_cache() / "suites"


def read(index_key: str | None) -> tuple[Path, list[TrialRow]] | None:
    """(the suite folder, its trials) as indexed under ``index_key``, or None."""
    if index_key is None:
        return None
    try:
        record = json.loads((_folder() / f"{index_key}.json").read_text())
        suite_dir = Path(record["suite_dir"])
        rows = [TrialRow(**{**r, "trial_dir": Path(r["trial_dir"])}) for r in record["trials"]]
        if not rows or not all(_valid(row, suite_dir) for row in rows):
            return None  # an index of the wrong shape is rebuilt from the suite, never shown
        return suite_dir, rows
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _valid(row: TrialRow, suite_dir: Path) -> bool:
    """Every field of its type (numbers are ints, not bools or strings), the id a folder name inside the suite."""
    numbers = (row.width, row.num_inputs, row.b, row.seed, row.epochs)
    return (
        all(isinstance(v, int) and not isinstance(v, bool) for v in numbers)
        and all(isinstance(v, str) for v in (row.trial_id, row.method))
        and bool(_ID.fullmatch(row.trial_id))
        and row.trial_dir == suite_dir / row.trial_id
    )


def write(index_key: str | None, suite_dir: Path, trials) -> None:
    """Index the expanded trials (TrialConfigs) under ``index_key``; a read-only home only means no index."""
    from harness.store.files import write_json

    if index_key is None:
        return
    rows = [{**asdict(TrialRow.of(t)), "trial_dir": str(t.trial_dir)} for t in trials]
    try:
        _folder().mkdir(parents=True, exist_ok=True)
        write_json(_folder() / f"{index_key}.json", {"suite_dir": str(suite_dir), "trials": rows})
        kept = sorted(_folder().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
