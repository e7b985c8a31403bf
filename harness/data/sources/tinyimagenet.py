"""Tiny ImageNet (the official ``tiny-imagenet-200/`` layout) and its corrupted copy Tiny-ImageNet-C."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.datasets import HALF, CorruptionSet, ImageArrays, ImageSplits, default_data_dir, register_dataset
from harness.data.errors import DataError
from harness.data.readers import check_arrays, find_folder, images_under, load_image, tree_files


def tinyimagenet_folder(data_dir: Path | None) -> Path:
    root = default_data_dir(data_dir)
    return find_folder(
        "tinyimagenet",
        [root / "tiny-imagenet-200", root / "tinyimagenet" / "tiny-imagenet-200", root],
        "wnids.txt",
        "Download tiny-imagenet-200.zip from the CS231n site, unzip it under the data folder "
        "(data_dir / --data-dir / $HARNESS_DATA_DIR).",
    )


def tinyimagenet_classes(data_dir: Path | None) -> list[str]:
    """The wnids in label order (wnids.txt's order)."""
    return tinyimagenet_folder(data_dir).joinpath("wnids.txt").read_text().split()


@register_dataset(
    "tinyimagenet",
    classes=200,
    resolution=64,
    train_size=100_000,
    test_size=10_000,
    mean=HALF,  # the authors' 0.5 / 0.5 (revision 1: ImageNet's mean and std before)
    std=HALF,
    revision=1,
    corruptions={"tinyimagenet-c": CorruptionSet(("Tiny-ImageNet-C", "tinyimagenet-c"), "folders")},
    files=lambda data_dir: tree_files(tinyimagenet_folder(data_dir), ("*.txt", "*.JPEG")),
)
def tinyimagenet(data_dir: Path | None = None, check_only: bool = False, **_) -> ImageSplits:
    """The official ``tiny-imagenet-200/`` layout; the labelled ``val`` split serves as the test set."""
    folder = tinyimagenet_folder(data_dir)
    if check_only:
        return None
    wnids = tinyimagenet_classes(data_dir)
    label = {w: i for i, w in enumerate(wnids)}
    xs, ys = [], []
    for w in wnids:
        files = images_under(folder / "train" / w / "images", recursive=False)
        xs += [load_image(p, 64) for p in files]
        ys += [label[w]] * len(files)
    ann = folder / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"{ann}: missing; the tiny-imagenet-200 folder is incomplete")
    vx, vy = [], []
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        if parts[1] not in label:
            raise DataError(f"{ann}: unknown wnid {parts[1]!r} for {parts[0]}")
        vx.append(load_image(folder / "val" / "images" / parts[0], 64))
        vy.append(label[parts[1]])
    if not xs or not vx:
        raise DataError(f"{folder}: no training or validation images found")
    n = len(wnids)
    tr = check_arrays(ImageArrays(np.stack(xs), np.asarray(ys)), folder / "train", n)
    te = check_arrays(ImageArrays(np.stack(vx), np.asarray(vy)), folder / "val", n)
    return ImageSplits(tr, te, n, f"tiny-imagenet-200 folder {folder}", wnids)
