"""A dataset's identity: a content hash of the files its reader reads (names relative to its folder, and each
file's SHA-256). Hashes of large files (archives, arrays) are cached by path, size and modification time in the
user's cache ($HARNESS_CACHE_DIR, else ~/.cache/harness), so CIFAR's 180 MB are hashed once, not on every run;
small files (one image each) are cheaper to hash again than to keep in the cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_memory: dict[str, list] | None = None
CACHED_FROM_BYTES = 1 << 20


def _cache_file() -> Path:
    from harness.store.filesystems import user_cache

    return user_cache() / "file_hashes.json"


def _cache() -> dict[str, list]:
    global _memory
    if _memory is None:
        try:
            loaded = json.loads(_cache_file().read_text())
            _memory = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            _memory = {}  # no cache yet, or an unreadable one: hashed again
    return _memory


def _save(cache: dict) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError:  # a read-only home: the hashes are recomputed next time, nothing else changes
        pass


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, from the cache while the file is unchanged: its size, modification time, inode and
    status-change time (ctime: a rewrite in place whose mtime was set back still moves it)."""
    path = Path(path).resolve()
    stat = path.stat()
    key, cache = str(path), _cache()
    entry = cache.get(key)
    identity = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    if isinstance(entry, list) and len(entry) == 5 and entry[:4] == identity:
        return entry[4]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    if stat.st_size >= CACHED_FROM_BYTES:
        cache[key] = [*identity, digest.hexdigest()]
    return digest.hexdigest()


def fingerprint(files: list[Path], root: Path) -> str:
    """One id for a set of files under ``root``: equal iff the same names hold the same bytes."""
    files = sorted(Path(f) for f in files)
    before = dict(_cache())
    digest = hashlib.sha256()
    for f in files:
        name = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        digest.update(f"{name}\0{file_digest(f)}\n".encode())
    if _cache() != before:
        _save(_cache())
    return "sha256:" + digest.hexdigest()[:16]
