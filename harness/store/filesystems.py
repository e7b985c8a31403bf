"""Where a sweep keeps its trial folders on disk: whether every node of a cluster can reach it (a retried trial
resumes from the checkpoint its first node wrote, so the storage must be a filesystem every node mounts: NFS, EFS,
Lustre, ...), whether it is writable; and the user's cache folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from harness.core import environment
from harness.core.config import ConfigError

# Filesystem types (as /proc/mounts names them) that every node of a cluster can mount.
NETWORK_FILESYSTEMS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "lustre",
    "gpfs",
    "beegfs",
    "ceph",
    "glusterfs",
    "9p",
    "wekafs",
    "fuse.s3fs",
    "fuse.gcsfuse",
    "fuse.juicefs",
    "fuse.sshfs",
    "fuse.glusterfs",
    "fuse.ceph-fuse",
    "fuse.mountpoint-s3",
    "fuse.rclone",
}


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point above it), e.g. 'ext4', 'nfs4'."""
    path = Path(path).resolve()
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    best, fstype = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fstype = point, fields[2]
    return fstype


def storage_problem(storage: Path, hosts: set[str], fstype: str | None = None) -> str | None:
    """Why ``storage`` cannot serve a cluster on ``hosts``, or None. HARNESS_SHARED_STORAGE=1 vouches
    for a shared filesystem this check does not know."""
    if len(hosts) <= 1 or environment.text("HARNESS_SHARED_STORAGE") == "1":
        return None
    fstype = fstype or filesystem_type(storage)
    if fstype in NETWORK_FILESYSTEMS:
        return None
    return (
        f"storage {storage} is on a node-local filesystem ({fstype}), but the Ray cluster spans {len(hosts)} "
        f"hosts ({', '.join(sorted(hosts))}): a trial retried on another node could not resume and its results "
        f"would be scattered. Set the suite's `storage` to a shared filesystem mounted on every node (NFS, EFS, "
        f"Lustre, ...; see ray_cluster.yaml), or set HARNESS_SHARED_STORAGE=1 if this path is shared."
    )


def check_writable(folder: Path, what: str, create: bool = True) -> None:
    """ConfigError unless ``folder`` can be created and written here (storage under a file, in /proc, read-only...).
    ``create=False`` (a dry run) creates nothing: the nearest existing folder on its path must be writable."""
    folder = Path(folder)
    if not create:  # the run's own check, in a probe folder made and removed in the nearest existing one
        existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
        why = "not a folder" if not existing.is_dir() else None
        if why is None:
            try:
                probe = Path(tempfile.mkdtemp(prefix=".write-probe-", dir=existing))
                (probe / "file").write_bytes(b"")
                shutil.rmtree(probe)
            except OSError as err:  # root passes os.access anywhere, even in /proc: only a write tells
                why = f"not writable: {err.strerror or err}"
        if why is not None:
            raise ConfigError(
                f"{what}: {folder.absolute()} is not a writable folder ({existing} is {why}); "
                f"point `storage` at a folder you can write"
            )
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"{what}: {folder.resolve()} is not a writable folder ({err.strerror or err}); "
            f"point `storage` at a folder you can write"
        ) from None


def check_cluster_storage(storage: Path) -> None:
    """Raise ConfigError if the connected Ray cluster spans several hosts and ``storage`` is node-local."""
    import ray

    hosts = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    problem = storage_problem(Path(storage), hosts)
    if problem:
        raise ConfigError(problem)


def user_cache() -> Path:
    """What the harness keeps per user ($HARNESS_CACHE_DIR, else $XDG_CACHE_HOME/harness, else ~/.cache/harness):
    data fingerprints, FLOP counts,
    grid indexes, the empty MLflow store new sqlite stores are copied from, and (by default) the object-store staging
    area."""
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(environment.text("HARNESS_CACHE_DIR") or Path(xdg) / "harness")
