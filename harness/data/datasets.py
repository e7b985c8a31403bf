"""Datasets as uint8 arrays: every source ends as ``ImageSplits`` (NHWC uint8 images, int64 labels).

This module holds the spec (``DatasetSpec``), the registry and the normalisation statistics; the file readers
the sources share are in readers.py. Each dataset is one file of ``harness/data/sources/`` (discovered) or of a
plugin, registered with ``@register_dataset``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from harness.core import environment
from harness.core.registry import Registry
from harness.data.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class ImageArrays:
    x: np.ndarray  # uint8, (N, H, W, 3)
    y: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.x[idx], self.y[idx])


@dataclass
class ImageSplits:
    train: ImageArrays
    test: ImageArrays
    num_classes: int
    source: str  # where the data came from, for the record
    classes: list[str] = field(default_factory=list)
    val: ImageArrays | None = None
    train_index: np.ndarray | None = None  # rows of the source's train split kept in ``train``
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per-channel normalisation on the [0, 1] scale: the spec's
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


Reader = Callable[..., Optional[ImageSplits]]  # (data_dir, download, check_only, synthetic_*) -> splits (None: check)


@dataclass(frozen=True)
class CorruptionSet:
    """A corrupted copy of a dataset's test split in the layout it is downloaded in (harness evaluate)."""

    folders: tuple[str, ...]  # folder names looked for under the data folder
    layout: str  # "npy": <corruption>.npy (5 x N) + labels.npy; "folders": <corruption>/<severity>/<class>/*


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the harness knows of a dataset, in one place: how to read it, its classes, resolution and split
    sizes (the cost estimate), its normalisation (training, and every evaluation set of a trial trained on it) and
    its corruption sets. Every registered dataset's test split also serves as an OOD set (``ood:<name>``).
    Sizes of None come from the trial config (the synthetic dataset)."""

    name: str
    read: Reader
    classes: int | None
    resolution: int | None
    train_size: int | None
    test_size: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    corruptions: dict[str, CorruptionSet] = field(default_factory=dict)
    # (data_dir) -> (the files the reader reads, their folder); None: the data is a function of the recipe
    files: Callable[[Path | None], tuple[list[Path], Path]] | None = None
    # bumped when the dataset is read or normalised otherwise (in the trial id when not 0: older results are not
    # reused)
    revision: int = 0

    def fingerprint(self, data_dir: Path | None) -> str | None:
        """The content hash of the files the reader would read now (harness.data.fingerprint); DataError when
        they cannot be found."""
        if self.files is None:
            return None
        from harness.data.fingerprint import fingerprint

        return fingerprint(*self.files(data_dir))

    def __call__(self, **kwargs) -> ImageSplits | None:
        """The splits (``check_only=True``: None, or DataError when the data cannot be found), normalised as the
        spec says; a copy of the last splits this process read when its files are unchanged (`_last_read`)."""
        files = None if kwargs.get("check_only") else self._files_now(kwargs.get("data_dir"))
        key = None if files is None else (files, bool(kwargs.get("test_only")))  # test_only: a reader may skip train
        if key is not None and _last_read and _last_read[0] == key:
            return _copy(_last_read[1])
        data = self.read(**kwargs)
        if data is not None:
            data.mean, data.std = self.mean, self.std
            if key is not None:
                _last_read[:] = [key, _copy(data)]
        return data

    def _files_now(self, data_dir: Path | None) -> tuple | None:
        """What identifies the files the reader would read now (path, inode, size, mtime); None: not files, or not
        found (the reader then says where it looked, or downloads)."""
        if self.files is None:
            return None
        try:
            stats = [(str(p), p.stat()) for p in self.files(data_dir)[0]]
        except (DataError, OSError):
            return None
        return (self.name, *((p, st.st_ino, st.st_size, st.st_mtime_ns) for p, st in stats))

    def shape(self, synthetic_classes: int = 10, synthetic_resolution: int = 32) -> tuple[int, int]:
        """(classes, image side)."""
        return self.classes or synthetic_classes, self.resolution or synthetic_resolution


DATASETS: Registry[DatasetSpec] = Registry("dataset", package="harness.data.sources")  # one file per dataset
# The splits this process read last, by their files' identity: Tune runs a sweep's trials one after another in the
# same worker, and an OOD set may be a trained dataset's test split; reading and checking CIFAR-100 again costs
# seconds of CPU per trial. One entry (one dataset's memory); callers get copies, so none can change another's.
_last_read: list = []


def _copy(data: ImageSplits) -> ImageSplits:
    arrays = (ImageArrays(a.x.copy(), a.y.copy()) for a in (data.train, data.test))
    return ImageSplits(*arrays, data.num_classes, data.source, list(data.classes), mean=data.mean, std=data.std)


def register_dataset(name: str, **spec) -> Callable[[Reader], Reader]:
    """``@register_dataset("cifar100", classes=100, ...)`` on a reader: a new dataset is a reader and this line."""

    def add(reader: Reader) -> Reader:
        DATASETS.register(name)(DatasetSpec(name, reader, **spec))
        return reader

    return add


# The authors normalise both CIFARs with these statistics (docs/recipe.md §3).
CIFAR_MEAN = (0.4914, 0.4824, 0.4467)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
# The authors normalise Tiny ImageNet with 0.5 / 0.5 per channel (their standard_augmentations; docs/recipe.md §3).
HALF = (0.5, 0.5, 0.5)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)


def default_data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    return Path(environment.text("HARNESS_DATA_DIR"))
