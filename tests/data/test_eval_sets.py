"""Evaluation sets read in their official layouts, from small stand-ins written in those layouts."""

import json

import numpy as np
import pytest
from PIL import Image

from harness.data import DataError
from harness.data.datasets import DATASETS
from harness.data.eval_sets import (
    CORRUPTIONS,
    TrialData,
    corruption_folder,
    corruption_names,
    generation_record,
    read_corruption,
    read_ood,
)
from harness.evaluation.kinds import parse_eval_set
from helpers import trial

CIFAR100 = TrialData("cifar100", None, 100, 32)


def cifar_c(folder, n=6, corruptions=("gaussian_noise", "fog", "spatter")):
    """CIFAR-100-C's layout: <corruption>.npy of 5 x n images (pixel value = severity * 10 + corruption
    index), labels.npy = the n test labels once per severity."""
    folder.mkdir(parents=True)
    labels = np.arange(n) * 7 % 100
    np.save(folder / "labels.npy", np.tile(labels, 5))
    for i, name in enumerate(corruptions):
        x = np.repeat(np.arange(1, 6) * 10 + i, n).astype(np.uint8)[:, None, None, None]
        np.save(folder / f"{name}.npy", np.broadcast_to(x, (5 * n, 32, 32, 3)).copy())
    return labels


def test_cifar_c_layout_severity_order_and_labels(tmp_path):
    labels = cifar_c(tmp_path / "CIFAR-100-C")
    spec = parse_eval_set("cifar100-c")
    folder = corruption_folder(spec, TrialData("cifar100", tmp_path, 100, 32))
    assert folder == tmp_path / "CIFAR-100-C"
    # the benchmark's corruptions first, in their order; extra ones after (and out of the mean)
    assert corruption_names(folder, spec) == ["gaussian_noise", "fog", "spatter"]
    arrays, severity = read_corruption(folder, "fog", spec, CIFAR100)
    assert severity.tolist() == [s for s in range(1, 6) for _ in range(6)]
    assert arrays.x[:, 0, 0, 0].tolist() == [s * 10 + 1 for s in severity]  # block s holds severity s
    assert arrays.y.tolist() == np.tile(labels, 5).tolist()
    assert generation_record(folder) is None  # a downloaded set: not labelled generated


def test_cifar_c_layout_refusals(tmp_path):
    cifar_c(tmp_path / "CIFAR-100-C")
    spec = parse_eval_set("cifar100-c")
    with pytest.raises(DataError, match="trained on cifar10"):
        corruption_folder(spec, TrialData("cifar10", tmp_path, 10, 32))
    with pytest.raises(DataError, match="harness data corrupt cifar100"):
        corruption_folder(parse_eval_set("cifar100-c-generated"), TrialData("cifar100", tmp_path, 100, 32))
    with pytest.raises(DataError, match="Zenodo"):
        corruption_folder(spec, TrialData("cifar100", tmp_path / "elsewhere", 100, 32))
    labels = np.load(tmp_path / "CIFAR-100-C" / "labels.npy")
    labels[-1] += 1  # severity 5's block no longer repeats the test labels
    np.save(tmp_path / "CIFAR-100-C" / "labels.npy", labels)
    with pytest.raises(DataError, match="blocks of 6 labels differ"):
        read_corruption(tmp_path / "CIFAR-100-C", "fog", spec, CIFAR100)
    np.save(tmp_path / "CIFAR-100-C" / "labels.npy", labels[:-1])
    with pytest.raises(DataError, match=r"expected uint8 \(5 x N"):
        read_corruption(tmp_path / "CIFAR-100-C", "fog", spec, CIFAR100)


def test_class_subset_trial_sees_its_classes(tmp_path):
    labels = cifar_c(tmp_path / "c", n=10)
    spec = parse_eval_set(f"cifar100-c={tmp_path / 'c'}")
    arrays, severity = read_corruption(tmp_path / "c", "fog", spec, TrialData("cifar100", None, 50, 32, 50))
    assert (arrays.y < 50).all() and len(arrays.y) == 5 * (labels < 50).sum()
    assert np.bincount(severity).tolist() == [0] + [(labels < 50).sum()] * 5


