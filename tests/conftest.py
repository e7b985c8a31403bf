import os
from pathlib import Path

import pytest

from harness.config import TrialConfig


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
