"""A suite's `storage` as an object store (s3://bucket/prefix, gs://..., any pyarrow.fs scheme): trials work in a
node-local staging folder and mirror it to the store after every epoch; a retried trial, the driver, status and
report download what they lack."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.core import environment, schema
from harness.core.config import ConfigError, TrialConfig
from harness.store.filesystems import user_cache

# what the driver, status and report never need to download
CACHE_ONLY = {schema.CHECKPOINT, schema.PREVIOUS, schema.DEEPSPEED_DIR}


_LAST = schema.CHECKPOINT  # pushed after the files it refers to


def is_uri(storage) -> bool:
    return "://" in str(storage)


def staging_root() -> Path:
    """Node-local folder where trials work and the driver caches results when storage is an object store."""
    return Path(environment.text("HARNESS_STAGING_DIR") or user_cache() / "staging")


def node_staging_dir() -> Path:
    """This node's working folder (one per Ray node, so nodes never share a working copy)."""
    from harness.core.parallel import node_name

    return staging_root() / node_name().replace("/", "-")


def driver_cache_dir(uri: str) -> Path:
    """The driver's (and `harness status` / `report`'s) local copy of a store's results."""
    return staging_root() / "driver" / hashlib.sha1(uri.rstrip("/").encode()).hexdigest()[:12]


class ObjectStore:
    """A storage URI through pyarrow.fs. Trials work in a node-local folder and mirror it here after
    every epoch (``push``); a trial retried on another node, the driver, status and report first
    download what they lack (``pull``). Only changed files move, by size and modification time."""

    SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")  # what pyarrow.fs opens from a URI

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        scheme = self.uri.split("://", 1)[0]
        if scheme not in self.SCHEMES or not self.uri.split("://", 1)[1]:
            raise ConfigError(
                f"storage {uri!r}: not an object-store URI pyarrow can open; use one of "
                f"{', '.join(s + '://bucket/prefix' for s in self.SCHEMES[:2])} (or {', '.join(self.SCHEMES[2:])}), "
                "or a filesystem path"
            )
        self._fs = None

    def _open(self):
        """(pyarrow filesystem, root path), opened on first use: S3 may ask the network for the bucket's region."""
        if self._fs is None:
            import pyarrow.fs

            try:
                self._fs, root = pyarrow.fs.FileSystem.from_uri(self.uri)
            except Exception as err:  # malformed URI, missing credentials, unknown bucket
                raise ConfigError(f"storage {self.uri!r}: pyarrow cannot open it ({err})") from None
            self._root = root.rstrip("/")
        return self._fs, self._root

    def list(self, rel: str) -> dict[str, tuple[int, int]]:
        """{path relative to rel: (size, mtime ns)} of the files under rel (empty if none)."""
        import pyarrow.fs

        fs, root = self._open()
        base = f"{root}/{rel}"
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True, allow_not_found=True))
        return {i.path[len(base) + 1 :]: (i.size, i.mtime_ns or 0) for i in infos if i.type == pyarrow.fs.FileType.File}

    def push(self, local: Path, rel: str, skip: set[str] = frozenset(), prune: bool = False) -> int:
        """Upload the files of ``local`` that changed since the last push or pull (the checkpoint last: it
        must not point at parts not yet uploaded); returns how many. ``prune`` also deletes from the store
        what was pushed or pulled here and is gone locally (a trial's older DeepSpeed tags)."""
        fs, root = self._open()
        local = Path(local)
        manifest = _read_manifest(local)
        sent = 0
        for path in sorted(local.rglob("*"), key=lambda p: (p.name == _LAST, p)):
            name = path.relative_to(local).as_posix()
            if not path.is_file() or _hidden(name) or skip & set(name.split("/")):
                continue
            stat = path.stat()
            if manifest.get(name) == [stat.st_size, stat.st_mtime_ns]:
                continue
            with path.open("rb") as src, fs.open_output_stream(f"{root}/{rel}/{name}") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            manifest[name] = [stat.st_size, stat.st_mtime_ns]
            sent += 1
        gone = [name for name in manifest if not (local / name).is_file()] if prune else []
        for name in gone:
            del manifest[name]
            # the highest folder deleted locally goes as a whole (S3 would keep an empty marker for it)
            folder = next((p for p in reversed(Path(name).parents[:-1]) if not (local / p).exists()), None)
            try:
                if folder is None:
                    fs.delete_file(f"{root}/{rel}/{name}")
                else:
                    fs.delete_dir(f"{root}/{rel}/{folder.as_posix()}")
            except FileNotFoundError:
                pass  # another rank of the trial deleted it first
        if sent or gone:
            _write_manifest(local, manifest)
        return sent

    def pull(self, rel: str, local: Path, skip: set[str] = frozenset()) -> int:
        """Download the files under ``rel`` that ``local`` lacks or holds an older copy of; returns how many."""
        fs, root = self._open()
        local = Path(local)
        manifest = _read_manifest(local)
        got = 0
        for name, (size, mtime_ns) in self.list(rel).items():
            if _hidden(name) or skip & set(name.split("/")):
                continue
            target = local / name
            if target.exists() and (target.stat().st_size == size and target.stat().st_mtime_ns >= mtime_ns):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.pull")
            with fs.open_input_stream(f"{root}/{rel}/{name}") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, target)
            manifest[name] = [size, mtime_ns]  # already in the store: no need to push it back
            got += 1
        if got:
            _write_manifest(local, manifest)
        return got

    def read_text(self, rel: str) -> str:
        """A small file's text; FileNotFoundError if there is none."""
        fs, root = self._open()
        with fs.open_input_stream(f"{root}/{rel}") as src:
            return src.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        fs, root = self._open()
        with fs.open_output_stream(f"{root}/{rel}") as dst:
            dst.write(text.encode())

    def delete_file(self, rel: str) -> None:
        fs, root = self._open()
        try:
            fs.delete_file(f"{root}/{rel}")
        except FileNotFoundError:
            pass

    def delete(self, rel: str) -> None:
        fs, root = self._open()
        fs.delete_dir_contents(f"{root}/{rel}", missing_dir_ok=True)


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def _read_manifest(local: Path) -> dict:
    try:
        return json.loads((local / schema.PUSHED).read_text())
    except (OSError, ValueError):
        return {}


