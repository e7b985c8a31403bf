"""OpenOOD v1.5's OOD protocol: `ood:near` / `ood:far` expand into its sets per in-distribution dataset, read from
stand-ins written in each set's official layout, and the report's near/far table with both FPR@95 conventions."""

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from harness.data.eval_sets import OPENOOD
from harness.evaluation.kinds import expand_protocol, parse_eval_set
from harness.metrics.uncertainty import detection_metrics
from helpers import harness


def test_near_and_far_expand_per_dataset_and_refuse_others():
    sets = [parse_eval_set("ood:near"), parse_eval_set("ood:far"), parse_eval_set("ood:svhn")]
    got = [s.name for s in expand_protocol(sets, "cifar100")]
    assert got == ["ood:cifar10", "ood:tinyimagenet", "ood:mnist", "ood:svhn", "ood:textures", "ood:places365"]
    assert [s.name for s in expand_protocol(sets[:1], "cifar10")] == ["ood:cifar100", "ood:tinyimagenet"]
    assert OPENOOD["cifar10"]["far"] == OPENOOD["cifar100"]["far"]
    with pytest.raises(ValueError, match="OpenOOD's near/far protocol is defined for cifar10, cifar100, not synthetic"):
        expand_protocol(sets, "synthetic")


def test_fpr95_in_both_conventions():
    """ID positive (ODIN): OOD kept at 95% of ID kept; OOD positive (OpenOOD): ID flagged at 95% of OOD flagged."""
    ins = np.arange(100, 200, dtype=float)  # 100 ID scores
    outs = np.r_[np.arange(0, 90, dtype=float), np.arange(150, 160, dtype=float)]  # 90 clearly OOD, 10 inside
    m = detection_metrics(ins, outs)
    assert m["fpr95"] == pytest.approx(10 / 100)  # ID threshold at 105: the 10 OOD images at 150-159 are kept
    assert m["fpr95_ood"] == pytest.approx(0.55)  # flagging 95 OOD reaches 154: the ID images 100-154 go too
    outs = np.arange(0, 100, dtype=float) + 50  # overlapping 100-149
    m = detection_metrics(ins, outs)
    assert m["fpr95"] == pytest.approx(0.45) and m["fpr95_ood"] == pytest.approx(0.45)


def _images(folder, n, side, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


def write_stand_ins(data, n=12):
    """Each OpenOOD set for CIFAR-100 in its official layout, a few random images each."""
    rng = np.random.default_rng(0)
    cifar10 = data / "cifar10"
    cifar10.mkdir(parents=True)
    for split in ("train", "test"):
        np.savez(cifar10 / f"{split}.npz", x=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), y=np.arange(n) % 10)
    tin = data / "tiny-imagenet-200"
    (tin / "val" / "images").mkdir(parents=True)
    (tin / "wnids.txt").write_text("n01\nn02\n")
    for w in ("n01", "n02"):
        _images(tin / "train" / w / "images", 2, 64, 1)
        for p in (tin / "train" / w / "images").iterdir():
            p.rename(p.with_suffix(".JPEG"))
    _images(tin / "val" / "images", n, 64, 2)
    for p in (tin / "val" / "images").iterdir():
        p.rename(p.with_suffix(".JPEG"))
    (tin / "val" / "val_annotations.txt").write_text(
        "".join(f"{i}.JPEG\tn0{1 + i % 2}\t0\t0\t1\t1\n" for i in range(n))
    )
    mnist = data / "mnist"
    mnist.mkdir()
    for prefix, count in (("train", n), ("t10k", n)):
        images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        header = b"\0\0\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
        (mnist / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        labels = (np.arange(count) % 10).astype(np.uint8)
        (mnist / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\0\0\x08\x01" + count.to_bytes(4, "big") + labels.tobytes())
        )
    from scipy.io import savemat

    (data / "svhn").mkdir()
    for split in ("train", "test"):
        savemat(data / "svhn" / f"{split}_32x32.mat", {"X": rng.integers(0, 255, (32, 32, 3, n), dtype=np.uint8),
                                                        "y": (np.arange(n) % 10 + 1)[:, None]})  # fmt: skip
    _images(data / "dtd" / "images" / "banded", n, 48, 3)
    _images(data / "places365" / "val" / "abbey", n // 2, 256, 4)
    _images(data / "places365" / "val" / "airfield", n // 2, 256, 5)


@pytest.mark.slow  # a real-data trial, six OOD sets, a report
def test_openood_table_from_stand_ins(real_data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar100").symlink_to((real_data_dir / "cifar100").resolve())  # $HARNESS_DATA_DIR may be relative
    keys = ["dataset=cifar100", "depth=10", "width=1", "epochs=1", "train_subset=400", "test_subset=200",
            "method=mimo", "M=2", "b=2", "eval_every=0", "progress=false"]  # fmt: skip
    keys.append(f"output_dir={tmp_path / 'results'}")
    out = harness("train", *[f"--set={k}" for k in keys], HARNESS_DATA_DIR=str(data))
    assert out.returncode == 0, out.stderr[-3000:]
    missing = harness("evaluate", tmp_path / "results" / "trial", "--on", "ood:far", HARNESS_DATA_DIR=str(data))
    assert missing.returncode == 2 and "mnist not found" in missing.stderr, missing.stderr  # named, with how to get it
    write_stand_ins(data)
    trial_folder = tmp_path / "results" / "trial"
    out = harness("evaluate", trial_folder, "--on", "ood:near", "ood:far", HARNESS_DATA_DIR=str(data))
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    (trial,) = (tmp_path / "results" / "trial").iterdir()
    ids = sorted(p.name for p in (trial / "eval").iterdir())
    assert ids == sorted(f"ood-{s}" for s in ("cifar10", "tinyimagenet", "mnist", "svhn", "textures", "places365"))
    record = json.loads((trial / "eval" / "ood-mnist" / "metrics.json").read_text())
    assert record["ensemble_average"] == "probabilities" and "fpr95_ood" in record["scores"]["msp"]
    report = harness("report", tmp_path / "results" / "trial", "--no-figures")
    assert report.returncode == 0, report.stderr[-3000:]
    table = (tmp_path / "results" / "trial" / "report" / "openood.md").read_text()
    for column in ("ID top-1 %", "near AUROC %", "far AUROC %", "near FPR@95 % (OOD +)", "far FPR@95 % (ID +)"):
        assert column in table, table
    assert "near: ood:cifar10, ood:tinyimagenet" in table and "ood:places365" in table
