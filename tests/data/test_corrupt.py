"""The CIFAR-C generator against outputs recorded from the reference generator (Hendrycks & Dietterich, 2019:
hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py at commit 8190fe3, its 15 benchmark corruptions run
with scikit-image 0.26, OpenCV 5.0, ImageMagick 6.9 through Wand 0.7 and its own frost photographs).

tests/fixtures/cifar_c_reference.npz: the reference's outputs, uint8, for the deterministic corruptions of the
synthetic images below (key <corruption>_<severity>). tests/fixtures/cifar_c_reference.json: for the random ones,
the mean absolute residual (corrupted minus clean) and the residual's standard deviation over the first 1,000
CIFAR-100 test images (NumPy's global seed 1000 + severity)."""

import json
from pathlib import Path

import numpy as np
import pytest

from harness.data.corrupt import CORRUPTIONS, DETERMINISTIC, corrupt

DATA = Path(__file__).parents[1] / "fixtures"
RANDOM = [c for c in CORRUPTIONS if c not in DETERMINISTIC]


def synthetic_images() -> np.ndarray:
    """Three 32 x 32 images with flat regions, hard edges, gradients and noise (NumPy's legacy generator: the
    same numbers on every version)."""
    rng = np.random.RandomState(0)
    out = []
    for i in range(3):
        blocks = np.kron(rng.randint(0, 256, (4, 4, 3)), np.ones((8, 8, 1)))
        ramp = np.linspace(0, 255, 32)[None, :, None] * np.array([1, 0.5, 0.2])
        noise = rng.randint(-6, 7, (32, 32, 3))
        mix = (blocks * (2 * i + 1) + ramp * (5 - 2 * i)) / 6 + noise
        out.append(np.clip(mix, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_equal_the_reference_within_one_level(name):
    reference = np.load(DATA / "cifar_c_reference.npz")
    images = synthetic_images()
    for severity in range(1, 6):
        ours = corrupt(images, name, severity, np.random.RandomState(0)).astype(int)
        diff = np.abs(ours - reference[f"{name}_{severity}"])
        assert diff.max() <= 1, (name, severity, int(diff.max()), float((diff > 0).mean()))


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_match_the_reference_residuals_within_5_percent(name, real_data_dir):
    recorded = json.loads((DATA / "cifar_c_reference.json").read_text())[name]
    images = np.load(real_data_dir / "cifar100" / "test.npz")["x"][:1000]
    for severity in range(1, 6):
        residual = corrupt(images, name, severity, np.random.RandomState(severity)).astype(float) - images
        ref = recorded[str(severity)]
        assert np.abs(residual).mean() == pytest.approx(ref["abs_mean"], rel=0.05), (name, severity)
        assert residual.std() == pytest.approx(ref["std"], rel=0.05), (name, severity)


def test_glass_blur_pass_is_the_reference_pixel_loop():
    """One vectorised pass equals the reference's loop over (h, w) from the bottom right up, each pixel taking
    its (dy, dx) neighbour (its swap of two NumPy views copies the neighbour in), for the same draws."""
    rng = np.random.RandomState(3)
    y = rng.randint(0, 256, (32, 32, 3)).astype(np.uint8)
    draws = rng.randint(-1, 1, size=(2, 30, 30))
    loop = y.copy()
    for h in range(31, 1, -1):
        for w in range(31, 1, -1):
            dx, dy = draws[0, h - 2, w - 2], draws[1, h - 2, w - 2]
            loop[h, w], loop[h + dy, w + dx] = loop[h + dy, w + dx], loop[h, w]
    inner = np.arange(2, 32)
    gathered = y.copy()
    gathered[2:, 2:] = y[inner[:, None] + draws[1], inner[None, :] + draws[0]]
    assert np.array_equal(loop, gathered)
