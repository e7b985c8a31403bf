import os
import shutil
import tempfile
from pathlib import Path

import pytest

from harness.config import TrialConfig

# Ray keeps its sessions, and its record of the "current" cluster, under $RAY_TMPDIR/ray: the tests get a
# folder of their own (short: Ray's socket paths must fit in 107 bytes), so they never join, or are joined
# by, a user's Ray or another test run's.
RAY_TMPDIR = tempfile.mkdtemp(prefix="hr-", dir="/tmp")
os.environ["RAY_TMPDIR"] = RAY_TMPDIR


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(RAY_TMPDIR, ignore_errors=True)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real CIFAR-100 folder. In CI (.ci/run sets HARNESS_DATA_DIR) these tests must run, never skip."""
    root = os.environ.get("HARNESS_DATA_DIR")
    if not root or not (Path(root) / "cifar100" / "train.npz").exists():
        pytest.fail("real-data test: set HARNESS_DATA_DIR to a folder holding cifar100/train.npz "
                    "(.ci/run points it at ../shared/data)")
    return Path(root)


def tiny_config(**overrides) -> TrialConfig:
    """A synthetic trial small enough to train in seconds."""
    base = dict(dataset="synthetic", synthetic_size=256, synthetic_classes=4, synthetic_resolution=16,
                depth=10, width=1, epochs=2, batch_size=32, eval_batch_size=128, progress=False, eval_every=1)
    base.update(overrides)
    return TrialConfig(**base)
