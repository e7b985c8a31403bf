"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009): a folder with ``train.npz``/``test.npz``, the official pickle folder
(``cifar-100-python/``, ``cifar-10-batches-py/``), the official archive downloaded, or an image-folder tree
``train/<class>/*.png``; their corrupted copies CIFAR-10-C/100-C."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.data.datasets import CIFAR_MEAN, CIFAR_STD, CorruptionSet, ImageSplits, default_data_dir, register_dataset
from harness.data.errors import DataError
from harness.data.readers import check_npz_folder, images_under, read_cifar_pickle, read_image_folder, read_npz_folder

logger = logging.getLogger(__name__)


def _is_image_folder(path: Path) -> bool:
    return (
        (path / "train").is_dir() and (path / "test").is_dir() and any(p.is_dir() for p in (path / "train").iterdir())
    )


def _find_cifar(name: str, num_classes: int, pickle_dir: str, root: Path):
    """-> (reader, folder, description) of the first layout found under root, or (None, looked-at list)."""
    looked: list[str] = []
    for base in (root / name, root):
        looked.append(f"{base}/train.npz")
        if (base / "train.npz").exists():
            return (read_npz_folder, base, f"npz folder {base}"), looked
        for folder in (base / pickle_dir, base):
            looked.append(f"{folder}/ (official pickle files)")
            if (folder / ("train" if num_classes == 100 else "data_batch_1")).is_file():
                return (read_cifar_pickle, folder, f"official pickle folder {folder}"), looked
        looked.append(f"{base}/train/<class>/*.png and {base}/test/<class>/*.png")
        if _is_image_folder(base):
            return (read_image_folder, base, f"image folder {base}"), looked
        if (base / "train").is_dir() and any(p.is_dir() for p in (base / "train").iterdir()):
            raise DataError(
                f"{base}: an image tree with train/<class>/ but no test/ folder; add test/<class>/*.png beside it"
            )
    return None, looked


# The official archives (Krizhevsky, 2009); the same ones torchvision downloads.
CIFAR_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}


def _cifar(
    name: str, num_classes: int, pickle_dir: str, data_dir: Path | None, download: bool, check_only: bool = False
) -> ImageSplits | None:
    root = default_data_dir(data_dir)
    found, looked = _find_cifar(name, num_classes, pickle_dir, root)
    if found is None and download:
        if check_only:
            return None
        from harness.data.download import extract, fetch

        url, md5 = CIFAR_ARCHIVES[name]
        archive = fetch(url, root / url.rsplit("/", 1)[1], md5)
        extract(archive, root)
        found = (read_cifar_pickle, root / pickle_dir, f"official archive downloaded into {root}")
    if found is None:
        raise DataError(
            f"{name} not found. Looked for:\n  " + "\n  ".join(looked) + "\n"
            f"Point --data-dir (or `data_dir:` in the file, or $HARNESS_DATA_DIR) at a folder holding one of the "
            f"layouts above, or let the harness download it into {root}: `download: true` in a suite's `base:` "
            f"(`harness run`), or `--set download=true` (`harness train`)."
        )
    reader, folder, description = found
    if check_only:
        if reader is read_npz_folder:
            check_npz_folder(folder)
        return None
    tr, te, classes = reader(folder, num_classes)
    return ImageSplits(tr, te, num_classes, description, classes)


def cifar_c(name: str) -> dict[str, CorruptionSet]:
    """CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich, 2019), and the stand-in `harness data corrupt` writes."""
    upper = name.upper().replace("CIFAR", "CIFAR-")
    return {
        f"{name}-c": CorruptionSet((f"{upper}-C", f"{name}-c"), "npy"),
        f"{name}-c-generated": CorruptionSet((f"{upper}-C-generated",), "npy"),
    }


CIFAR_SIZES = dict(resolution=32, train_size=50_000, test_size=10_000, mean=CIFAR_MEAN, std=CIFAR_STD)
PICKLE_FILES = {
    100: ("train", "test", "meta"),
    10: tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
}


def cifar_files(name: str, num_classes: int, pickle_dir: str):
    """The files a CIFAR reader reads in the layout it finds under a data folder."""

    def files(data_dir: Path | None) -> tuple[list[Path], Path]:
        found, _ = _find_cifar(name, num_classes, pickle_dir, default_data_dir(data_dir))
        if found is None:
            _cifar(name, num_classes, pickle_dir, data_dir, download=False, check_only=True)  # raises: where it looked
        reader, folder, _ = found
        if reader is read_npz_folder:
            return [folder / "train.npz", folder / "test.npz"], folder
        if reader is read_cifar_pickle:
            return [folder / n for n in PICKLE_FILES[num_classes]], folder
        return [p for split in ("train", "test") for p in images_under(folder / split)], folder

    return files


@register_dataset(
    "cifar100",
    classes=100,
    corruptions=cifar_c("cifar100"),
    files=cifar_files("cifar100", 100, "cifar-100-python"),
    **CIFAR_SIZES,
)
def cifar100(data_dir: Path | None = None, download: bool = False, check_only: bool = False, **_) -> ImageSplits:
    return _cifar("cifar100", 100, "cifar-100-python", data_dir, download, check_only)


@register_dataset(
    "cifar10",
    classes=10,
    corruptions=cifar_c("cifar10"),
    files=cifar_files("cifar10", 10, "cifar-10-batches-py"),
    **CIFAR_SIZES,
)
def cifar10(data_dir: Path | None = None, download: bool = False, check_only: bool = False, **_) -> ImageSplits:
    return _cifar("cifar10", 10, "cifar-10-batches-py", data_dir, download, check_only)
