"""Batch loader: sampling with batch repetition and crop/flip augmentation as batched tensor ops.

The whole uint8 dataset sits on the training device; a batch is built with a handful of tensor
ops (no per-sample Python, no host round-trips). All randomness comes from torch's global RNG,
whose state the trainer checkpoints, so a resumed run draws the same batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from harness.core.config import TrialConfig
from harness.data.datasets import ImageArrays


def to_device_images(arrays: ImageArrays, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(arrays.x).to(device).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    return x, torch.from_numpy(arrays.y).to(device)


class Normalize:
    def __init__(self, mean, std, device):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return (x_uint8.float() - self.mean) / self.std


def _default(key: str):
    return TrialConfig.model_fields[key].default


@dataclass(frozen=True)
class Sampling:
    """How an epoch samples and augments: the slice of the trial config a training loader reads (its defaults are
    TrialConfig's)."""

    batch_size: int  # counts repeated entries
    repetitions: int = 1  # b: each sampled image appears b times per batch, augmented independently
    crop_padding: int = _default("crop_padding")
    flip: bool = _default("flip")
    drop_last: bool = _default("drop_last")

    @classmethod
    def of(cls, cfg: TrialConfig) -> "Sampling":
        return cls(cfg.batch_size, cfg.b, cfg.crop_padding, cfg.flip, cfg.drop_last)


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Random crop of the original size from the zero-padded images, then a random horizontal flip.

    Each image gets its own offsets: the crops are picked from a strided view of every window of the
    padded batch (no copy), so one gather moves whole rows; about 3x an element-wise gather on a CPU.
    """
    n, c, h, w = x.shape
    dev = x.device
    if padding:
        windows = F.pad(x, (padding, padding, padding, padding)).unfold(2, h, 1).unfold(3, w, 1)  # n,c,2p+1,2p+1,h,w
        dy = torch.randint(0, 2 * padding + 1, (n,), device=dev)
        dx = torch.randint(0, 2 * padding + 1, (n,), device=dev)
        x = windows[torch.arange(n, device=dev), :, dy, dx]
    if flip:
        x = torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.5, x.flip(3), x)
    return x


class TrainLoader:
    """Yields (images float NCHW normalised, labels) for one epoch at a time.

    With repetition b, each batch holds batch_size / b distinct images, each b times, every copy
    augmented independently; an epoch is floor(N * b / batch_size) steps, the last partial batch dropped
    as in the authors' loader (``drop_last=False``: ceil, every image seen b times). ``sample(k)`` draws
    k augmented training images uniformly, independently of the epoch's order.
    """

    def __init__(self, arrays: ImageArrays, sampling: Sampling, mean, std, device: torch.device):
        self.x, self.y = to_device_images(arrays, device)
        self.drop_last = sampling.drop_last
        self.distinct = sampling.batch_size // sampling.repetitions
        self.repetitions = sampling.repetitions
        self.crop_padding, self.flip = sampling.crop_padding, sampling.flip
        self.normalize = Normalize(mean, std, device)

    def __len__(self) -> int:
        steps = len(self.y) / self.distinct
        return max(1, math.floor(steps)) if self.drop_last else math.ceil(steps)

    def sample_indices(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.y), device=self.y.device)
        for chunk in order.split(self.distinct)[: len(self)]:
            yield chunk.repeat_interleave(self.repetitions)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """k training images drawn uniformly with replacement, augmented like a batch, and their labels."""
        idx = torch.randint(0, len(self.y), (k,), device=self.y.device)
        return self.normalize(random_crop_flip(self.x[idx], self.crop_padding, self.flip)), self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.sample_indices():
            images = random_crop_flip(self.x[idx], self.crop_padding, self.flip)
            yield self.normalize(images), self.y[idx]


class EvalLoader:
    """The split in order, normalised, without augmentation; uploaded to the device once."""

    def __init__(self, arrays: ImageArrays, batch_size: int, mean, std, device: torch.device):
        self.x, self.y = to_device_images(arrays, device)
        self.batch_size = batch_size
        self.normalize = Normalize(mean, std, device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.y), self.batch_size):
            yield self.normalize(self.x[start : start + self.batch_size]), self.y[start : start + self.batch_size]
