"""Several trials on one GPU: with CUDA MPS their kernels run concurrently; without it the driver
time-slices them (one context at a time), which shares the memory but not the time. `harness run`
uses a running MPS daemon, starts one for the sweep (and stops it after) when the node has the
control binary, and otherwise warns that packed trials will time-slice.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"


def pipe_dir() -> Path:
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))


def mps_state() -> str:
    """'running' (a daemon's control pipe exists), 'available' (the control binary is on PATH) or 'absent'."""
    if (pipe_dir() / "control").exists():
        return "running"
    return "available" if shutil.which(CONTROL) else "absent"


class GpuSharing:
    """Context for a sweep whose trials share GPUs (``shared``: some trial asks for a fraction of one).
    ``local``: the trials run on this node (a cluster's nodes set MPS up themselves, see ray_cluster.yaml)."""

    def __init__(self, shared: bool, local: bool):
        self.shared, self.local = shared, local
        self.started = False
        self.mode = "exclusive"

    def __enter__(self) -> "GpuSharing":
        if not self.shared:
            return self
        if not self.local:
            self.mode = "cluster"
            logger.info(
                "note: trials share GPUs; on a cluster each GPU node should run the CUDA MPS daemon "
                f"(`{CONTROL} -d` in its setup commands), or the trials time-slice"
            )
            return self
        state = mps_state()
        if state == "available":
            result = subprocess.run([CONTROL, "-d"], capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                self.started, state = True, "running"
                logger.info(f"CUDA MPS daemon started for this sweep ({CONTROL} -d); stopped when it ends")
            else:
                logger.warning(f"could not start CUDA MPS ({result.stderr.strip()[:200]})")
                state = "absent"
        if state == "running":
            self.mode = "mps"
        else:
            self.mode = "time-slicing"
            logger.warning(
                "trials share GPUs without CUDA MPS (no running daemon, no nvidia-cuda-mps-control on "
                "PATH): the driver time-slices them, so k packed trials run about as fast as k in a row; expect "
                "less than the planned gain"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            subprocess.run([CONTROL], input="quit\n", capture_output=True, text=True, timeout=30)
