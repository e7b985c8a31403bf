"""Datasets as uint8 arrays: every source ends as ``ImageSplits`` (NHWC uint8 images, int64 labels).

Sources for CIFAR: a folder with ``train.npz``/``test.npz``, the official pickle folder
(``cifar-100-python/``, ``cifar-10-batches-py/``), the official archive downloaded, or an image-folder
tree ``train/<class>/*.png``. Tiny ImageNet reads the official ``tiny-imagenet-200/`` layout,
SVHN the official ``train_32x32.mat``/``test_32x32.mat``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from harness.data.errors import DataError
from harness.registry import Registry

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

    def fingerprint(self, data_dir: Path | None) -> str | None:
        """The content hash of the files the reader would read now (harness.data.fingerprint); DataError when
        they cannot be found."""
        if self.files is None:
            return None
        from harness.data.fingerprint import fingerprint

        return fingerprint(*self.files(data_dir))

    def __call__(self, **kwargs) -> ImageSplits | None:
        """The splits (``check_only=True``: None, or DataError when the data cannot be found), normalised as the
        spec says."""
        data = self.read(**kwargs)
        if data is not None:
            data.mean, data.std = self.mean, self.std
        return data

    def shape(self, synthetic_classes: int = 10, synthetic_resolution: int = 32) -> tuple[int, int]:
        """(classes, image side)."""
        return self.classes or synthetic_classes, self.resolution or synthetic_resolution


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, **spec) -> Callable[[Reader], Reader]:
    """``@register_dataset("cifar100", classes=100, ...)`` on a reader: a new dataset is a reader and this line."""

    def add(reader: Reader) -> Reader:
        DATASETS.register(name)(DatasetSpec(name, reader, **spec))
        return reader

    return add


# The authors normalise both CIFARs with these statistics (docs/recipe.md §3).
CIFAR_MEAN = (0.4914, 0.4824, 0.4467)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)


def default_data_dir(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("HARNESS_DATA_DIR", "data"))


def _check_arrays(arr: ImageArrays, where: Path, num_classes: int) -> ImageArrays:
    x, y = arr.x, arr.y
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) != len(y):
        raise DataError(
            f"{where}: expected uint8 images (N, H, W, 3) and N labels, got {x.dtype} {x.shape} and {y.shape}"
        )
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{where}: labels outside 0..{num_classes - 1}")
    return ImageArrays(np.ascontiguousarray(x), y.astype(np.int64))


def _verify_sha256sums(folder: Path) -> None:
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = folder / name.lstrip("*")
        if not path.exists():
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            raise DataError(f"{path}: checksum mismatch with {sums}; the file is corrupt, download it again")


def check_npz_folder(folder: Path) -> None:
    """Cheap (no image decoded): both files are intact zip archives holding x and y; DataError naming the file."""
    import zipfile

    for split in ("train", "test"):
        path = folder / f"{split}.npz"
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: not a readable npz archive ({err}); the file is truncated or corrupt") from None
        if not {"x.npy", "y.npy"} <= names:
            raise DataError(f"{path}: holds {', '.join(sorted(names)) or 'nothing'}; expected arrays x and y")


def read_npz_folder(folder: Path, num_classes: int) -> tuple[ImageArrays, ImageArrays, list[str]]:
    _verify_sha256sums(folder)
    splits = []
    for split in ("train", "test"):
        path = folder / f"{split}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                splits.append(_check_arrays(ImageArrays(z["x"], z["y"]), path, num_classes))
        except DataError:
            raise
        except Exception as err:  # zipfile/KeyError/ValueError: all mean an unreadable file
            raise DataError(
                f"{path}: cannot read as an npz with arrays 'x' and 'y' ({err}); the file is corrupt"
            ) from None
    classes_file = folder / "classes.txt"
    classes = classes_file.read_text().split() if classes_file.exists() else []
    return splits[0], splits[1], classes


# What the official CIFAR pickles (Python 2, and the same files re-pickled by Python 3 and NumPy 1 or 2) may name
# besides plain containers, strings and numbers: NumPy's array and dtype rebuilders, and the bytes codec. Nothing
# else is ever looked up, so a planted pickle cannot run code.
SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it names {module}.{name}, which no CIFAR file holds (only arrays, lists, strings and numbers are "
            "allowed); refused unread, since unpickling it could run code"
        )


def _unpickle(path: Path) -> dict:
    """An official CIFAR pickle through the restricted unpickler, its keys as str (Python 2's bytes or Python 3's
    str alike)."""
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: refused: {err}") from None
    except Exception as err:
        raise DataError(f"{path}: cannot unpickle the official CIFAR file ({err}); the file is corrupt") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict (the official CIFAR format), got {type(d).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _entry(d: dict, key: str, path: Path):
    if key not in d:
        raise DataError(f"{path}: no {key!r} entry (has {', '.join(map(repr, d))}); not an official CIFAR file")
    return d[key]


def _pickle_images(d: dict, path: Path) -> np.ndarray:
    return np.asarray(_entry(d, "data", path), dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_cifar_pickle(folder: Path, num_classes: int) -> tuple[ImageArrays, ImageArrays, list[str]]:
    if num_classes == 100:
        paths = folder / "train", folder / "test", folder / "meta"
        train, test, meta = (_unpickle(p) for p in paths)
        tr = ImageArrays(_pickle_images(train, paths[0]), np.asarray(_entry(train, "fine_labels", paths[0])))
        te = ImageArrays(_pickle_images(test, paths[1]), np.asarray(_entry(test, "fine_labels", paths[1])))
        classes = _names(_entry(meta, "fine_label_names", paths[2]))
    else:
        paths = [folder / f"data_batch_{i}" for i in range(1, 6)]
        batches = [_unpickle(p) for p in paths]
        test_path, meta_path = folder / "test_batch", folder / "batches.meta"
        test = _unpickle(test_path)
        tr = ImageArrays(
            np.concatenate([_pickle_images(b, p) for b, p in zip(batches, paths)]),
            np.concatenate([np.asarray(_entry(b, "labels", p)) for b, p in zip(batches, paths)]),
        )
        te = ImageArrays(_pickle_images(test, test_path), np.asarray(_entry(test, "labels", test_path)))
        classes = _names(_entry(_unpickle(meta_path), "label_names", meta_path))
    return _check_arrays(tr, folder, num_classes), _check_arrays(te, folder, num_classes), classes


def _load_image(path: Path, size: int | None = None, resize: bool = False) -> np.ndarray:
    """An RGB image; ``size``: it must be size x size pixels, or with ``resize``, its shorter side is resized
    to ``size`` (antialiased) and the centre size x size square kept."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and resize and im.size != (size, size):
                scale = size / min(im.size)
                w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
                left, top = (w - size) // 2, (h - size) // 2
                im = im.resize((w, h), Image.BILINEAR, reducing_gap=None).crop((left, top, left + size, top + size))
            if size is not None and im.size != (size, size):
                raise DataError(f"{path}: expected {size}x{size} pixels, got {im.size[0]}x{im.size[1]}")
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(folder: Path, num_classes: int) -> tuple[ImageArrays, ImageArrays, list[str]]:
    """``train/<class>/*.png`` and ``test/<class>/*.png``; classes in sorted order. Every image must have the
    size of the first (a mixed tree is refused, naming one image of each size); test class folders that training
    does not have are left out with a warning."""
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if len(classes) != num_classes:
        raise DataError(f"{folder / 'train'}: found {len(classes)} class folders, expected {num_classes}")
    unknown = sorted(p.name for p in (folder / "test").iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        counts = ", ".join(f"{c} ({len(_images(folder / 'test' / c))} images)" for c in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        logger.warning(
            f"{folder / 'test'}: {len(unknown)} class folder(s) that {folder / 'train'} does not have, left out of "
            f"the test set: {counts}{more}"
        )
    out, first = [], None
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for path in _images(folder / split / cls):
                image = _load_image(path)
                if first is None:
                    first = (path, image.shape)
                elif image.shape != first[1]:
                    raise DataError(
                        f"{folder}: images of different sizes: {path} is {image.shape[1]}x{image.shape[0]}, "
                        f"{first[0]} is {first[1][1]}x{first[1][0]}; a dataset's images share one size"
                    )
                xs.append(image)
                ys.append(label)
        if not xs:
            raise DataError(f"{folder / split}: no images found")
        out.append(_check_arrays(ImageArrays(np.stack(xs), np.asarray(ys)), folder / split, num_classes))
    return out[0], out[1], classes


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


def _find(name: str, candidates: list[Path], marker: str, how: str) -> Path:
    """The first candidate folder holding ``marker``; DataError listing where it looked and ``how`` to get it."""
    folder = next((c for c in candidates if (c / marker).is_file()), None)
    if folder is None:
        raise DataError(
            f"{name} not found. Looked for {marker} in:\n  " + "\n  ".join(map(str, candidates)) + f"\n{how}"
        )
    return folder


def tinyimagenet_folder(data_dir: Path | None) -> Path:
    root = default_data_dir(data_dir)
    return _find(
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
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    corruptions={"tinyimagenet-c": CorruptionSet(("Tiny-ImageNet-C", "tinyimagenet-c"), "folders")},
    files=lambda data_dir: _tree_files(tinyimagenet_folder(data_dir), ("*.txt", "*.JPEG")),
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
        files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
        xs += [_load_image(p, 64) for p in files]
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
        vx.append(_load_image(folder / "val" / "images" / parts[0], 64))
        vy.append(label[parts[1]])
    if not xs or not vx:
        raise DataError(f"{folder}: no training or validation images found")
    n = len(wnids)
    tr = _check_arrays(ImageArrays(np.stack(xs), np.asarray(ys)), folder / "train", n)
    te = _check_arrays(ImageArrays(np.stack(vx), np.asarray(vy)), folder / "val", n)
    return ImageSplits(tr, te, n, f"tiny-imagenet-200 folder {folder}", wnids)


def svhn_folder(data_dir: Path | None) -> Path:
    root = default_data_dir(data_dir)
    return _find(
        "svhn",
        [root / "svhn", root / "SVHN", root],
        "test_32x32.mat",
        "Download train_32x32.mat and test_32x32.mat from ufldl.stanford.edu/housenumbers into <data folder>/svhn/.",
    )


def _tree_files(folder: Path, patterns: tuple[str, ...]) -> tuple[list[Path], Path]:
    return sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()}), folder


def _read_svhn_mat(path: Path) -> ImageArrays:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))  # (32, 32, 3, N)
        y = np.asarray(mat["y"], dtype=np.int64).ravel() % 10  # the official files label the digit 0 as 10
    except Exception as err:
        raise DataError(f"{path}: cannot read as SVHN's official .mat (X, y) ({err})") from None
    return _check_arrays(ImageArrays(x, y), path, 10)


