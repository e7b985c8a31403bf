"""The CIFAR-C generator against outputs recorded from the reference generator (Hendrycks & Dietterich, 2019:
hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py at commit 8190fe3, its 15 benchmark corruptions run
with scikit-image 0.26, OpenCV 5.0, ImageMagick 6.9 through Wand 0.7 and its own frost photographs).

tests/fixtures/cifar_c_reference.npz: the reference's outputs, uint8, for the deterministic corruptions of the
synthetic images below (key <corruption>_<severity>). tests/fixtures/cifar_c_reference.json: for the random ones,
the mean absolute residual (corrupted minus clean) and the residual's standard deviation over the first 1,000
CIFAR-100 test images (NumPy's global seed 1000 + severity)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from harness.data.corrupt import CORRUPTIONS, DETERMINISTIC, corrupt
from helpers import harness_env

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


WRITER = """
import sys, numpy as np
from harness.data.corrupt import write_generated_set
images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
write_generated_set(images, np.arange(16), sys.argv[1], "cifar100", "first", corruptions=("glass_blur",))
"""


@pytest.mark.slow  # a second writer in a subprocess (seconds of imports)
def test_two_corruption_writers_into_one_folder_never_mix(tmp_path):
    from harness.core.config import ConfigError
    from harness.data.corrupt import _put_in_place, write_generated_set

    out = tmp_path / "c"
    first = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], env=harness_env(), stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".c.partial-*")) and time.time() < deadline:
        time.sleep(0.05)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match=rf"--out {out}: harness data corrupt \(pid {first.pid} on .*\) is writing"):
        write_generated_set(images, np.arange(4), out, "cifar100", "second", corruptions=("fog",))
    assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["GENERATED.json", "README.md", "glass_blur.npy", "labels.npy"]
    assert json.loads((out / "GENERATED.json").read_text())["source"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging folder, no lock left

    # a set that appeared while this one was written (a writer the lock could not see, e.g. on another NFS client)
    staged = tmp_path / ".staged"
    staged.mkdir()
    (staged / "fog.npy").write_bytes(b"second")
    with pytest.raises(ConfigError, match="written by another process while this one ran; nothing was changed"):
        _put_in_place(staged, out, force=False)
    assert (out / "glass_blur.npy").exists() and not (out / "fog.npy").exists()
