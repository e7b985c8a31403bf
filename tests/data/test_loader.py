"""The batch loader: repetition structure, and crops/flips distributed as torchvision's reference."""

import numpy as np
import torch
from PIL import Image
from scipy import stats

from harness.data import ImageArrays
from harness.data.loader import EvalLoader, Sampling, TrainLoader
from helpers import RAW, coordinate_image, offsets_and_flip


def test_repetition_structure_and_epoch_length():
    torch.manual_seed(0)
    n = 1000
    arrays = ImageArrays(np.zeros((n, 8, 8, 3), np.uint8), np.arange(n))
    loader = TrainLoader(arrays, Sampling(64, 4, drop_last=False), device=torch.device("cpu"), **RAW)
    assert len(loader) == 63  # ceil(1000 * 4 / 64): every image once
    counts = np.zeros(n, int)
    batches = list(loader.sample_indices())
    assert len(batches) == 63
    for idx in batches[:-1]:
        assert len(idx) == 64
        groups = idx.view(16, 4)  # 16 distinct images, each 4 times in a row
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 16
    for idx in batches:
        np.add.at(counts, idx.numpy(), 1)
    assert (counts == 4).all()  # an epoch shows every image b times


def test_repeated_copies_are_augmented_independently():
    torch.manual_seed(0)
    arrays = ImageArrays(np.stack([coordinate_image()] * 16), np.zeros(16, np.int64))
    loader = TrainLoader(arrays, Sampling(16, 4), device=torch.device("cpu"), **RAW)
    x, _ = next(iter(loader))
    views = [offsets_and_flip(img.permute(1, 2, 0).numpy()) for img in x]
    groups = [views[i : i + 4] for i in range(0, 16, 4)]
    assert sum(len(set(g)) > 1 for g in groups) >= 3


def test_crop_and_flip_statistics_match_torchvision_reference():
    import torchvision.transforms as T

    n = 4000
    torch.manual_seed(0)
    arrays = ImageArrays(np.stack([coordinate_image()] * n), np.zeros(n, np.int64))
    loader = TrainLoader(arrays, Sampling(1000, 1), device=torch.device("cpu"), **RAW)
    ours = [offsets_and_flip(img.permute(1, 2, 0).numpy()) for x, _ in loader for img in x]
    reference = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    pil = Image.fromarray(coordinate_image())
    theirs = [offsets_and_flip(reference(pil)) for _ in range(n)]
    for axis in (0, 1):
        a = np.bincount([v[axis] for v in ours], minlength=9)
        b = np.bincount([v[axis] for v in theirs], minlength=9)
        assert len(a) == 9 and len(b) == 9  # offsets 0..8: padding 4 on each side
        assert stats.chisquare(a).pvalue > 1e-3  # uniform, as torchvision's
        assert stats.chi2_contingency(np.stack([a, b])).pvalue > 1e-3
    flips = np.mean([v[2] for v in ours])
    assert abs(flips - 0.5) < 0.03 and abs(flips - np.mean([v[2] for v in theirs])) < 0.05
    # padding is zeros, as torchvision's default fill
    x, _ = next(iter(loader))
    top_left = x[:, 0, 0, 0]
    assert (top_left == 0).float().mean() > 0.3


def test_normalisation_and_eval_order():
    x = np.full((10, 4, 4, 3), 128, np.uint8)
    loader = EvalLoader(ImageArrays(x, np.arange(10)), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    assert torch.allclose(batches[0][0], torch.full((4, 3, 4, 4), (128 / 255 - 0.5) / 0.25))