@register_dataset(
    "svhn",
    classes=10,
    resolution=32,
    train_size=73_257,
    test_size=26_032,
    mean=SVHN_MEAN,
    std=SVHN_STD,
    files=lambda data_dir: _tree_files(svhn_folder(data_dir), ("*_32x32.mat",)),
)
def svhn(data_dir: Path | None = None, check_only: bool = False, **_) -> ImageSplits:
    """SVHN's official cropped-digit files ``train_32x32.mat`` and ``test_32x32.mat``."""
    folder = svhn_folder(data_dir)
    if check_only:
        return None
    test = _read_svhn_mat(folder / "test_32x32.mat")
    train_file = folder / "train_32x32.mat"
    train = _read_svhn_mat(train_file) if train_file.is_file() else ImageArrays(test.x[:0], test.y[:0])
    return ImageSplits(train, test, 10, f"SVHN .mat folder {folder}", [str(i) for i in range(10)])


def read_image_tree(folder: Path, side: int, limit: int | None = None) -> ImageArrays:
    """Every image under ``folder`` (any depth, sorted paths), resized to ``side`` x ``side`` (shorter side,
    centre crop); labels -1 (an OOD set has no labels of the trial's classes)."""
    files = images_under(Path(folder))
    if not files:
        raise DataError(f"{folder}: no images (.png, .jpg, .jpeg, .bmp) found under it")
    files = files[:limit] if limit else files
    x = np.stack([_load_image(p, side, resize=True) for p in files])
    return ImageArrays(x, np.full(len(files), -1, np.int64))


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
