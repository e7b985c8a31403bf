"""MNIST (LeCun et al., 1998) from its official IDX files (``train-images-idx3-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]`` and their ``-labels-idx1-ubyte`` files) under ``<data>/mnist/`` (or torchvision's
``MNIST/raw/``). The grey digits are read as RGB (the channel repeated), as OpenOOD's far-OOD MNIST is."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from harness.data.datasets import ImageArrays, ImageSplits, default_data_dir, register_dataset
from harness.data.errors import DataError
from harness.data.readers import find_folder

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def mnist_folder(data_dir: Path | None) -> Path:
    root = default_data_dir(data_dir)
    candidates = [root / "mnist", root / "MNIST" / "raw", root]
    for folder in candidates:  # gzipped or not
        if (folder / (FILES["test"][0] + ".gz")).is_file():
            return folder
    return find_folder("mnist", candidates, FILES["test"][0], "download the four IDX files of MNIST into <data>/mnist/")


MAX_IDX_BYTES = 64 << 20  # the largest official file, train images, is 47 MB inflated: a bound, not a guess


def _idx(folder: Path, name: str) -> np.ndarray:
    path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read(MAX_IDX_BYTES + 1)  # a small .gz can inflate to gigabytes: read no more than MNIST holds
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read it ({err})") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{path}: inflates past {MAX_IDX_BYTES:,} bytes, more than any MNIST file holds")
    if len(data) < 8 or data[:2] != b"\0\0" or data[2] != 8:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: holds {body.size} bytes for a {shape} array")
    return body.reshape(shape)


def _split(folder: Path, split: str) -> ImageArrays:
    images, labels = (_idx(folder, f) for f in FILES[split])
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    return ImageArrays(np.repeat(images[..., None], 3, axis=-1), labels.astype(np.int64))


@register_dataset(
    "mnist",
    classes=10,
    resolution=28,
    train_size=60_000,
    test_size=10_000,
    mean=(0.1307,) * 3,  # MNIST's train-split statistics
    std=(0.3081,) * 3,
    files=lambda data_dir: (
        sorted(p for p in mnist_folder(data_dir).iterdir() if p.name.split(".")[0] in sum(FILES.values(), ())),
        mnist_folder(data_dir),
    ),
)
def mnist(data_dir: Path | None = None, check_only: bool = False, test_only: bool = False, **_) -> ImageSplits:
    """``test_only``: the train split is neither needed nor read (an OOD set reads the test split alone)."""
    folder = mnist_folder(data_dir)
    if check_only:
        return None
    empty = ImageArrays(np.zeros((0, 28, 28, 3), np.uint8), np.zeros(0, np.int64))
    train = empty if test_only else _split(folder, "train")
    return ImageSplits(train, _split(folder, "test"), 10, f"MNIST IDX files in {folder}", [str(i) for i in range(10)])
