"""The reference pipeline against the device path (same distributions), and `harness bench` itself."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

from harness.bench.reference import RepeatedBatchSampler, reference_loader, sample_masks
from harness.cli import main
from harness.data import ImageArrays, load_dataset
from harness.data.loader import Sampling, TrainLoader
from harness.methods import METHODS
from helpers import tiny_config


def is_cut(masks: np.ndarray) -> np.ndarray:
    """(n, M, 1, s, s) -> which samples got the binary (cut) mask rather than the linear one."""
    return ((masks == 0) | (masks == 1)).all(axis=(1, 2, 3, 4))


def boxes(masks: np.ndarray) -> np.ndarray:
    """Cut masks (n, 2, 1, s, s) -> the boxed input's mask (n, s, s): the slot whose ones form a rectangle
    (which input gets the box is drawn per batch on the device, per sample in the reference)."""
    ones = masks[:, :, 0] > 0.5
    rect = ones.any(-1).sum(-1) * ones.any(-2).sum(-1) == ones.sum((-1, -2))  # (n, 2)
    return masks[np.arange(len(masks)), rect.argmax(1), 0]


def test_cut_mixmo_masks_match_the_per_sample_reference():
    cfg = tiny_config(method="cut_mixmo", b=4, batch_size=64)
    method = METHODS.get("cut_mixmo")(cfg, 10, mix_size=16)
    torch.manual_seed(0)
    batches = [method.mixing(64, 0.5, torch.device("cpu")) for _ in range(300)]
    dev_masks = torch.cat([m for m, _ in batches]).numpy()
    dev_lams = torch.cat([lam for _, lam in batches]).numpy()
    rng = np.random.default_rng(0)
    ref = [sample_masks(method, 0.5, rng) for _ in range(len(dev_masks))]
    ref_masks = np.stack([m for m, _ in ref])
    ref_lams = np.stack([lam for _, lam in ref])
    np.testing.assert_allclose(dev_masks.sum(1), 1, atol=1e-5)  # masks sum to one over the inputs
    np.testing.assert_allclose(ref_masks.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(dev_lams, dev_masks.mean((2, 3, 4)), atol=1e-6)  # lam = the mask's actual mean
    dev_cut, ref_cut = is_cut(dev_masks), is_cut(ref_masks)
    # p = 0.5: per batch on the device (300 coins), per sample in the reference
    assert abs(dev_cut.mean() - 0.5) < 0.1 and abs(ref_cut.mean() - 0.5) < 0.02
    # linear batches: lam_0 ~ Beta(2, 2) in both
    for lams in (dev_lams[~dev_cut, 0], ref_lams[~ref_cut, 0]):
        assert stats.kstest(lams, stats.beta(2, 2).cdf).pvalue > 1e-3
    # cut batches: the same distribution of box areas and the same spatial coverage of the box
    dev_box, ref_box = boxes(dev_masks[dev_cut]), boxes(ref_masks[ref_cut])
    assert stats.ks_2samp(dev_box.mean((1, 2)), ref_box.mean((1, 2))).pvalue > 1e-3
    coverage_dev, coverage_ref = dev_box.mean(0), ref_box.mean(0)
    assert np.abs(coverage_dev - coverage_ref).max() < 0.05
    assert coverage_dev[8, 8] > coverage_dev[0, 0] + 0.1  # boxes clipped at the borders cover the centre more


def test_cutmix_label_ratios_match_the_reference():
    n = 4000
    arrays = ImageArrays(np.random.default_rng(0).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), np.arange(n))
    cfg = tiny_config(method="cutmix", synthetic_resolution=8, batch_size=100)
    method = METHODS.get("cutmix")(cfg, n, mix_size=8)
    torch.manual_seed(0)
    loader = TrainLoader(arrays, Sampling(100), (0.5,) * 3, (0.25,) * 3, torch.device("cpu"))
    dev_kappa = []
    for x, y in loader:
        batch = method.prepare(x, y, progress=0.5)
        dev_kappa.append(1 - batch.targets[torch.arange(len(y)), 0, batch.labels[:, 0]])
    dev_kappa = torch.cat(dev_kappa).numpy()
    ref = reference_loader(arrays, method, (0.5,) * 3, (0.25,) * 3, batch_size=100, repetitions=1, workers=0)
    ref_kappa = np.concatenate(
        [(1 - b["targets"][torch.arange(len(b["labels"])), 0, b["labels"][:, 0]]).numpy() for b in ref]
    )
    # no label mix unless CutMix is applied (p = 0.5), its box is not empty (floor(8 sqrt(ratio)) // 2 > 0:
    # ratio >= 1/16 of a uniform ratio) and its partner is another image (from the batch of 100 on the
    # device, from the 4000 images in the reference); 0.035 is 4.4 binomial standard deviations
    for kappa, other in ((dev_kappa, 99 / 100), (ref_kappa, 3999 / 4000)):
        assert abs((kappa < 1e-6).mean() - (1 - 0.5 * 15 / 16 * other)) < 0.035
    assert stats.ks_2samp(dev_kappa, ref_kappa).pvalue > 1e-3


def test_reference_sampler_repeats_like_the_device_loader():
    sampler = RepeatedBatchSampler(1000, batch_size=64, repetitions=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 62  # floor(1000 / 16): the last partial batch dropped, as the authors'
    counts = np.zeros(1000, int)
    for batch in batches:
        groups = np.array(batch).reshape(-1, 4)
        assert (groups == groups[:, :1]).all() and len(batch) == 64
        np.add.at(counts, batch, 1)
    assert (counts == 4).sum() == 992 and (counts == 0).sum() == 8  # every image b times, but for the dropped 8


def test_device_and_reference_pipelines_agree_on_real_images(real_data_dir):
    cfg = tiny_config(
        dataset="cifar100",
        data_dir=real_data_dir,
        train_subset=2000,
        method="cut_mixmo",
        b=2,
        batch_size=64,
        depth=10,
        width=1,
    )
    data = load_dataset(cfg)
    method = METHODS.get("cut_mixmo")(cfg, 100, mix_size=32)
    torch.manual_seed(0)
    loader = TrainLoader(data.train, Sampling(64, 2), data.mean, data.std, torch.device("cpu"))
    dev = [method.prepare(x, y, progress=0.5) for x, y in loader]
    ref = list(reference_loader(data.train, method, data.mean, data.std, 64, 2, workers=0))
    assert len(ref) == len(dev) == 62  # 2000 images twice in batches of 64, the last partial batch dropped
    for key in ("inputs", "mix", "targets"):
        a = torch.cat([getattr(b, key) for b in dev])
        b = torch.cat([r[key] for r in ref])
        assert a.shape == b.shape, key
    dev_x = torch.cat([b.inputs for b in dev]).transpose(0, 2).flatten(1)  # channel-major
    ref_x = torch.cat([r["inputs"] for r in ref]).transpose(0, 2).flatten(1)
    assert torch.allclose(dev_x.mean(1), ref_x.mean(1), atol=0.03)  # normalised pixels: same per-channel moments
    assert torch.allclose(dev_x.std(1), ref_x.std(1), atol=0.03)
    assert (dev_x.std(1) > 0.8).all()  # real images: no degenerate constant input
    dev_w = torch.cat([b.targets.sum(-1) for b in dev]).flatten().numpy()  # loss weights w_i
    ref_w = torch.cat([r["targets"].sum(-1) for r in ref]).flatten().numpy()
    assert stats.ks_2samp(dev_w, ref_w).pvalue > 1e-3


def test_bench_prints_ratios_against_the_reference_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--set",
            "dataset=synthetic",
            "--set",
            "synthetic_size=256",
            "--set",
            "synthetic_resolution=16",
            "--set",
            "depth=10",
            "--set",
            "width=1",
            "--set",
            "method=cut_mixmo",
            "--set",
            "b=4",
            "--batch-size",
            "32",
            "64",
            "--precision",
            "fp32",
            "bf16",
            "--warmup",
            "1",
            "--steps",
            "3",
            "--loader-steps",
            "5",
            "--reference-workers",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "vs reference" in printed and "samples/s" in printed
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["part"], r["pipeline"].split(":")[0]) for r in rows[:2]] == [
        ("loader", "reference"),
        ("loader", "device loader + batched mixing on cpu"),
    ]
    steps = [r for r in rows if r["part"] == "step"]
    assert steps[0]["pipeline"].startswith("reference") and steps[0]["ratio"] is None
    lean = steps[1:]
    assert [(r["batch_size"], r["pipeline"]) for r in lean] == [
        (32, "device loader, fp32"),
        (32, "device loader, bf16"),
        (64, "device loader, fp32"),
        (64, "device loader, bf16"),
    ]
    for r in rows:
        assert r["samples_per_s"] > 0 and r["steps"] == (5 if r["part"] == "loader" else 3)
        if r["ratio"] is not None:
            ref = rows[0] if r["part"] == "loader" else steps[0]
            assert r["ratio"] == pytest.approx(r["samples_per_s"] / ref["samples_per_s"])
    assert result["config"]["method"] == "cut_mixmo" and result["device"] == "cpu"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--compile", "fast"], "--compile: invalid configuration"),
        (["--set", "b=4", "--batch-size", "30"], "batch_size 30 is not a multiple of b = 4"),
        (["--loader", "dali"], "loader: Input should be 'device' or 'ffcv'"),
    ],
)
def test_bench_refuses_bad_values_before_timing(capsys, args, expected):
    assert main(["bench", "--set", "dataset=synthetic", *args]) == 2
    assert expected in capsys.readouterr().err
