"""A synthetic dataset, a function of its keys (no files): class prototypes plus noise, for tests and quick runs."""

from __future__ import annotations

import numpy as np

from harness.data.datasets import ImageArrays, ImageSplits, register_dataset


def synthetic_arrays(sizes: tuple[int, ...], num_classes: int, resolution: int, seed: int) -> list[ImageArrays]:
    """Splits sharing one set of class prototypes, each class-balanced. A class = a smooth random
    colour pattern, shifted and noised per image: learnable by a small convnet."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(num_classes, 4, 4, 3))
    reps = -(-resolution // 4)
    prototypes = np.kron(coarse, np.ones((1, reps, reps, 1)))[:, :resolution, :resolution]
    splits = []
    for n in sizes:
        y = rng.permutation(np.arange(n) % num_classes)
        shifts = rng.integers(-2, 3, size=(n, 2))
        imgs = np.empty((n, resolution, resolution, 3), dtype=np.uint8)
        for i in range(n):
            proto = np.roll(prototypes[y[i]], tuple(shifts[i]), axis=(0, 1))
            noisy = 128 + 50 * proto + rng.normal(scale=25, size=proto.shape)
            imgs[i] = np.clip(noisy, 0, 255).astype(np.uint8)
        splits.append(ImageArrays(imgs, y.astype(np.int64)))
    return splits


@register_dataset(
    "synthetic",
    classes=None,  # synthetic_classes
    resolution=None,  # synthetic_resolution
    train_size=None,  # synthetic_size, and a fifth of it for the test split
    test_size=None,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
)
def synthetic(
    synthetic_size: int = 2000,
    synthetic_classes: int = 10,
    synthetic_resolution: int = 32,
    check_only: bool = False,
    **_,
) -> ImageSplits:
    """Deterministic: the same arguments always give the same images (test set = a fifth of the size)."""
    if check_only:
        return None
    seed = synthetic_size * 1_000_003 + synthetic_classes * 1009 + synthetic_resolution
    tr, te = synthetic_arrays(
        (synthetic_size, max(synthetic_size // 5, synthetic_classes)), synthetic_classes, synthetic_resolution, seed
    )
    return ImageSplits(
        tr,
        te,
        synthetic_classes,
        "synthetic",
        [f"class{i}" for i in range(synthetic_classes)],
    )
