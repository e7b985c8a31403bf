"""`harness data corrupt`: CIFAR-10-C / CIFAR-100-C generated from a dataset's test images, in the official
layout: <corruption>.npy (5 x N images, severities 1 to 5 in order) and labels.npy.

Each of the benchmark's 15 corruptions follows the reference generator (Hendrycks & Dietterich, 2019, their
CIFAR script): the same parameters, the same operations (skimage's HSV and Gaussian filter, OpenCV's disk
kernel, affine warp and resizes, ImageMagick's motion blur through Wand for motion blur and snow, the
reference's frost photographs, as the `imagecorruptions` package ships them), and the same conversion to uint8
(truncation, not rounding). The deterministic corruptions equal the reference's outputs pixel for pixel within
one level; the random ones draw from the same distributions with another random stream (tests/data/test_corrupt.py).
The folder is still marked GENERATED.json and every result read from it says "generated": it is not the
official file, so its numbers are not published CIFAR-C numbers.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

from harness.data.eval_sets import CORRUPTIONS, GENERATED_MARKER, SEVERITIES

logger = logging.getLogger(__name__)
SIDE = 32  # the reference's CIFAR script works on 32 x 32 images

# severity 1..5 parameters of the reference's CIFAR script
PARAMS = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # noise std on the [0, 1] scale
    "shot_noise": [500, 250, 100, 75, 50],  # photons per unit intensity
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],  # share of salt-and-pepper values
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],  # disk radius, its antialias blur
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # sigma, shift, passes
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],  # ImageMagick radius, sigma
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],  # zooms 1, 1.01, ... below this, averaged with the image
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),  # flake mean, std, zoom, threshold, blur radius, sigma, image weight
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],  # image, frost photograph weights
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],  # fog strength, fractal decay
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],  # added to HSV value
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],  # factor towards each channel's mean
    "elastic_transform": [  # displacement scale, its smoothing sigma, affine jitter (pixels)
        (SIDE * 0, SIDE * 0, SIDE * 0.08),
        (SIDE * 0.05, SIDE * 0.2, SIDE * 0.07),
        (SIDE * 0.08, SIDE * 0.06, SIDE * 0.06),
        (SIDE * 0.1, SIDE * 0.04, SIDE * 0.05),
        (SIDE * 0.1, SIDE * 0.03, SIDE * 0.03),
    ],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],  # down-scaling factor
    "jpeg_compression": [80, 65, 58, 50, 40],  # JPEG quality
}
DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression")
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # the reference draws 5 of 6


def _gaussian(x: np.ndarray, sigma: float, **options) -> np.ndarray:
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None, **options)


def _zoom_centre(img: np.ndarray, factor: float) -> np.ndarray:
    """The centre ceil(side / factor) square scaled up by ``factor`` (bilinear), cut back to the image's side."""
    from scipy.ndimage import zoom

    side = img.shape[0]
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = zoom(img[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    cut = (zoomed.shape[0] - side) // 2
    return zoomed[cut : cut + side, cut : cut + side]


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """A normalised disk on a 17 x 17 grid, antialiased by a 3 x 3 Gaussian (as the reference builds it)."""
    import cv2

    grid = np.arange(-8, 8 + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)


def _motion_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur (through Wand) of a uint8 image, grey or RGB, returned as decoded from its PNG."""
    import cv2
    from PIL import Image
    from wand.image import Image as WandImage

    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG")
    with WandImage(blob=buffer.getvalue()) as wand:
        wand.motion_blur(radius=radius, sigma=sigma, angle=angle)
        blob = wand.make_blob()
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)


def _plasma(rng: np.random.RandomState, decay: float, size: int = SIDE) -> np.ndarray:
    """The reference's diamond-square height map in [0, 1] (its perturbation: wibble x uniform(-wibble, wibble))."""
    field = np.zeros((size, size))
    step, wibble = size, 100.0

    def perturbed(total):
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = field[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        field[half:size:step, half:size:step] = perturbed(square)
        centres = field[half:size:step, half:size:step]
        corners = field[0:size:step, 0:size:step]
        field[0:size:step, half:size:step] = perturbed(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        )
        field[half:size:step, 0:size:step] = perturbed(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        )
        step //= 2
        wibble /= decay
    field -= field.min()
    return field / field.max()


@functools.lru_cache(maxsize=None)
def _frost_photo(index: int) -> np.ndarray:
    """The reference's frost photograph ``index`` (BGR, as OpenCV reads it) at a fifth of its size."""
    import importlib.util

    import cv2

    spec = importlib.util.find_spec("imagecorruptions")  # its data files only: the package itself is not imported
    if spec is None or not spec.submodule_search_locations:
        from harness.data.errors import DataError

        raise DataError(
            "frost needs the reference's frost photographs, which the `imagecorruptions` package ships: "
            'pip install "harness[corrupt]" (or imagecorruptions)'
        )
    photo = cv2.imread(str(Path(spec.submodule_search_locations[0]) / "frost" / FROST_FILES[index]))
    return cv2.resize(photo, (0, 0), fx=0.2, fy=0.2)


def corrupt_image(img: np.ndarray, name: str, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """One uint8 32 x 32 RGB image -> the corruption at severity 1..5, uint8 (float results truncated, as the
    reference's ``np.uint8``). Long: one branch per corruption, in the reference generator's order and words, so
    that each reads against its source."""
    import cv2
    from PIL import Image

    c = PARAMS[name][severity - 1]
    if name in ("pixelate", "jpeg_compression"):
        im = Image.fromarray(img)
        if name == "pixelate":
            small = im.resize((int(SIDE * c), int(SIDE * c)), Image.BOX)
            return np.asarray(small.resize((SIDE, SIDE), Image.BOX))
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=c)
        return np.asarray(Image.open(buffer))
    x = img / 255.0
    if name == "gaussian_noise":
        out = np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255
    elif name == "shot_noise":
        out = np.clip(rng.poisson(x * c) / c, 0, 1) * 255
    elif name == "impulse_noise":
        from skimage.util import random_noise

        out = np.clip(random_noise(x, mode="s&p", amount=c, rng=rng.randint(2**31)), 0, 1) * 255
    elif name == "defocus_blur":
        kernel = _disk_kernel(*c)
        out = np.clip(np.stack([cv2.filter2D(x[..., k], -1, kernel) for k in range(3)], -1), 0, 1) * 255
    elif name == "glass_blur":
        sigma, shift, passes = c
        y = np.uint8(_gaussian(x, sigma) * 255)
        # The reference visits pixels (h, w) from the bottom right up and swaps each with a neighbour (h + dy,
        # w + dx), dx, dy drawn from randint(-shift, shift); its swap of two NumPy views copies the neighbour in
        # (CIFAR-C holds that). With shift 1 (every CIFAR severity) the neighbour is never one visited before in
        # the pass, so a pass is one gather from the image as it was.
        assert shift == 1, "the vectorised pass holds for shift 1 only"
        inner = np.arange(SIDE - shift, shift, -1)[::-1]  # rows and columns visited: 2 .. 31
        for _ in range(passes):
            dx, dy = rng.randint(-shift, shift, size=(2, len(inner), len(inner)))
            source = y[inner[:, None] + dy, inner[None, :] + dx]
            y[inner[0] :, inner[0] :] = source
        out = np.clip(_gaussian(y / 255.0, sigma), 0, 1) * 255
    elif name == "motion_blur":
        blurred = _motion_blur(img, *c, angle=rng.uniform(-45, 45))
        out = blurred[..., [2, 1, 0]] if blurred.ndim == 3 else np.stack([blurred] * 3, -1)  # BGR or grey to RGB
    elif name == "zoom_blur":
        x = x.astype(np.float32)
        zooms = np.arange(1, c, 0.01)
        out = (x + sum(_zoom_centre(x, z) for z in zooms)) / (len(zooms) + 1)
        out = np.clip(out, 0, 1) * 255
    elif name == "snow":
        mean, std, zoom, threshold, radius, sigma, weight = c
        x = img.astype(np.float32) / 255.0  # float32 arithmetic, as the reference
        flakes = _zoom_centre(rng.normal(size=(SIDE, SIDE), loc=mean, scale=std)[..., None], zoom)
        flakes[flakes < threshold] = 0
        flakes = (np.clip(flakes[..., 0], 0, 1) * 255).astype(np.uint8)
        flakes = (_motion_blur(flakes, radius, sigma, angle=rng.uniform(-135, -45)) / 255.0)[..., None]
        grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
        x = weight * x + (1 - weight) * np.maximum(x, grey * 1.5 + 0.5)
        out = np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255
    elif name == "frost":
        photo = _frost_photo(rng.randint(len(FROST_FILES)))
        top, left = rng.randint(0, photo.shape[0] - SIDE), rng.randint(0, photo.shape[1] - SIDE)
        patch = photo[top : top + SIDE, left : left + SIDE][..., [2, 1, 0]]
        out = np.clip(c[0] * img + c[1] * patch, 0, 255)
    elif name == "fog":
        strength, decay = c
        peak = x.max()
        x = x + strength * _plasma(rng, decay)[..., None]
        out = np.clip(x * peak / (peak + strength), 0, 1) * 255
    elif name == "brightness":
        from skimage.color import hsv2rgb, rgb2hsv

        hsv = rgb2hsv(x)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        out = np.clip(hsv2rgb(hsv), 0, 1) * 255
    elif name == "contrast":
        means = x.mean(axis=(0, 1), keepdims=True)  # per channel
        out = np.clip((x - means) * c + means, 0, 1) * 255
    elif name == "elastic_transform":
        from scipy.ndimage import map_coordinates

        scale, smooth, jitter = c
        x = img.astype(np.float32) / 255.0
        centre, third = np.float32([SIDE, SIDE]) // 2, SIDE // 3
        src = np.float32([centre + third, [centre[0] + third, centre[1] - third], centre - third])
        dst = src + rng.uniform(-jitter, jitter, size=src.shape).astype(np.float32)
        x = cv2.warpAffine(x, cv2.getAffineTransform(src, dst), (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT_101)
        dx, dy = (
            (_gaussian(rng.uniform(-1, 1, size=(SIDE, SIDE)), smooth, mode="reflect", truncate=3) * scale).astype(
                np.float32
            )[..., None]
            for _ in range(2)
        )
        cols, rows, chans = np.meshgrid(np.arange(SIDE), np.arange(SIDE), np.arange(3))
        where = (rows + dy).reshape(-1, 1), (cols + dx).reshape(-1, 1), chans.reshape(-1, 1)
        out = np.clip(map_coordinates(x, where, order=1, mode="reflect").reshape(x.shape), 0, 1) * 255
    else:
        raise ValueError(f"unknown corruption {name!r}")
    return np.uint8(out)


def corrupt(x: np.ndarray, name: str, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """uint8 N x 32 x 32 x 3 images -> the corruption at severity 1..5, uint8."""
    if x.shape[1:] != (SIDE, SIDE, 3):
        raise ValueError(f"the CIFAR-C corruptions are defined on 32 x 32 RGB images, got {x.shape[1:]}")
    return np.stack([corrupt_image(img, name, severity, rng) for img in x])


def write_generated_set(
    images: np.ndarray,
    labels: np.ndarray,
    out: Path,
    dataset: str,
    source: str,
    seed: int = 0,
    corruptions: tuple[str, ...] = CORRUPTIONS,
    force: bool = False,
) -> Path:
    """Write the stand-in set to ``out`` (CIFAR-C layout) and mark it as generated. It is written into a
    temporary folder beside ``out`` and renamed into place at the end, so ``out`` never holds a half-written set;
    a non-empty ``out`` is refused unless ``force`` (then replaced whole, foreign files included)."""
    from harness.core.config import ConfigError

    final = Path(out)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not force:
        raise ConfigError(
            f"--out {final}: exists and is not an empty folder; choose another folder, or add --force to replace it "
            f"whole (its files included)"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    with _one_writer(final):
        out = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
        try:
            _write_stand_in(images, labels, out, dataset, source, seed, corruptions)
            _put_in_place(out, final, force)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return final


@contextlib.contextmanager
def _one_writer(final: Path):
    """Held while ``final`` is written: a second writer is refused at once, naming the first (the OS releases the
    lock if the process dies); what an interrupted writer left is removed."""
    from harness.core.config import ConfigError

    with open(final.parent / f".{final.name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ConfigError(
                f"--out {final}: {holder} is writing it; wait for it to finish, or choose another folder"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"harness data corrupt (pid {os.getpid()} on {socket.gethostname()})")
        lock.flush()
        for left in final.parent.glob(f".{final.name}.partial-*"):
            shutil.rmtree(left, ignore_errors=True)
        try:
            yield
        finally:
            Path(lock.name).unlink(missing_ok=True)  # still held: no writer is between its open and its lock


def _put_in_place(out: Path, final: Path, force: bool) -> None:
    """Rename the written set over ``final``; a set that appeared there meanwhile is kept unless ``force``."""
    from harness.core.config import ConfigError

    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        if not force:
            raise ConfigError(f"--out {final}: written by another process while this one ran; nothing was changed")
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, old / "set")
        os.replace(out, final)
        shutil.rmtree(old)
        return
    os.replace(out, final)  # over an empty folder, or none


def _write_stand_in(images, labels, out: Path, dataset: str, source: str, seed: int, corruptions) -> None:
    from harness.store.files import write_json

    np.save(out / "labels.npy", np.tile(labels.astype(np.int64), SEVERITIES))
    for i, name in enumerate(corruptions, 1):
        rng = np.random.RandomState([seed, i])
        stack = np.concatenate([corrupt(images, name, s, rng) for s in range(1, SEVERITIES + 1)])
        tmp = out / f".{name}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, stack)
        tmp.replace(out / f"{name}.npy")
        logger.info(f"[{i}/{len(corruptions)}] {name}: {len(stack)} images")
    write_json(
        out / GENERATED_MARKER,
        {
            "generated": True,
            "by": "harness data corrupt",
            "dataset": dataset,
            "source": source,
            "images_per_severity": int(len(labels)),
            "seed": seed,
            "corruptions": list(corruptions),
            "parameters": {k: PARAMS[k] for k in corruptions},
            "reference": "the CIFAR-C generator of Hendrycks & Dietterich (2019), reimplemented (harness.data.corrupt)",
            "note": (
                "A generated stand-in in the official CIFAR-C layout; not the official set: its numbers are not "
                "comparable with published CIFAR-10-C / CIFAR-100-C results."
            ),
        },
    )
    (out / "README.md").write_text(
        f"# Generated stand-in for {dataset}-C (not the official set)\n\nWritten by `harness data corrupt` from "
        f"{len(labels)} test images ({source}). See {GENERATED_MARKER} for the parameters. Results on it are not "
        f"comparable with published {dataset.upper()}-C numbers.\n"
    )
