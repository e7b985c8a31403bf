"""The FFCV loader: .beton round trip on real images, repetition and augmentation, a trial on it.

FFCV's compiled pipelines can hang rather than fail (libffcv/ffcv#396), so every test here has a timeout.
"""

import csv
import json

import numpy as np
import pytest
import torch
from scipy import stats

from harness.cli import main
from harness.core import schema
from harness.data import ImageArrays, load_dataset
from harness.data.ffcv_loader import FFCVTrainLoader, beton_path, write_beton
from harness.trial.trainer import Trainer
from helpers import RAW, coordinate_image, offsets_and_flip, tiny_config

pytestmark = pytest.mark.timeout(300)


def read_sequential(path, batch_size=100):
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    loader = Loader(
        str(path),
        batch_size=batch_size,
        num_workers=2,
        order=OrderOption.SEQUENTIAL,
        pipelines={"image": [SimpleRGBImageDecoder(), ToTensor()], "label": [IntDecoder(), ToTensor(), Squeeze()]},
    )
    xs, ys = [], []
    for x, y in loader:  # FFCV reuses its output buffers: copy each batch
        xs.append(x.numpy().copy())
        ys.append(y.numpy().copy())
    return np.concatenate(xs), np.concatenate(ys)


def test_beton_round_trip_on_real_images(real_data_dir, tmp_path):
    data = load_dataset(tiny_config(dataset="cifar100", data_dir=real_data_dir, train_subset=600))
    path = write_beton(data.train, tmp_path / "cifar100_train.beton")
    assert json.loads(path.with_suffix(".json").read_text()) == {"images": 600, "resolution": 32}
    x, y = read_sequential(path)
    np.testing.assert_array_equal(x, data.train.x)  # raw mode: bit-exact images
    np.testing.assert_array_equal(y, data.train.y)


def coordinate_beton(tmp_path, n):
    """n coordinate images (offsets and flips readable), label = index, as the 'synthetic' train split."""
    arrays = ImageArrays(np.stack([coordinate_image()] * n), np.arange(n))
    write_beton(arrays, beton_path(tmp_path, "synthetic", "train"))
    return tiny_config(loader="ffcv", ffcv_dir=tmp_path, loader_workers=2, synthetic_resolution=32), arrays.y


@pytest.mark.slow  # FFCV's compiled pipeline
def test_ffcv_loader_repeats_and_augments_like_the_device_loader(tmp_path):
    n = 2000
    cfg, labels = coordinate_beton(tmp_path, n)
    cfg = cfg.model_copy(update={"batch_size": 64, "b": 4})
    loader = FFCVTrainLoader(cfg, np.arange(n), labels, 32, RAW["mean"], RAW["std"], torch.device("cpu"))
    assert len(loader) == 125  # 2000 images x 4 / 64
    counts = np.zeros(n, int)
    views, independent = [], 0
    for x, y in loader:
        groups = y.view(-1, 4)
        assert (groups == groups[:, :1]).all()  # each sampled image b times in a row
        np.add.at(counts, y.numpy(), 1)
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        batch_views = [offsets_and_flip(img.permute(1, 2, 0).numpy()) for img in x]
        views += batch_views
        independent += sum(len(set(batch_views[i : i + 4])) > 1 for i in range(0, len(batch_views), 4))
    assert (counts == 4).all()  # an epoch shows every image b times
    assert independent > 0.9 * n  # the copies are augmented independently
    for axis in (0, 1):
        hist = np.bincount([v[axis] for v in views], minlength=9)
        assert len(hist) == 9 and stats.chisquare(hist).pvalue > 1e-3  # crop offsets uniform in 0..8 (padding 4)
    assert abs(np.mean([v[2] for v in views]) - 0.5) < 0.03


@pytest.mark.slow  # FFCV's compiled pipeline
def test_ffcv_loader_uses_the_trial_subset_and_refuses_a_stale_file(tmp_path):
    n = 500
    cfg, labels = coordinate_beton(tmp_path, n)
    subset = np.arange(0, n, 5)
    cfg = cfg.model_copy(update={"batch_size": 20, "b": 1})
    loader = FFCVTrainLoader(cfg, subset, labels[subset], 32, RAW["mean"], RAW["std"], torch.device("cpu"))
    seen = np.concatenate([y.numpy() for _, y in loader])
    assert sorted(seen.tolist()) == subset.tolist()
    from harness.data import DataError

    for wrong_labels, resolution in ((labels[subset] + 1, 32), (labels[subset], 16)):
        with pytest.raises(
            DataError, match="holds 500 images of 32 px that do not match.*harness data prepare synthetic"
        ):
            FFCVTrainLoader(cfg, subset, wrong_labels, resolution, RAW["mean"], RAW["std"], torch.device("cpu"))
    with pytest.raises(DataError, match="no FFCV file.*harness data prepare"):
        FFCVTrainLoader(
            cfg.model_copy(update={"ffcv_dir": tmp_path / "none"}),
            subset,
            labels[subset],
            32,
            RAW["mean"],
            RAW["std"],
            torch.device("cpu"),
        )


@pytest.mark.slow  # writes .beton files and trains
def test_data_prepare_then_a_trial_on_the_ffcv_loader(tmp_path, capsys):
    out = tmp_path / "ffcv"
    assert main(["data", "prepare", "synthetic", "--format", "ffcv", "--out", str(out), "--workers", "1"]) == 0
    assert "synthetic_train.beton: 2000 images" in capsys.readouterr().out
    cfg = tiny_config(
        loader="ffcv",
        ffcv_dir=out,
        loader_workers=2,
        synthetic_size=2000,
        method="cut_mixmo",
        b=2,
        epochs=3,
        lr=0.05,
        output_dir=tmp_path / "runs",
        train_subset=512,
    )
    assert (
        main(
            [
                "train",
                "--set",
                f"ffcv_dir={out}",
                "--set",
                "loader=ffcv",
                "--set",
                "dataset=synthetic",
                "--set",
                "synthetic_resolution=16",
                "--set",
                "epochs=1",
            ]
        )
        == 2
    )  # prepared at 32 px: refused
    assert "do not match the synthetic train split in use (16 px" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "prepare",
                "synthetic",
                "--out",
                str(out),
                "--workers",
                "1",
                "--set",
                "synthetic_classes=4",
                "--set",
                "synthetic_resolution=16",
            ]
        )
        == 0
    )
    metrics = Trainer(cfg).run()
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(cfg.trial_dir / schema.HISTORY))]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert metrics["top1"] > 0.4  # 4 classes: chance 0.25
    assert metrics["train_images"] == 512


@pytest.mark.parametrize("record", ["{}", "[]", '{"images": "3", "resolution": 32}', "null"])
def test_an_ffcv_record_that_is_not_ours_is_one_line(tmp_path, record):
    from harness.data import DataError
    from harness.data.ffcv_loader import check_beton

    beton = tmp_path / "train.beton"
    beton.write_bytes(b"x")
    beton.with_suffix(".json").write_text(record)
    np.save(beton.with_suffix(".labels.npy"), np.arange(4))
    with pytest.raises(DataError, match=r"train.json: not the record `harness data prepare` writes"):
        check_beton(beton, "cifar100", np.arange(4), np.arange(4), 32)