def test_tiny_imagenet_c_layout(tmp_path):
    """<corruption>/<severity>/<wnid>/*.JPEG; labels by the position in the trial's wnids.txt (not sorted)."""
    wnids = ["n09", "n01", "n05"]
    (tmp_path / "tiny-imagenet-200").mkdir()
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("\n".join(wnids))
    for severity in range(1, 6):
        for k, wnid in enumerate(["n01", "n09"]):
            d = tmp_path / "Tiny-ImageNet-C" / "fog" / str(severity) / wnid
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((64, 64, 3), severity * 40, np.uint8)).save(d / f"val_{i}.JPEG", quality=100)
    trial = TrialData("tinyimagenet", tmp_path, 3, 64)
    spec = parse_eval_set("tinyimagenet-c")
    folder = corruption_folder(spec, trial)
    assert corruption_names(folder, spec) == ["fog"]
    arrays, severity = read_corruption(folder, "fog", spec, trial)
    assert severity.tolist() == [s for s in range(1, 6) for _ in range(4)]
    assert arrays.y.tolist() == [1, 1, 0, 0] * 5  # n01 is label 1, n09 label 0 in wnids.txt
    assert abs(int(arrays.x[-1].mean()) - 200) <= 2 and abs(int(arrays.x[0].mean()) - 40) <= 2
    (tmp_path / "Tiny-ImageNet-C" / "fog" / "3" / "n77").mkdir()
    with pytest.raises(DataError, match="not a class"):
        read_corruption(folder, "fog", spec, trial)


def test_svhn_official_mat(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10], [9]])})
    data = DATASETS.get("svhn")(data_dir=tmp_path)
    assert data.test.y.tolist() == [0, 1, 2, 0, 9]  # the official files call the digit 0 "10"
    assert (data.test.x[3] == x[..., 3]).all()
    images, source = read_ood(parse_eval_set("ood:svhn"), TrialData("cifar100", tmp_path, 100, 32))
    assert len(images.y) == 5 and (images.y == -1).all() and "SVHN" in source


def test_image_folder_ood_resized(tmp_path):
    for i, size in enumerate([(40, 30), (64, 64)]):
        (tmp_path / "dtd" / "images" / f"c{i}").mkdir(parents=True)
        Image.fromarray(np.full((size[1], size[0], 3), 100 + i, np.uint8)).save(
            tmp_path / "dtd" / "images" / f"c{i}" / "a.jpg"
        )
    images, _ = read_ood(parse_eval_set("ood:textures"), TrialData("cifar100", tmp_path, 100, 32))
    assert images.x.shape == (2, 32, 32, 3)
    spec = parse_eval_set(f"ood:folder={tmp_path / 'dtd' / 'images' / 'c1'}")
    assert spec.id == "ood-folder-c1"
    assert read_ood(spec, TrialData("cifar100", None, 100, 32))[0].x.shape == (1, 32, 32, 3)


def test_ood_refusals(tmp_path):
    with pytest.raises(DataError, match="class_subset"):
        read_ood(parse_eval_set("ood:heldout-classes"), CIFAR100)
    with pytest.raises(DataError, match="own dataset"):
        read_ood(parse_eval_set("ood:cifar100"), CIFAR100)
    with pytest.raises(DataError, match="dtd"):
        read_ood(parse_eval_set("ood:textures"), TrialData("cifar100", tmp_path, 100, 32))


@pytest.mark.parametrize(
    "name, kind, set_id",
    [
        ("test", "test", "test"),
        ("cifar100-c", "corruption", "cifar100-c"),
        ("cifar10-c=/data/CIFAR-10-C", "corruption", "cifar10-c"),
        ("ood:cifar10", "ood", "ood-cifar10"),
        ("ood:heldout-classes", "ood", "ood-heldout-classes"),
    ],
)
def test_parse_eval_set(name, kind, set_id):
    spec = parse_eval_set(name)
    assert (spec.kind, spec.id) == (kind, set_id)


@pytest.mark.parametrize("name", ["cifar100c", "ood:", "ood:imagenet", "ood:folder", "test=/x", "ood:cifar10=/x"])
def test_parse_eval_set_refuses(name):
    with pytest.raises(ValueError, match="allowed: test, cifar10-c|ood:folder needs"):
        parse_eval_set(name)


