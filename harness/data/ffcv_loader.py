"""The FFCV alternative to the device loader (``loader: ffcv``), for data read from ``.beton`` files.

``harness data prepare DATASET --format ffcv`` writes the raw uint8 train/test splits; the training
loader decodes, translates (crop with zero padding) and flips in FFCV's compiled CPU pipeline,
uploads uint8 batches and normalises them on the training device. Batch repetition is a traversal
order: every sampled index appears b times in a row, so each batch holds batch_size / b distinct
images, each copy augmented independently. Trap avoided (libffcv/ffcv#396): on the CPU, a pipeline
with ``NormalizeImage`` after ``ToTensor`` never finishes; the compiled image ops all stay before
``ToTensor`` and normalisation runs in torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from harness.data.datasets import ImageArrays, default_data_dir
from harness.data.errors import DataError
from harness.data.loader import Normalize, Sampling

if TYPE_CHECKING:
    from harness.core.config import TrialConfig


def require_ffcv():
    try:
        import ffcv  # noqa: F401
    except ImportError as err:
        raise DataError(
            "loader: ffcv needs the optional FFCV extra: apt-get install libopencv-dev libturbojpeg0-dev "
            f"pkg-config && pip install 'harness[ffcv]' ({err})"
        ) from None


def beton_dir(cfg: TrialConfig) -> Path:
    return Path(cfg.ffcv_dir) if cfg.ffcv_dir is not None else default_data_dir(cfg.data_dir) / "ffcv"


def beton_path(folder: Path, dataset: str, split: str) -> Path:
    return Path(folder) / f"{dataset}_{split}.beton"


class _Rows:
    """An indexed dataset over uint8 arrays, as FFCV's writer reads it."""

    def __init__(self, arrays: ImageArrays):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        return self.arrays.x[i], int(self.arrays.y[i])


def write_beton(arrays: ImageArrays, path: Path, workers: int = 2) -> Path:
    """Write images (raw, lossless) and labels; ``.json`` and ``.labels.npy`` beside it let a loader check
    that the file still matches the dataset it is used for."""
    require_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    side = arrays.x.shape[1]
    fields = {"image": RGBImageField(write_mode="raw", max_resolution=side), "label": IntField()}
    DatasetWriter(str(tmp), fields, num_workers=workers).from_indexed_dataset(_Rows(arrays))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"images": len(arrays), "resolution": side}))
    np.save(path.with_suffix(".labels.npy"), arrays.y)
    return path


def check_beton(path: Path, dataset: str, train_index: np.ndarray, labels: np.ndarray, resolution: int) -> None:
    """DataError unless the file holds this dataset: the same resolution and the same labels at the trial's rows."""
    redo = f"write it (again) with `harness data prepare {dataset} --format ffcv` (loader: ffcv)"
    if not path.exists():
        raise DataError(f"{path}: no FFCV file for {dataset}; {redo}")
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        stored = np.load(path.with_suffix(".labels.npy"), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: its .json/.labels.npy record is missing or unreadable ({err}); {redo}") from None
    if not (
        isinstance(meta, dict)
        and all(isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool) for k in ("images", "resolution"))
        and stored.ndim == 1
        and stored.dtype.kind in "iu"
    ):
        raise DataError(
            f"{path.with_suffix('.json')}: not the record `harness data prepare` writes (expected "
            f'{{"images": <int>, "resolution": <int>}} and a 1-D integer .labels.npy); {redo}'
        )
    if (
        meta["resolution"] != resolution
        or len(stored) <= int(train_index.max(initial=0))
        or not np.array_equal(stored[train_index], labels)
    ):
        raise DataError(
            f"{path}: holds {meta['images']} images of {meta['resolution']} px that do not match the "
            f"{dataset} train split in use ({resolution} px, labels differ); {redo}"
        )


def _repeated_order(base_order_cls, repetitions: int, seed: int):
    class RepeatedOrder(base_order_cls):
        """A fresh permutation per epoch, each index repeated b times in a row (batch repetition)."""

        def sample_order(self, epoch: int):
            perm = np.random.default_rng([seed, epoch]).permutation(self.indices)
            return np.repeat(perm, repetitions)

    return RepeatedOrder


class FFCVTrainLoader:
    """Yields (images float NCHW normalised on ``device``, labels) for one epoch at a time."""

    def __init__(
        self,
        cfg: TrialConfig,
        train_index: np.ndarray,
        labels: np.ndarray,
        resolution: int,
        mean,
        std,
        device: torch.device,
    ):
        """The config's sampling (harness.data.loader.Sampling.of), its seed, loader workers and FFCV folder."""
        sampling, seed = Sampling.of(cfg), cfg.seed
        require_ffcv()
        from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, Squeeze, ToTensor, ToTorchImage
        from ffcv.traversal_order import Random

        path = beton_path(beton_dir(cfg), cfg.dataset, "train")
        check_beton(path, cfg.dataset, train_index, labels, resolution)
        image_ops = [SimpleRGBImageDecoder()]  # compiled (numba) ops first, ToTensor last: see the module doc
        if sampling.crop_padding:
            image_ops.append(RandomTranslate(padding=sampling.crop_padding))
        if sampling.flip:
            image_ops.append(RandomHorizontalFlip())
        self.loader = Loader(
            str(path),
            batch_size=sampling.batch_size,
            num_workers=cfg.loader_workers,
            order=OrderOption.RANDOM,
            indices=np.asarray(train_index),
            drop_last=sampling.drop_last,  # the authors drop an epoch's last partial batch
            os_cache=True,
            seed=seed,
            pipelines={
                "image": image_ops + [ToTensor(), ToTorchImage()],
                "label": [IntDecoder(), ToTensor(), Squeeze()],
            },
        )
        # Loader(order=<a TraversalOrder subclass>) fails in ffcv 1.0.2 (it tests isinstance on the
        # class), so the repeated order replaces the random one after construction.
        self.loader.traversal_order = _repeated_order(Random, sampling.repetitions, seed)(self.loader)
        self.loader.first_traversal_order = self.loader.next_traversal_order()
        self.device = device
        self.normalize = Normalize(mean, std, device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        for x, y in self.loader:  # FFCV reuses its buffers: each batch is consumed before the next
            x = x.to(self.device, non_blocking=non_blocking)
            y = y.to(self.device, non_blocking=non_blocking).long()
            yield self.normalize(x), (y.clone() if self.device.type == "cpu" else y)