def _write_manifest(local: Path, manifest: dict) -> None:
    local.mkdir(parents=True, exist_ok=True)
    tmp = local / f"{schema.PUSHED}.tmp"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, local / schema.PUSHED)


@dataclass
class WorkingCopy:
    """A trial folder in node-local staging, mirrored to the trial's object store (no-op without one)."""

    cfg: TrialConfig  # pointed at the local folder
    store: ObjectStore | None = None
    skip: frozenset = frozenset()

    @property
    def rel(self) -> str:
        return f"{self.cfg.name}/{self.cfg.trial_id}"

    def pull(self) -> None:
        if self.store:
            self.store.pull(self.rel, self.cfg.trial_dir, self.skip)

    def push(self) -> None:
        if self.store:
            self.store.push(self.cfg.trial_dir, self.rel, self.skip, prune=True)


def working_copy(cfg: TrialConfig, rank: int | None = None, skip: frozenset = frozenset()) -> WorkingCopy:
    """Where a trial works. With an object store: this node's staging folder (one per rank of a trial of
    several workers, so no two processes share a copy), filled afresh from the store: the store, not what
    an earlier attempt left here unpushed, is the state a retry resumes from. Otherwise the trial's folder."""
    if not cfg.store:
        return WorkingCopy(cfg)
    folder = node_staging_dir() if rank is None else node_staging_dir() / f"rank{rank}"
    copy = WorkingCopy(cfg.model_copy(update={"output_dir": folder}), ObjectStore(cfg.store), frozenset(skip))
    shutil.rmtree(copy.cfg.trial_dir, ignore_errors=True)
    copy.pull()
    return copy
