"""Where a sweep keeps its trial folders, and whether every node of the cluster can reach it.

A trial retried on another node resumes from the checkpoint its first node wrote, so on a cluster
that spans several hosts the storage must be a shared filesystem (NFS, EFS, Lustre, ...).
"""
from __future__ import annotations

import os
from pathlib import Path

# Filesystem types (as /proc/mounts names them) that every node of a cluster can mount.
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs", "9p", "wekafs",
                       "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.sshfs", "fuse.glusterfs", "fuse.ceph-fuse",
                       "fuse.mountpoint-s3", "fuse.rclone"}


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
    if len(hosts) <= 1 or os.environ.get("HARNESS_SHARED_STORAGE") == "1":
        return None
    fstype = fstype or filesystem_type(storage)
    if fstype in NETWORK_FILESYSTEMS:
        return None
    return (f"storage {storage} is on a node-local filesystem ({fstype}), but the Ray cluster spans {len(hosts)} "
            f"hosts ({', '.join(sorted(hosts))}): a trial retried on another node could not resume and its results "
            f"would be scattered. Set the suite's `storage` to a shared filesystem mounted on every node (NFS, EFS, "
            f"Lustre, ...; see ray_cluster.yaml), or set HARNESS_SHARED_STORAGE=1 if this path is shared.")


def check_cluster_storage(storage: Path) -> None:
    """Raise ConfigError if the connected Ray cluster spans several hosts and ``storage`` is node-local."""
    import ray

    from harness.config import ConfigError

    hosts = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
    problem = storage_problem(Path(storage), hosts)
    if problem:
        raise ConfigError(problem)
