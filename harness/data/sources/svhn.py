"""SVHN (Netzer et al., 2011): the official ``train_32x32.mat``/``test_32x32.mat``; digit 0 is stored as 10."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.core import bounded_read
from harness.data.datasets import SVHN_MEAN, SVHN_STD, ImageArrays, ImageSplits, default_data_dir, register_dataset
from harness.data.errors import DataError
from harness.data.readers import check_arrays, find_folder, tree_files


def svhn_folder(data_dir: Path | None) -> Path:
    root = default_data_dir(data_dir)
    return find_folder(
        "svhn",
        [root / "svhn", root / "SVHN", root],
        "test_32x32.mat",
        "Download train_32x32.mat and test_32x32.mat from ufldl.stanford.edu/housenumbers into <data folder>/svhn/.",
    )


def _read_svhn_mat(path: Path) -> ImageArrays:
    from scipy.io import loadmat

    try:
        bounded_read.require_regular(path)
        mat = loadmat(path)
        x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))  # (32, 32, 3, N)
        y = np.asarray(mat["y"], dtype=np.int64).ravel() % 10  # the official files label the digit 0 as 10
    except Exception as err:
        raise DataError(f"{path}: cannot read as SVHN's official .mat (X, y) ({err})") from None
    return check_arrays(ImageArrays(x, y), path, 10)


@register_dataset(
    "svhn",
    classes=10,
    resolution=32,
    train_size=73_257,
    test_size=26_032,
    mean=SVHN_MEAN,
    std=SVHN_STD,
    files=lambda data_dir: tree_files(svhn_folder(data_dir), ("*_32x32.mat",)),
)
def svhn(data_dir: Path | None = None, check_only: bool = False, **_) -> ImageSplits:
    """SVHN's official cropped-digit files ``train_32x32.mat`` and ``test_32x32.mat``."""
    folder = svhn_folder(data_dir)
    if check_only:
        return None
    test = _read_svhn_mat(folder / "test_32x32.mat")
    train_file = folder / "train_32x32.mat"
    train = _read_svhn_mat(train_file) if train_file.is_file() else ImageArrays(test.x[:0], test.y[:0])
    return ImageSplits(train, test, 10, f"SVHN .mat folder {folder}", [str(i) for i in range(10)])
