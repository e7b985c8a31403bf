"""harness.engines.compiled_ops: a build lock left by a killed builder is removed and a stuck one is named."""

import shutil
import subprocess
import sys

import pytest

from helpers import harness_env

HOLDER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # as torch's FileBaton takes a build lock
print("holding", flush=True)
time.sleep(600)
"""


LOAD = """
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
from harness.engines.compiled_ops import load_shm_op
print("loaded", load_shm_op() is not None)
"""


@pytest.fixture
def extensions(tmp_path):
    """A private torch extensions folder holding the op as built for this machine (built first if need be)."""
    from harness.engines.compiled_ops import lock_path

    built = lock_path().parent
    if not (built / "deepspeed_shm_comm.so").exists():
        subprocess.run([sys.executable, "-c", LOAD], env=harness_env(), check=True, capture_output=True, timeout=900)
    shutil.copytree(built, tmp_path / "ext" / built.name, symlinks=True)
    return tmp_path / "ext" / built.name / "lock"


@pytest.mark.slow  # trains or builds reports: the full lane
def test_a_build_lock_left_by_a_killed_builder_is_removed_and_a_stuck_one_is_named(extensions):
    env = harness_env(TORCH_EXTENSIONS_DIR=str(extensions.parent.parent), HARNESS_OP_BUILD_TIMEOUT="3")
    extensions.unlink(missing_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(extensions)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    proc = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1  # a live builder that does not finish: named after the bound, not waited on for ever
    assert f"waiting for pid {holder.pid} to finish building deepspeed_shm_comm (lock {extensions})" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"harness.engines.compiled_ops.OpBuildError: {extensions}: DeepSpeed's deepspeed_shm_comm op has been "
        f"built by pid {holder.pid} ({sys.executable} -c"
    )
    assert proc.stderr.strip().endswith("for more than 3 s; if that process is stuck, stop it (its lock goes with it)")

    holder.kill()  # killed mid-build: its lock file stays behind, held by no one
    holder.wait()
    assert extensions.exists()
    proc = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "loaded True" in proc.stdout, proc.stderr[-2000:]
    assert f"{extensions}: a stale build lock (its builder is gone) removed" in proc.stderr
