"""The file readers the dataset sources share, each refusing what it cannot read safely with the file named:
npz folders (with their sha256sums), the CIFAR pickle format (an allow-list unpickler: nothing executes), single
images (size checked from the header) and image-folder trees (bounded walks)."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
from pathlib import Path

import numpy as np

from harness.core import bounded_read
from harness.data.datasets import ImageArrays
from harness.data.errors import DataError

logger = logging.getLogger(__name__)


def check_arrays(arr: ImageArrays, where: Path, num_classes: int) -> ImageArrays:
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
        try:
            bounded_read.require_regular(path)
        except OSError as err:
            raise DataError(f"{path}: {err.strerror}") from None
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
            bounded_read.require_regular(path)
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
            bounded_read.require_regular(path)
            with np.load(path, allow_pickle=False) as z:
                splits.append(check_arrays(ImageArrays(z["x"], z["y"]), path, num_classes))
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
        bounded_read.require_regular(path)
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
    return check_arrays(tr, folder, num_classes), check_arrays(te, folder, num_classes), classes


MAX_PIXELS = 25_000_000  # checked from the header before decoding: a 12,000 x 12,000 PNG would take 2 GiB
MAX_TREE_IMAGES = 200_000  # read from one folder into memory (Places365's val is 36,500, Tiny ImageNet's 100,000)
MAX_TREE_BYTES = 16 << 30
MAX_TREE_ENTRIES = 2_000_000  # files and folders walked under one folder before it is refused


def load_image(path: Path, size: int | None = None, resize: bool = False) -> np.ndarray:
    """An RGB image (a regular file, at most MAX_PIXELS from its header); ``size``: it must be size x size
    pixels, or with ``resize``, its shorter side is resized to ``size`` (antialiased) and the centre square kept."""
    from PIL import Image

    _regular(Path(path))
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > MAX_PIXELS:
                raise DataError(
                    f"{path}: {im.size[0]}x{im.size[1]} pixels, more than the {MAX_PIXELS:,} an image may have "
                    f"(checked before decoding it); resize it first"
                )
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


def _regular(path: Path) -> os.stat_result:
    """A file that reading cannot block on: a FIFO, a device or a socket is refused by name."""
    try:
        info = path.stat()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: not a regular file ({_kind(info.st_mode)}); only image files are read")
    return info


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block "
                       "device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a file"


def images_under(folder: Path, recursive: bool = True) -> list[Path]:
    """The image files under ``folder`` (any depth unless not ``recursive``), sorted. Only regular files count: a
    FIFO, device or socket with an image's name is skipped with a line naming it (reading it would block);
    folder links are not followed. A folder with more than MAX_TREE_IMAGES images, MAX_TREE_BYTES of them or
    MAX_TREE_ENTRIES entries (``/``, a home folder) is refused."""
    folder = Path(folder)
    if folder.resolve() == Path(folder.resolve().anchor):
        raise DataError(f"{folder}: the root of the filesystem; point at the folder that holds the images")
    found, skipped, size, entries = [], [], 0, 0
    for root, dirs, files in os.walk(folder):
        entries += len(dirs) + len(files)
        for name in files:
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(root) / name
            try:
                info = path.stat()
            except OSError:
                skipped.append(f"{path} (a broken link)")
                continue
            if not stat.S_ISREG(info.st_mode):
                skipped.append(f"{path} ({_kind(info.st_mode)})")
                continue
            found.append(path)
            size += info.st_size
        over = (
            f"more than {MAX_TREE_IMAGES:,} images" * (len(found) > MAX_TREE_IMAGES)
            or f"more than {MAX_TREE_BYTES >> 30} GiB of images" * (size > MAX_TREE_BYTES)
            or f"more than {MAX_TREE_ENTRIES:,} files and folders" * (entries > MAX_TREE_ENTRIES)
        )
        if over:
            raise DataError(
                f"{folder}: {over} under it, the most one folder is read for; point at the folder that holds the images"
            )
        if not recursive:
            break
    for line in skipped[:5]:
        logger.warning(f"skipped, not an image file: {line}")
    if len(skipped) > 5:
        logger.warning(f"and {len(skipped) - 5} more non-regular files skipped under {folder}")
    return sorted(found)


def _images(folder: Path) -> list[Path]:
    return images_under(folder, recursive=False)


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
                image = load_image(path)
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
        out.append(check_arrays(ImageArrays(np.stack(xs), np.asarray(ys)), folder / split, num_classes))
    return out[0], out[1], classes


def find_folder(name: str, candidates: list[Path], marker: str, how: str) -> Path:
    """The first candidate folder holding ``marker``; DataError listing where it looked and ``how`` to get it."""
    folder = next((c for c in candidates if (c / marker).is_file()), None)
    if folder is None:
        raise DataError(
            f"{name} not found. Looked for {marker} in:\n  " + "\n  ".join(map(str, candidates)) + f"\n{how}"
        )
    return folder


def tree_files(folder: Path, patterns: tuple[str, ...]) -> tuple[list[Path], Path]:
    return sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()}), folder


def read_image_tree(folder: Path, side: int, limit: int | None = None) -> ImageArrays:
    """Every image under ``folder`` (any depth, sorted paths), resized to ``side`` x ``side`` (shorter side,
    centre crop); labels -1 (an OOD set has no labels of the trial's classes)."""
    files = images_under(Path(folder))
    if not files:
        raise DataError(f"{folder}: no images (.png, .jpg, .jpeg, .bmp) found under it")
    files = files[:limit] if limit else files
    x = np.stack([load_image(p, side, resize=True) for p in files])
    return ImageArrays(x, np.full(len(files), -1, np.int64))
