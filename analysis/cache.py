"""What the report computed, kept for the next report, in <suite>/.cache/report.json: a value per (kind, input
files), keyed by the files' identity (path, size, modification and status-change times, inode: a rewrite in
place moves the ctime even when the mtime is set back), the aggregation rule and the analysis code;
and per figure or table written, the content of the rows it was made from. A second report of an unchanged suite
reads every per-trial and per-ensemble number and keeps every file; a changed file, row, rule or code computes
again. Many values are computed in worker processes, with progress in the log."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from harness.core.schema import REPORT_CACHE, SUITE_CACHE

_ACTIVE: list["ReportCache"] = []
_ROOT = Path(__file__).resolve().parents[1]
# the code behind the cached numbers: the collection, the ensembles, the statistics and every metric module
_CODE = (
    "analysis/collect.py",
    "analysis/ensembles.py",
    "analysis/stats.py",
    "harness/evaluation/ensembles.py",
    *sorted(str(p.relative_to(_ROOT)) for p in (_ROOT / "harness" / "metrics").glob("*.py")),
)
_OUTPUT_CODE = ("analysis/figures.py", "analysis/robustness.py", "analysis/output.py", "analysis/tables.py")


def _code_version(files: tuple[str, ...] = _CODE) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update((_ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def _signing_key() -> bytes:
    """This user's key for the report caches they write (made once, readable by them alone)."""
    from harness.store.filesystems import user_cache

    path = user_cache() / "report-cache.key"
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def _signature(content: dict) -> str:
    import hmac

    return hmac.new(_signing_key(), json.dumps(content, sort_keys=True).encode(), "sha256").hexdigest()


