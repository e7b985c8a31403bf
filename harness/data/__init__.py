"""Data: datasets (uint8 arrays) and the batch loader."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.data.datasets import DATASETS, ImageArrays, ImageSplits, register_dataset
from harness.data.errors import DataError
from harness.data.loader import Sampling, TrainLoader

if TYPE_CHECKING:
    from harness.core.config import TrialConfig

# Subsets and the validation split use a fixed seed, so every trial of a sweep sees the same images.
SPLIT_SEED = 0


def check_available(cfg: TrialConfig) -> None:
    """Raise DataError (where it looked, how to get it) if the trial's dataset cannot be found; reads nothing."""
    DATASETS.get(cfg.dataset)(data_dir=cfg.data_dir, download=cfg.download, check_only=True)


def with_fingerprints(trials: list[TrialConfig]) -> list[TrialConfig]:
    """The trials with the fingerprint of the data each would read now (computed once per dataset and folder)."""
    prints: dict[tuple, str | None] = {}
    out = []
    for t in trials:
        key = (t.dataset, str(t.data_dir))
        if key not in prints:
            try:
                prints[key] = DATASETS.get(t.dataset).fingerprint(t.data_dir)
            except DataError:
                if not t.download:
                    raise
                prints[key] = None  # downloaded by the trial, which records its fingerprint
        out.append(t.model_copy(update={"data_fingerprint": prints[key]}))
    return out


def data_fingerprint(cfg: TrialConfig) -> str | None:
    """The fingerprint of the data ``cfg`` reads now; DataError if it differs from the one ``cfg`` carries (the
    data changed since the run checked it)."""
    current = DATASETS.get(cfg.dataset).fingerprint(cfg.data_dir)
    if cfg.data_fingerprint and current != cfg.data_fingerprint:
        raise DataError(
            f"{cfg.trial_id}: the data in {cfg.data_dir or '$HARNESS_DATA_DIR'} changed since the run started "
            f"(fingerprint {cfg.data_fingerprint}, now {current}); run again"
        )
    return current


def check_same_data(cfg: TrialConfig, recorded: dict) -> None:
    """DataError if a trial folder's recorded config was trained on other data than ``cfg`` would read now."""
    before = recorded.get("data_fingerprint")
    if before and cfg.data_fingerprint and before != cfg.data_fingerprint:
        raise DataError(
            f"{cfg.trial_id}: trained on other data ({cfg.dataset} fingerprint {before}) than the data it would read "
            f"now ({cfg.data_fingerprint}, {cfg.data_dir or '$HARNESS_DATA_DIR'}); its results are not reused: point "
            f"data_dir back at the old data, or run with --restart to train it again on this data"
        )


def load_dataset(cfg: TrialConfig) -> ImageSplits:
    """The dataset a trial config asks for, with its subsets and held-out validation split applied."""
    data = DATASETS.get(cfg.dataset)(
        data_dir=cfg.data_dir,
        download=cfg.download,
        synthetic_size=cfg.synthetic_size,
        synthetic_classes=cfg.synthetic_classes,
        synthetic_resolution=cfg.synthetic_resolution,
    )
    rows = np.arange(len(data.train))  # the source's train rows in play: taken once, with every subset applied
    if cfg.class_subset is not None:
        rows = keep_classes(data, cfg.class_subset)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(rows))
    if cfg.val_size:
        if cfg.val_size >= len(order):
            raise DataError(f"val_size {cfg.val_size} leaves no training images (train has {len(order)})")
        data.val, order = data.train.take(rows[np.sort(order[: cfg.val_size])]), order[cfg.val_size :]
    if cfg.train_subset is not None:
        order = order[: cfg.train_subset]
    data.train_index = rows[np.sort(order)]
    data.train = data.train.take(data.train_index)
    if cfg.test_subset is not None and cfg.test_subset < len(data.test):
        data.test = data.test.take(np.sort(rng.permutation(len(data.test))[: cfg.test_subset]))
    return data


def keep_classes(data: ImageSplits, n: int) -> np.ndarray:
    """Keep classes 0..n-1 (a class split: the others are held out, e.g. as near-OOD): the test split's images and
    the class names; -> the train split's rows of those classes, for the caller to take with its subsets."""
    if n > data.num_classes:
        raise DataError(f"class_subset {n}: the dataset has only {data.num_classes} classes")
    data.test = data.test.take(np.flatnonzero(data.test.y < n))
    data.num_classes, data.classes = n, data.classes[:n]
    return np.flatnonzero(data.train.y < n)


def held_out_classes(data: ImageSplits, n: int) -> ImageArrays:
    """The test images of classes n and above (before ``keep_classes``)."""
    return data.test.take(np.flatnonzero(data.test.y >= n))


def check_batches(cfg: TrialConfig, train_images: int) -> None:
    """A full batch to train on, or DataError saying how to get one."""
    if cfg.drop_last and train_images * cfg.b < cfg.batch_size:
        raise DataError(
            f"batch_size {cfg.batch_size} is larger than the {train_images} training images x b = {cfg.b}: no full "
            f"batch to train on; lower batch_size, use more images (train_subset), or set drop_last: false"
        )


def check_data(trials: list[TrialConfig]) -> None:
    """What ``harness train`` checks of the data, for a whole grid before it runs (the dry run too): each dataset
    read once as a trial reads it (labels in range, one image shape, arrays not pickles), and every trial's
    training set holding a full batch. A dataset a trial will download is left to it."""
    read: dict[tuple, ImageSplits] = {}
    for cfg in trials:
        key = (cfg.dataset, str(cfg.data_dir), cfg.synthetic_size, cfg.synthetic_classes, cfg.synthetic_resolution)
        if key not in read:
            try:
                check_available(cfg)
            except DataError:
                if cfg.download:
                    continue
                raise
            read[key] = load_dataset(cfg.model_copy(update={"class_subset": None, "val_size": 0, "train_subset": None,
                                                            "test_subset": None}))  # fmt: skip
        if key not in read:
            continue
        y = read[key].train.y
        n = int((y < cfg.class_subset).sum()) if cfg.class_subset is not None else len(y)
        if cfg.val_size >= n:
            raise DataError(f"val_size {cfg.val_size} leaves no training images (train has {n})")
        check_batches(cfg, min(n - cfg.val_size, cfg.train_subset or n))


def build_train_loader(cfg: TrialConfig, data: ImageSplits, device):
    """The training loader the config asks for: ``device`` (default) or ``ffcv``."""
    check_batches(cfg, len(data.train))
    if cfg.loader == "ffcv":
        from harness.data.ffcv_loader import FFCVTrainLoader

        return FFCVTrainLoader(cfg, data.train_index, data.train.y, data.train.x.shape[1], data.mean, data.std, device)
    return TrainLoader(data.train, Sampling.of(cfg), data.mean, data.std, device)


__all__ = [
    "DATASETS",
    "DataError",
    "ImageArrays",
    "ImageSplits",
    "build_train_loader",
    "check_available",
    "held_out_classes",
    "keep_classes",
    "load_dataset",
    "register_dataset",
]
