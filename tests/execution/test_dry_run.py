"""`harness run --dry-run` refuses what training would: bad data files, a symlink loop, a batch larger than the data;
the plan's memory estimate."""

from pathlib import Path

import numpy as np
import pytest

from helpers import cli, write_suite


def test_a_symlink_loop_is_one_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    proc = cli("evaluate", tmp_path, "--on", f"ood:folder={tmp_path / 'a'}")
    assert proc.returncode == 2 and "cannot be resolved (Symlink loop" in proc.stderr, proc.stderr
    proc = cli("run", write_suite(tmp_path, eval_sets=[f"ood:folder={tmp_path / 'a'}"]), "--dry-run")
    assert proc.returncode == 2 and "eval_sets: " in proc.stderr and "Symlink loop" in proc.stderr, proc.stderr


def _cifar_folder(root: Path, train_x=None, train_y=None) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "cifar100"
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(folder / "train.npz", x=x if train_x is None else train_x, y=np.arange(40) % 100 if train_y is None else
             train_y)  # fmt: skip
    np.savez(folder / "test.npz", x=x[:10], y=np.arange(10))
    return folder


@pytest.mark.parametrize(
    "bad, message",
    [
        ("labels", "train.npz: labels outside 0..99"),
        ("shape", "train.npz: expected uint8 images (N, H, W, 3) and N labels, got uint8 (40, 32, 32) and (40,)"),
        ("pickle", "train.npz: cannot read as an npz with arrays 'x' and 'y'"),
        ("batch", "batch_size 64 is larger than the 40 training images x b = 1: no full batch to train on"),
    ],
)
def test_the_dry_run_refuses_what_train_would(tmp_path, bad, message):
    data = tmp_path / "data"
    x = np.zeros((40, 32, 32), np.uint8) if bad == "shape" else None
    folder = _cifar_folder(data, x, np.arange(40) + 90 if bad == "labels" else None)
    if bad == "pickle":  # an npz whose images are a pickled object array: refused unread
        np.savez(folder / "train.npz", x=np.array([{"planted": 1}] * 40, dtype=object), y=np.arange(40))
    base = {"dataset": "cifar100", "data_dir": str(data), "batch_size": 64 if bad == "batch" else 8}
    suite = write_suite(tmp_path, base=base)
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "results").exists()
