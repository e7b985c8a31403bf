"""The reference pipeline `harness bench` measures against: how the authors' code feeds a GPU.

A torchvision ``DataLoader`` whose dataset opens each image as a PIL image, crops, flips and
normalises it with torchvision's transforms, and draws the method's mixing per sample in Python
(partners, Mixup/CutMix, the MixMo ratios and masks, the reweighted targets); a batch sampler
repeats every index b times. The step on top is fp32, eager, NCHW, with a per-parameter SGD.
The per-batch choices of Cut-MixMo (cut or linear, which input gets the box) are drawn per sample
here: the same marginal distribution per sample, and the same amount of per-sample work.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.data import ImageArrays
from harness.methods.mixing import box, loss_weights


def sample_masks(method, progress: float, rng: np.random.Generator) -> tuple[np.ndarray | None, np.ndarray]:
    """One sample's masks (M, 1, s, s) summing to 1 over M (None = plain sum) and ratios (M,): what the method
    declares (``Method.reference_masks``)."""
    return type(method).reference_masks(method.cfg, method.M, method.mix_size, progress, rng)


class ReferenceDataset(Dataset):
    """Item i: image i in input slot 0 and M - 1 random partners, each PIL-augmented, mixed per sample."""

    def __init__(
        self,
        arrays: ImageArrays,
        method,
        mean,
        std,
        crop_padding: int = 4,
        flip: bool = True,
        progress: float = 0.0,
        seed: int = 0,
    ):
        self.arrays, self.method, self.progress = arrays, method, progress
        size = arrays.x.shape[1]
        self.transform = T.Compose(
            [
                T.RandomCrop(size, padding=crop_padding),
                T.RandomHorizontalFlip(0.5 if flip else 0.0),
                T.ToTensor(),
                T.Normalize(mean, std),
            ]
        )
        self.rng = np.random.default_rng(seed)  # workers replace it with their own streams

    def __len__(self) -> int:
        return len(self.arrays)

    def image(self, i: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.arrays.x[i]))

    def __getitem__(self, i: int) -> dict:
        method, cfg, rng = self.method, self.method.cfg, self.rng
        M, K, n = method.M, method.num_classes, len(self.arrays)
        idx = [int(i)] + [int(j) for j in rng.integers(0, n, M - 1)]
        inputs = torch.stack([self.image(j) for j in idx])
        labels = torch.as_tensor(self.arrays.y[idx])
        targets = F.one_hot(labels, K).float()
        masks, lams = sample_masks(method, self.progress, rng)
        if method.msda != "none":
            for slot in range(M):
                if rng.random() >= cfg.msda_prob:
                    continue
                j = int(rng.integers(n))
                ratio = float(rng.beta(cfg.msda_alpha, cfg.msda_alpha))
                other = self.image(j)
                if method.msda == "mixup":
                    inputs[slot] = (1 - ratio) * inputs[slot] + ratio * other
                    kappa = ratio
                else:
                    H, W = inputs.shape[-2:]
                    cut = torch.from_numpy(box(ratio, H, W, rng))
                    inputs[slot] = inputs[slot] * (1 - cut) + other * cut
                    kappa = float(cut.mean())
                    if masks is not None and masks.shape[-1] > 1:
                        visible = F.interpolate(torch.from_numpy(masks[slot])[None], size=(H, W), mode="nearest")[0, 0]
                        if visible.sum() > 0:
                            kappa = float((cut * visible).sum() / visible.sum())
                targets[slot] = (1 - kappa) * targets[slot] + kappa * F.one_hot(
                    torch.tensor(self.arrays.y[j]), K
                ).float()
        targets = targets * loss_weights(torch.from_numpy(lams), cfg.r).unsqueeze(-1)
        item = {"inputs": inputs, "targets": targets, "labels": labels}
        if masks is not None:
            item["mix"] = method.mix_weights(torch.from_numpy(masks))
        return item


class RepeatedBatchSampler(Sampler):
    """Batches of batch_size / b distinct indices, each repeated b times in a row; a new permutation per epoch."""

    def __init__(self, n: int, batch_size: int, repetitions: int, seed: int = 0):
        self.n, self.distinct, self.repetitions = n, batch_size // repetitions, repetitions
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return max(1, self.n // self.distinct)  # the authors' sampler drops the last partial batch

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator)
        for chunk in order.split(self.distinct)[: len(self)]:
            yield chunk.repeat_interleave(self.repetitions).tolist()


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)  # each worker its own stream


def reference_loader(
    arrays: ImageArrays,
    method,
    mean,
    std,
    batch_size: int,
    repetitions: int,
    workers: int,
    pin_memory: bool = False,
    crop_padding: int = 4,
    flip: bool = True,
    seed: int = 0,
) -> DataLoader:
    dataset = ReferenceDataset(arrays, method, mean, std, crop_padding, flip, seed=seed)
    return DataLoader(
        dataset,
        batch_sampler=RepeatedBatchSampler(len(arrays), batch_size, repetitions, seed),
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
    )
