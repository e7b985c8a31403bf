"""Places365 (Zhou et al., 2017) in its "standard" small-image layout, ``<data>/places365/{train,val}/<class>/*.jpg``
(256 x 256 images), read at 64 x 64; only the validation images are read, as both splits (its test split is
OpenOOD's far-OOD Places365 for the CIFARs, which resize it to 32 anyway). OpenOOD uses a subset of the images;
point ``ood:folder=`` at OpenOOD's own list to use exactly it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.datasets import ImageArrays, ImageSplits, default_data_dir, register_dataset
from harness.data.errors import DataError
from harness.data.readers import find_folder, images_under, load_image, tree_files

SIDE = 64  # read size: 365 classes x 100 validation images at 256 x 256 would take 7 GB


def places365_folder(data_dir: Path | None) -> Path:
    root = default_data_dir(data_dir)
    candidates = [root / "places365", root / "places365_standard"]
    for folder in candidates:
        if (folder / "val").is_dir():
            return folder
    return find_folder(
        "places365",
        candidates,
        "val",
        "download Places365's small-image standard set and unpack it as <data>/places365",
    )


def _split(folder: Path, classes: list[str]) -> ImageArrays:
    xs, ys = [], []
    for label, name in enumerate(classes):
        for path in images_under(folder / name) if (folder / name).is_dir() else []:
            xs.append(load_image(path, SIDE, resize=True))
            ys.append(label)
    if not xs:
        raise DataError(f"{folder}: no images found")
    return ImageArrays(np.stack(xs), np.asarray(ys, np.int64))


@register_dataset(
    "places365",
    classes=365,
    resolution=SIDE,
    train_size=1_803_460,
    test_size=36_500,
    mean=(0.485, 0.456, 0.406),  # the ImageNet statistics its reference models use
    std=(0.229, 0.224, 0.225),
    files=lambda data_dir: tree_files(places365_folder(data_dir), ("*.jpg", "*.png")),
)
def places365(data_dir: Path | None = None, check_only: bool = False, **_) -> ImageSplits:
    folder = places365_folder(data_dir)
    if check_only:
        return None
    classes = sorted(p.name for p in (folder / "val").iterdir() if p.is_dir())
    val = _split(folder / "val", classes)  # an OOD set here: its 1.8M training images are not read
    return ImageSplits(val, val, len(classes), f"Places365 validation images in {folder}", classes)
