"""`harness data corrupt`: a generated stand-in for CIFAR-10-C / CIFAR-100-C, in the official layout.

The official sets cannot be downloaded here; this writes <corruption>.npy (5 x N images, severities 1 to 5
in order) and labels.npy from a dataset's test images, with the benchmark's 15 corruption names and
their published CIFAR severity parameters where the operation is a plain array operation (noise,
brightness, contrast, pixelate, JPEG, defocus, zoom, fog). Motion blur (ImageMagick in the original),
snow, frost (photographs in the original), glass blur and the elastic transform are approximations.
The folder is marked GENERATED.json and every result read from it says "generated": its numbers are
not comparable with published CIFAR-C numbers.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from harness.data.eval_sets import CORRUPTIONS, GENERATED_MARKER, SEVERITIES

logger = logging.getLogger(__name__)

# severity 1..5 parameters, from the benchmark's CIFAR generation script where the operation is the same
PARAMS = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # noise std on the [0, 1] scale
    "shot_noise": [500, 250, 100, 75, 50],  # photons per unit intensity
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],  # share of salt-and-pepper pixels
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],  # disk radius, alias blur
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # sigma, shift, passes
    "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],  # radius, sigma (approximated)
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],  # largest zoom (steps of 0.01 from 1)
    "snow": [0.1, 0.2, 0.3, 0.4, 0.5],  # snow density (approximated)
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],  # image, frost weights (texture made up)
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],  # fog strength, fractal decay
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],  # added to HSV value
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],  # factor towards the image mean
    "elastic_transform": [0.5, 0.8, 1.1, 1.4, 1.7],  # displacement in pixels (approximated)
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],  # down-scaling factor
    "jpeg_compression": [80, 65, 58, 50, 40],  # JPEG quality
}
APPROXIMATE = ("motion_blur", "snow", "frost", "glass_blur", "elastic_transform")


def _plasma(rng: np.random.Generator, size: int, decay: float) -> np.ndarray:
    """Diamond-square fractal in [0, 1] (the fog's texture), size a power of two."""
    field = np.zeros((size, size))
    step, scale = size, 100.0
    while step > 1:
        half = step // 2
        corners = field[0:size:step, 0:size:step]
        centres = (
            corners + np.roll(corners, -1, 0) + np.roll(corners, -1, 1) + np.roll(np.roll(corners, -1, 0), -1, 1)
        ) / 4
        field[half:size:step, half:size:step] = centres + rng.uniform(-scale, scale, centres.shape)
        tops = (corners + np.roll(corners, -1, 1)) / 2
        lefts = (corners + np.roll(corners, -1, 0)) / 2
        field[0:size:step, half:size:step] = tops + rng.uniform(-scale, scale, tops.shape)
        field[half:size:step, 0:size:step] = lefts + rng.uniform(-scale, scale, lefts.shape)
        step, scale = half, scale / decay
    field -= field.min()
    return field / max(field.max(), 1e-12)


def _blur(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return ndimage.convolve(x, kernel[None, :, :, None] / kernel.sum(), mode="reflect")


def corrupt(x: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 NHWC images -> the corruption at severity 1..5, uint8."""
    c = PARAMS[name][severity - 1]
    f = x.astype(np.float64) / 255
    n, h, w, _ = f.shape
    if name == "gaussian_noise":
        f = f + rng.normal(scale=c, size=f.shape)
    elif name == "shot_noise":
        f = rng.poisson(f * c) / c
    elif name == "impulse_noise":
        hit = rng.random(f.shape) < c
        f = np.where(hit, (rng.random(f.shape) < 0.5).astype(float), f)
    elif name == "defocus_blur":
        radius, alias = c
        r = int(np.ceil(radius)) + 1
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = ((xx**2 + yy**2) <= radius**2).astype(float)
        f = ndimage.gaussian_filter(_blur(f, disk), sigma=(0, alias, alias, 0))
    elif name == "glass_blur":
        sigma, shift, passes = c
        f = ndimage.gaussian_filter(f, sigma=(0, sigma, sigma, 0))
        for _ in range(passes):  # every pixel swapped with a random neighbour within `shift`
            dy, dx = rng.integers(-shift, shift + 1, (2, n, h, w))
            rows = np.clip(np.arange(h)[None, :, None] + dy, 0, h - 1)
            cols = np.clip(np.arange(w)[None, None, :] + dx, 0, w - 1)
            f = f[np.arange(n)[:, None, None], rows, cols]
        f = ndimage.gaussian_filter(f, sigma=(0, sigma, sigma, 0))
    elif name == "motion_blur":
        radius, sigma = c
        length = max(2, int(round(sigma * 2)))
        kernel = np.zeros((2 * length + 1, 2 * length + 1))
        kernel[length, length:] = np.exp(-(np.arange(length + 1) ** 2) / (2 * sigma**2))
        f = _blur(f, ndimage.rotate(kernel, rng.uniform(-45, 45), reshape=False, order=1))
    elif name == "zoom_blur":
        out = f.copy()
        zooms = np.arange(1, c, 0.01)
        for z in zooms[1:]:
            zoomed = ndimage.zoom(f, (1, z, z, 1), order=1)
            top, left = (zoomed.shape[1] - h) // 2, (zoomed.shape[2] - w) // 2
            out += zoomed[:, top : top + h, left : left + w]
        f = out / len(zooms)
    elif name == "snow":
        flakes = (rng.random((n, h, w)) < c * 0.25).astype(float)
        flakes = ndimage.gaussian_filter(flakes, sigma=(0, 0.7, 0.7)) * 2.5
        grey = f.mean(-1, keepdims=True)
        f = (1 - c / 2) * f + (c / 2) * np.maximum(f, grey * 1.5 + 0.5)
        f = f + np.clip(flakes, 0, 1)[..., None]
    elif name == "frost":
        weight_image, weight_frost = c
        frost = np.stack([_plasma(rng, 32, 1.5)[:h, :w] for _ in range(n)])[..., None] ** 2
        f = weight_image * f + weight_frost * (0.7 + 0.3 * frost)
    elif name == "fog":
        strength, decay = c
        size = 1 << int(np.ceil(np.log2(max(h, w))))
        fog = np.stack([_plasma(rng, size, decay)[:h, :w] for _ in range(n)])[..., None]
        peak = f.max(axis=(1, 2, 3), keepdims=True)
        f = (f + strength * fog) * peak / (peak + strength)
    elif name == "brightness":
        from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

        hsv = rgb_to_hsv(np.clip(f, 0, 1))
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        f = hsv_to_rgb(hsv)
    elif name == "contrast":
        mean = f.mean(axis=(1, 2, 3), keepdims=True)
        f = (f - mean) * c + mean
    elif name == "elastic_transform":
        field = ndimage.gaussian_filter(rng.uniform(-1, 1, (2, n, h, w)), sigma=(0, 0, 2, 2))
        field *= c / np.abs(field).max(axis=(2, 3), keepdims=True).clip(1e-12)
        yy, xx = np.mgrid[0:h, 0:w]
        f = np.stack(
            [
                np.stack(
                    [
                        ndimage.map_coordinates(img[..., k], [yy + d[0], xx + d[1]], order=1, mode="reflect")
                        for k in range(3)
                    ],
                    -1,
                )
                for img, d in zip(f, field.transpose(1, 0, 2, 3))
            ]
        )
    elif name in ("pixelate", "jpeg_compression"):
        from PIL import Image

        out = []
        for img in x:
            im = Image.fromarray(img)
            if name == "pixelate":
                small = im.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
                out.append(np.asarray(small.resize((w, h), Image.BOX)))
            else:
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=c)
                out.append(np.asarray(Image.open(buf).convert("RGB")))
        return np.stack(out)
    return (np.clip(f, 0, 1) * 255).round().astype(np.uint8)


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
    from harness.config import ConfigError
    from harness.results import write_json

    final = Path(out)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not force:
        raise ConfigError(
            f"--out {final}: exists and is not an empty folder; choose another folder, or add --force to replace it "
            f"whole (its files included)"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    out = final.parent / f".{final.name}.partial"
    shutil.rmtree(out, ignore_errors=True)  # what an interrupted run left
    out.mkdir()

    np.save(out / "labels.npy", np.tile(labels.astype(np.int64), SEVERITIES))
    for i, name in enumerate(corruptions, 1):
        rng = np.random.default_rng([seed, i])
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
            "approximated": [k for k in APPROXIMATE if k in corruptions],
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
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(out, final)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(out, final)
    return final