def test_suite_eval_sets_checked(tmp_path):
    from harness.core.config import ConfigError
    from harness.planning.suite import load_suite
    from helpers import write_suite

    with pytest.raises(ConfigError, match=r"eval_sets.*'cifar100c': unknown evaluation set; allowed"):
        load_suite(write_suite(tmp_path, eval_sets=["test", "cifar100c"]))
    with pytest.raises(ConfigError, match="listed twice"):
        load_suite(write_suite(tmp_path, eval_sets=["ood:cifar10", "ood:cifar10"]))
    assert load_suite(write_suite(tmp_path, eval_sets=["ood:cifar10"])).evaluation_sets()[0].id == "ood-cifar10"


def test_generated_set_is_marked(tmp_path):
    from scipy import ndimage

    from harness.data.corrupt import corrupt, write_generated_set

    noise = np.random.default_rng(0).normal(size=(8, 32, 32, 3))
    images = np.clip(128 + 400 * ndimage.gaussian_filter(noise, (0, 2, 2, 0)), 0, 255).astype(np.uint8)  # smooth
    out = write_generated_set(images, np.arange(8), tmp_path / "g", "cifar100", "test")
    record = generation_record(out)
    assert record["generated"] and "not comparable" in record["note"] and record["corruptions"] == list(CORRUPTIONS)
    assert json.loads((out / "GENERATED.json").read_text())["images_per_severity"] == 8
    spec = parse_eval_set(f"cifar100-c-generated={out}")
    arrays, severity = read_corruption(out, "contrast", spec, CIFAR100)
    assert arrays.x.shape == (40, 32, 32, 3) and np.bincount(severity).tolist() == [0] + [8] * 5
    # every corruption changes the images (their equality with the reference: tests/data/test_corrupt.py)
    for name in CORRUPTIONS:
        assert (corrupt(images, name, 5, np.random.RandomState(1)) != images).any(), name


def test_data_corrupt_refuses_a_non_empty_out_and_replaces_it_whole_with_force(tmp_path):
    from harness.data.corrupt import write_generated_set
    from helpers import cli

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "foreign.npy").write_bytes(b"mine")
    folder = tmp_path / "cifar100"
    folder.mkdir()
    np.savez(folder / "train.npz", x=images, y=np.arange(4))
    np.savez(folder / "test.npz", x=images, y=np.arange(4))
    proc = cli("data", "corrupt", "cifar100", "--data-dir", tmp_path, "--out", out, "--corruptions", "fog")
    assert proc.returncode == 2 and "exists and is not an empty folder" in proc.stderr and "--force" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["foreign.npy"]  # untouched
    proc = cli("data", "corrupt", "cifar100", "--data-dir", tmp_path, "--out", out, "--corruptions", "fog", "--force")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["GENERATED.json", "README.md", "fog.npy", "labels.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar100", "out"]  # no temporary folder left
    write_generated_set(images, np.arange(4), tmp_path / "new" / "set", "cifar100", "test", corruptions=("fog",))
    assert (tmp_path / "new" / "set" / "fog.npy").exists()


def test_a_forced_reevaluation_that_fails_keeps_the_old_record(tmp_path):
    from harness.evaluation.evaluate import evaluate_trial
    from harness.store.trial_folder import TrialFolder
    from helpers import finished_trial

    cfg = trial(dataset="synthetic", synthetic_classes=4, depth=10, width=1, name="s", output_dir=tmp_path)
    labels = np.arange(40) % 4
    finished_trial(cfg, np.eye(4)[labels][:, None], labels)
    folder = TrialFolder(cfg.trial_dir)
    old = {"kind": "test", "set": "test", "id": "test", "metrics": {"top1": 0.25}}
    folder.save_eval_part("test", "test", {"logits": np.zeros((1, 1, 4), np.float16)})
    folder.finish_eval("test", old)
    with pytest.raises(Exception, match="checkpoint"):  # no checkpoint.pt: the network cannot be rebuilt
        evaluate_trial(cfg, [parse_eval_set("test")], "cpu", force=True)
    assert folder.evaluation("test") == old and folder.eval_part("test", "test") is not None
    assert sorted(p.name for p in (cfg.trial_dir / "eval").iterdir()) == ["test"]