class ReportCache:
    """Kept values are trusted only from a cache this user wrote and nobody changed since: the file carries an HMAC
    of its content under a key of this user's (store.filesystems.user_cache). A cache from a shared folder, edited by
    hand, or of the wrong shape is recomputed, never shown."""

    def __init__(self, suite_dir: Path, rule: str, enabled: bool = True, figures: bool = True):
        self.path = Path(suite_dir) / SUITE_CACHE / REPORT_CACHE
        self.rule = rule  # the report's aggregation rule: part of every key (a value under one rule is not another's)
        self.version = _code_version()
        self.enabled = enabled  # False: `harness report --verify`, every value computed, nothing kept
        self.values, self.outputs = {}, {}
        try:
            stored = json.loads(self.path.read_text()) if enabled else {}
            content = {k: stored.get(k) for k in ("version", "values", "output_code", "outputs")}
            if stored and hmac_equal(stored.get("signature"), _signature(content)):
                if stored.get("version") == self.version and isinstance(stored["values"], dict):
                    self.values = stored["values"]
                if stored.get("output_code") == _code_version(_OUTPUT_CODE) and isinstance(stored["outputs"], dict):
                    self.outputs = stored["outputs"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.values, self.outputs = {}, {}
        self.hits = self.misses = 0
        self.workers = None  # the report's worker processes, started on first need, stopped with the report
        self.figures = figures  # False: `harness report --no-figures`

    def key(self, kind: str, files: list[Path]) -> str:
        identity = []
        for f in files:
            info = os.stat(f)
            identity.append((os.path.abspath(f), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino))
        return hashlib.sha256(json.dumps([kind, self.rule, identity]).encode()).hexdigest()

    def get(self, kind: str, files: list[Path], compute: Callable[[], Any]) -> Any:
        return self.lookup(self.key(kind, files), compute)

    def lookup(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value kept under ``key``, or ``compute()``'s, kept."""
        if key in self.values:
            self.hits += 1
            return self.values[key]
        self.misses += 1
        self.values[key] = value = compute()
        return value

    def save(self) -> None:
        from harness.store.files import write_json

        if not self.enabled:
            return
        content = {
            "version": self.version,
            "values": self.values,
            "output_code": _code_version(_OUTPUT_CODE),
            "outputs": self.outputs,
        }
        try:
            write_json(self.path, {**content, "signature": _signature(json.loads(json.dumps(content)))})
        except OSError:  # a read-only results folder: the cache is only a cache
            pass


def hmac_equal(given, expected: str) -> bool:
    import hmac

    return isinstance(given, str) and hmac.compare_digest(given, expected)


@contextlib.contextmanager
def reading(suite_dir: Path, rule: str, enabled: bool = True, figures: bool = True):
    """Values computed inside the block (under the aggregation ``rule``) are looked up in, and added to, the suite's
    cache (saved at the end); ``enabled=False``: nothing read from it or written to it (every value computed);
    ``figures=False``: no figure drawn inside the block (``figure`` answers one that does not exist)."""
    cache = ReportCache(suite_dir, rule, enabled, figures)
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.pop()
        if cache.workers is not None:
            cache.workers.shutdown(cancel_futures=True)
        cache.save()


def drawing_figures() -> bool:
    """Whether the report being built draws its figures (not `harness report --no-figures`)."""
    return _ACTIVE[-1].figures if _ACTIVE else True


def cached(kind: str, files: list[Path], compute: Callable[[], Any]) -> Any:
    """``compute()``, or its value from the active cache (none active: always computed)."""
    return _ACTIVE[-1].get(kind, files, compute) if _ACTIVE else compute()


PARALLEL_FROM = 200  # values to compute before worker processes pay for their start (~3 s of imports each)


def cached_map(kind: str, jobs: list[tuple[list[Path], Any]], fn: Callable[[Any], Any], what: str) -> list:
    """``[fn(arg) for files, arg in jobs]``, each value through the active cache (keyed by its files, as ``cached``);
    the missing ones computed in worker processes (one per core, up to 8) when there are many, with progress in the
    log. ``fn`` must be a module-level function (it is sent to the workers by name)."""
    cache = _ACTIVE[-1] if _ACTIVE else None
    keys = [cache.key(kind, files) if cache is not None else None for files, _ in jobs]
    values = [cache.values.get(k, _MISSING) if cache is not None else _MISSING for k in keys]
    todo = [i for i, v in enumerate(values) if v is _MISSING]
    if cache is not None:
        cache.hits += len(jobs) - len(todo)
        cache.misses += len(todo)
    for i, value in zip(todo, _compute_all(fn, [jobs[i][1] for i in todo], what)):
        values[i] = value
        if cache is not None:
            cache.values[keys[i]] = value
    return values


_MISSING = object()


def _compute_all(fn: Callable[[Any], Any], args: list, what: str):
    workers = min(8, os.cpu_count() or 1)
    if len(args) < PARALLEL_FROM or workers < 2:
        yield from progress(map(fn, args), len(args), what)
        return
    import logging
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cache = _ACTIVE[-1] if _ACTIVE else None
    pool = cache.workers if cache is not None else None
    if pool is None:  # one pool per report: its processes' start (imports) paid once
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker)
        if cache is not None:
            cache.workers = pool
    logging.getLogger("analysis.report").info(f"report: computing {len(args):,} {what} in {workers} processes")
    try:
        yield from progress(pool.map(fn, args, chunksize=max(1, len(args) // (8 * workers))), len(args), what)
    finally:
        if cache is None:
            pool.shutdown(cancel_futures=True)


def progress(values, total: int, what: str, every_s: float = 10.0):
    """``values`` passed through, with a line in the log every ``every_s`` seconds: how many of ``total`` ``what``."""
    import logging
    import time

    started = last = time.monotonic()
    for done, value in enumerate(values, 1):
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            logging.getLogger("analysis.report").info(f"report: {done:,}/{total:,} {what} ({last - started:.0f} s)")
        yield value


def _worker() -> None:
    """A report worker process: one thread (the processes are the parallelism)."""
    import torch

    torch.set_num_threads(1)


def memo(kind: str, inputs: list, compute: Callable[[], Any]) -> Any:
    """``compute()``, or its value from the active cache for the same ``inputs`` (JSON-able values, e.g. a
    bootstrap's samples): for what is computed from numbers rather than files."""
    if not _ACTIVE:
        return compute()
    key = hashlib.sha256(json.dumps([kind, _ACTIVE[-1].rule, inputs], default=str).encode()).hexdigest()
    return _ACTIVE[-1].lookup(key, compute)


def _content_key(inputs: list, rule: str) -> str:
    """A digest of a figure's inputs: frames by their content (values, columns, order), the rule, anything else
    by its JSON text."""
    digest = hashlib.sha256(rule.encode())
    for item in inputs:
        if hasattr(item, "to_json"):  # columns sorted: cached records come back with their keys sorted
            item = item.reindex(columns=sorted(item.columns, key=str))
            text = item.to_json(orient="split", double_precision=15, default_handler=str)
        else:
            text = json.dumps(item, sort_keys=True, default=str)
        digest.update(text.encode())
    return digest.hexdigest()


def kept(name: str, inputs: list, make: Callable[[], list[Path]]) -> list[Path]:
    """``make()`` (it writes report files and returns them), unless the active cache made ``name`` from the same
    ``inputs`` and those files are still there unchanged: then their paths, nothing written."""
    cache = _ACTIVE[-1] if _ACTIVE else None
    if cache is None:
        return make()
    key = _content_key(inputs, cache.rule)
    files = _unchanged(cache, name, key)
    if files is not None:
        return files
    files = make()
    cache.misses += 1
    cache.outputs[name] = {"key": key, "files": {str(f): _identity(f) for f in files}}
    return files


def _unchanged(cache: ReportCache, name: str, key: str) -> list[Path] | None:
    """The files ``name`` was made into from inputs of digest ``key``, if they are still there unchanged."""
    record = cache.outputs.get(name)
    if isinstance(record, dict) and record.get("key") == key and isinstance(record.get("files"), dict):
        try:
            if all(_identity(f) == identity for f, identity in record["files"].items()):
                cache.hits += 1
                return [Path(f) for f in record["files"]]
        except OSError:
            pass
    return None


def _identity(path) -> list[int]:
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


class Figure:
    """A figure of the report, drawn here, kept from an earlier report, or being drawn in a worker process."""

    def __init__(self, files: list[Path] | None = None, future=None, record=None):
        self.files, self.future, self.record = files, future, record

    def exists(self) -> bool:
        """Whether there is a figure (waits for a worker's drawing, and records its files in the cache)."""
        if self.future is not None:
            self.files, self.future = [Path(f) for f in self.future.result()], None
            cache, name, key = self.record
            cache.outputs[name] = {"key": key, "files": {str(f): _identity(f) for f in self.files}}
        return bool(self.files)


def figure(path: Path, draw: Callable, *args, **kwargs) -> Figure:
    """The figure ``path`` (PNG and SVG beside it) drawn by ``draw(*args, path=path, **kwargs)`` (a module-level
    function returning a matplotlib figure, or None when there is nothing to draw), unless ``kept`` from the same
    arguments; drawn in the report's worker processes when it has them (a large report), else here; none in a
    report without figures."""
    cache = _ACTIVE[-1] if _ACTIVE else None
    if cache is not None and not cache.figures:
        return Figure([])
    if cache is None or cache.workers is None:
        return Figure(kept(Path(path).name, [*args, *kwargs.values()], lambda: _draw(draw, args, kwargs, path)))
    name, key = Path(path).name, _content_key([*args, *kwargs.values()], cache.rule)
    files = _unchanged(cache, name, key)
    if files is not None:
        return Figure(files)
    cache.misses += 1
    return Figure(future=cache.workers.submit(_draw, draw, args, kwargs, str(path)), record=(cache, name, key))


def _draw(draw: Callable, args: tuple, kwargs: dict, path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig = draw(*args, path=Path(path), **kwargs)
    if fig is None:
        return []
    plt.close(fig)
    return [Path(path).with_suffix(".png"), Path(path).with_suffix(".svg")]
