"""Every dataset source read on small fixtures; the shared CIFAR-100 verified by its pixel checksums."""

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.data import DATASETS, DataError, load_dataset, readers
from harness.data.sources.synthetic import synthetic_arrays
from helpers import tiny_config


def fake_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_npz_folder(tmp_path):
    folder = tmp_path / "cifar100"
    folder.mkdir()
    x, y = fake_images(20), np.arange(20) % 100
    np.savez(folder / "train.npz", x=x, y=y.astype(np.int16))
    np.savez(folder / "test.npz", x=x[:5], y=y[:5].astype(np.int16))
    data = DATASETS.get("cifar100")(data_dir=tmp_path)
    assert np.array_equal(data.train.x, x) and np.array_equal(data.train.y, y)
    assert data.train.y.dtype == np.int64 and len(data.test) == 5 and data.num_classes == 100
    assert "npz folder" in data.source


def test_a_process_reads_a_folder_once_until_its_files_change(tmp_path, monkeypatch):
    from harness.data.sources import cifar

    folder = tmp_path / "cifar100"
    folder.mkdir()
    x, y = fake_images(20), np.arange(20) % 100
    np.savez(folder / "train.npz", x=x, y=y)
    np.savez(folder / "test.npz", x=x[:5], y=y[:5])
    reads = []
    monkeypatch.setattr(cifar, "read_npz_folder", lambda *a: reads.append(a) or readers.read_npz_folder(*a))
    first = DATASETS.get("cifar100")(data_dir=tmp_path)
    first.train.x[:] = 0  # a caller changing its splits changes nobody else's
    second = DATASETS.get("cifar100")(data_dir=tmp_path)
    assert len(reads) == 1 and np.array_equal(second.train.x, x) and np.array_equal(second.test.y, y[:5])
    assert second.mean == first.mean and second.source == first.source and second.num_classes == 100
    np.savez(folder / "test.npz", x=x[5:9], y=y[5:9])  # a file written again: read again
    third = DATASETS.get("cifar100")(data_dir=tmp_path)
    assert len(reads) == 2 and np.array_equal(third.test.x, x[5:9])
    DATASETS.get("cifar100")(data_dir=tmp_path, test_only=True)  # an OOD set's read: a reader may skip its train split
    assert len(reads) == 3  # its entry is never served to a full read:
    assert len(DATASETS.get("cifar100")(data_dir=tmp_path).train) == 20 and len(reads) == 4


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def chw_rows(x):
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def test_official_cifar100_pickle_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = fake_images(12)
    _pickle(folder / "train", {b"data": chw_rows(x[:8]), b"fine_labels": list(range(8)), b"coarse_labels": [0] * 8})
    _pickle(folder / "test", {b"data": chw_rows(x[8:]), b"fine_labels": [99, 98, 97, 96]})
    _pickle(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    data = DATASETS.get("cifar100")(data_dir=tmp_path)
    assert np.array_equal(data.train.x, x[:8]) and np.array_equal(data.test.x, x[8:])
    assert data.test.y.tolist() == [99, 98, 97, 96] and data.classes[3] == "c3"


class Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_planted_cifar_pickle_is_refused_unread(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    marker = tmp_path / "pwned"
    _pickle(folder / "train", {b"data": Payload(marker), b"fine_labels": [0]})
    with pytest.raises(DataError, match=r"cifar-100-python/train: refused: it names (posix|os)\.system"):
        DATASETS.get("cifar100")(data_dir=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("keys", [bytes, str])
def test_cifar_pickles_with_str_or_bytes_keys_and_any_protocol(tmp_path, protocol, keys):
    """The official files (Python 2: bytes keys, protocol 2) and copies re-pickled by Python 3 (str keys, numpy
    arrays) read alike."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = fake_images(6)

    def dump(name, d):
        with open(folder / name, "wb") as f:
            pickle.dump({keys(k) if keys is str else k.encode(): v for k, v in d.items()}, f, protocol=protocol)

    dump("train", {"data": chw_rows(x[:4]), "fine_labels": np.arange(4)})
    dump("test", {"data": chw_rows(x[4:]), "fine_labels": [7, 8]})
    dump("meta", {"fine_label_names": [f"c{i}" if keys is str else f"c{i}".encode() for i in range(100)]})
    data = DATASETS.get("cifar100")(data_dir=tmp_path)
    assert np.array_equal(data.train.x, x[:4]) and data.train.y.tolist() == [0, 1, 2, 3]
    assert data.test.y.tolist() == [7, 8] and data.classes[5] == "c5"


def test_official_cifar10_pickle_folder(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = fake_images(12)
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", {b"data": chw_rows(x[2 * i - 2 : 2 * i]), b"labels": [i, i]})
    _pickle(folder / "test_batch", {b"data": chw_rows(x[10:]), b"labels": [0, 9]})
    _pickle(folder / "batches.meta", {b"label_names": [f"k{i}".encode() for i in range(10)]})
    data = DATASETS.get("cifar10")(data_dir=tmp_path)
    assert np.array_equal(data.train.x, x[:10]) and data.train.y.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert data.num_classes == 10 and data.test.y.tolist() == [0, 9]


def test_image_folder_tree(tmp_path):
    x = fake_images(6)
    root = tmp_path / "cifar10"
    classes = [f"class{i}" for i in range(10)]
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
    for i, img in enumerate(x):
        Image.fromarray(img).save(root / ("train" if i < 4 else "test") / classes[i] / f"{i}.png")
    data = DATASETS.get("cifar10")(data_dir=tmp_path)
    assert np.array_equal(data.train.x, x[:4]) and data.train.y.tolist() == [0, 1, 2, 3]
    assert np.array_equal(data.test.x, x[4:]) and data.test.y.tolist() == [4, 5]  # PNG is lossless


def test_tinyimagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    flat = np.full((64, 64, 3), 0, np.uint8)
    for k, w in enumerate(wnids):
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(3):
            Image.fromarray(flat + 40 * k + j).save(root / "train" / w / "images" / f"{w}_{j}.JPEG", quality=100)
    lines = []
    for j in range(4):
        Image.fromarray(flat + 10 * j).save(root / "val" / "images" / f"val_{j}.JPEG", quality=100)
        lines.append(f"val_{j}.JPEG\t{wnids[j % 2]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = DATASETS.get("tinyimagenet")(data_dir=tmp_path)
    assert data.train.x.shape == (6, 64, 64, 3) and data.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test.y.tolist() == [0, 1, 0, 1] and data.num_classes == 2
    assert abs(int(data.train.x[4].mean()) - 41) <= 1  # JPEG keeps a flat image's value


def test_synthetic_is_deterministic_and_balanced():
    a = DATASETS.get("synthetic")(synthetic_size=300, synthetic_classes=3, synthetic_resolution=16)
    b = DATASETS.get("synthetic")(synthetic_size=300, synthetic_classes=3, synthetic_resolution=16)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    assert a.train.x.shape == (300, 16, 16, 3) and np.bincount(a.train.y).tolist() == [100, 100, 100]
    # learnable: the class prototypes are far apart relative to the noise (nearest-mean classifier)
    x = a.train.x.reshape(300, -1).astype(float)
    means = np.stack([x[a.train.y == k].mean(0) for k in range(3)])
    xt = a.test.x.reshape(len(a.test), -1).astype(float)
    pred = ((xt[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == a.test.y).mean() > 0.9
    assert not np.array_equal(synthetic_arrays((10,), 3, 16, 1)[0].x, synthetic_arrays((10,), 3, 16, 2)[0].x)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        DATASETS.get("cifar100")(data_dir=tmp_path / "nowhere")
    text = str(err.value)
    assert "cifar100 not found" in text and str(tmp_path / "nowhere") in text and "download: true" in text
    with pytest.raises(DataError, match="wnids.txt"):
        DATASETS.get("tinyimagenet")(data_dir=tmp_path)


def test_corrupt_data_is_reported_with_its_path(tmp_path):
    folder = tmp_path / "cifar100"
    folder.mkdir()
    (folder / "train.npz").write_bytes(b"not a zip file")
    (folder / "test.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="train.npz: cannot read"):
        DATASETS.get("cifar100")(data_dir=tmp_path)
    np.savez(folder / "train.npz", x=fake_images(4), y=np.arange(4))
    (folder / "SHA256SUMS").write_text("0" * 64 + "  train.npz\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        DATASETS.get("cifar100")(data_dir=tmp_path)
    (folder / "SHA256SUMS").unlink()
    np.savez(folder / "test.npz", x=fake_images(2), y=np.array([0, 100]))
    with pytest.raises(DataError, match="labels outside 0..99"):
        DATASETS.get("cifar100")(data_dir=tmp_path)


def test_shared_cifar100_pixels_match_their_checksums(real_data_dir):
    data = DATASETS.get("cifar100")(data_dir=real_data_dir)
    assert (
        hashlib.sha256(data.train.x.tobytes()).hexdigest()
        == "2aa2e92a742ec0fbd361b0b1386394899dfac5a05c448330d3371fd9b63b3e87"
    )
    assert (
        hashlib.sha256(data.test.x.tobytes()).hexdigest()
        == "2716d826d85ee9ca7f948fb4dc3b3d7515225d1a436d1c4b7e6975855da3d9ee"
    )
    assert np.bincount(data.train.y).tolist() == [500] * 100 and np.bincount(data.test.y).tolist() == [100] * 100
    assert len(data.classes) == 100 and data.classes[0] == "apple"


def test_subsets_and_validation_split_are_fixed_and_disjoint(real_data_dir):
    cfg = tiny_config(dataset="cifar100", data_dir=real_data_dir, val_size=1000, train_subset=5000, test_subset=2000)
    a, b = load_dataset(cfg), load_dataset(cfg.model_copy(update={"seed": 7}))
    assert len(a.train) == 5000 and len(a.val) == 1000 and len(a.test) == 2000
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.val.x, b.val.x)  # independent of the seed
    train_keys = {hashlib.md5(img.tobytes()).hexdigest() for img in a.train.x}
    val_keys = {hashlib.md5(img.tobytes()).hexdigest() for img in a.val.x}
    assert len(train_keys & val_keys) <= 2  # only CIFAR-100's own duplicate images may coincide
    assert len(np.unique(a.train.y)) == 100  # shuffled before subsetting: all classes present


def image_tree(root, sizes, test_classes=None):
    """cifar10/{train,test}/class<i>/<n>.png: one train image per size in ``sizes`` (class i), test images in
    ``test_classes`` (folder name -> count)."""
    classes = [f"class{i}" for i in range(10)]
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.fromarray(fake_images(1, size, seed=i)[0]).save(root / "train" / classes[i] / f"{i}.png")
    for c, n in (test_classes or {"class0": 1}).items():
        (root / "test" / c).mkdir(parents=True)
        for j in range(n):
            Image.fromarray(fake_images(1, sizes[0], seed=50 + j)[0]).save(root / "test" / c / f"{j}.png")


def test_an_image_tree_of_mixed_sizes_names_two_files_and_their_sizes(tmp_path):
    image_tree(tmp_path / "cifar10", [32, 32, 40])
    with pytest.raises(DataError, match=r"images of different sizes: .*class2/2.png is 40x40, .*class0/0.png is 32x32"):
        DATASETS.get("cifar10")(data_dir=tmp_path)


def test_test_classes_unknown_to_training_are_counted_in_a_warning(tmp_path, said_by):
    image_tree(tmp_path / "cifar10", [32] * 10, {"class0": 2, "zebra": 3, "aardvark": 1})
    said = said_by("harness.data.readers")
    data = DATASETS.get("cifar10")(data_dir=tmp_path)
    assert len(data.test) == 2
    assert any("2 class folder(s)" in m and "aardvark (1 images), zebra (3 images)" in m for m in said), said


def test_a_tree_without_test_names_the_missing_folder(tmp_path):
    image_tree(tmp_path / "cifar10", [32] * 10)
    import shutil

    shutil.rmtree(tmp_path / "cifar10" / "test")
    with pytest.raises(DataError, match=r"cifar10: an image tree with train/<class>/ but no test/ folder"):
        DATASETS.get("cifar10")(data_dir=tmp_path)


def test_a_truncated_npz_is_refused_by_the_availability_check(tmp_path):
    """The driver's check (no image decoded) stops a run before any trial reads the file."""
    from harness.data import check_available

    folder = tmp_path / "cifar100"
    folder.mkdir()
    np.savez(folder / "train.npz", x=fake_images(50), y=np.arange(50) % 100)
    np.savez(folder / "test.npz", x=fake_images(5), y=np.arange(5))
    data = (folder / "train.npz").read_bytes()
    (folder / "train.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train.npz: not a readable npz archive .* truncated or corrupt"):
        check_available(tiny_config(dataset="cifar100", data_dir=tmp_path))


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
    from harness.data import build_train_loader

    cfg = tiny_config(synthetic_size=20, batch_size=64)
    with pytest.raises(DataError, match=r"batch_size 64 is larger than the 20 training images x b = 1"):
        build_train_loader(cfg, load_dataset(cfg), "cpu")


def test_each_datasets_normalisation_is_its_documented_source():
    """mean/std per dataset, each from where docs/recipe.md says it comes from; a change here is a new revision."""
    documented = {
        "cifar100": ((0.4914, 0.4824, 0.4467), (0.2023, 0.1994, 0.2010)),  # the MixMo authors' CIFAR statistics
        "cifar10": ((0.4914, 0.4824, 0.4467), (0.2023, 0.1994, 0.2010)),
        "tinyimagenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the authors' standard_augmentations for Tiny ImageNet
        "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),  # SVHN's train-split statistics
        "synthetic": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),  # its generator's range
    }
    for name, (mean, std) in documented.items():
        spec = DATASETS.get(name)
        assert (spec.mean, spec.std) == (mean, std), name
    assert DATASETS.get("tinyimagenet").revision == 1  # its trials' ids moved when it stopped using ImageNet's
    recipe = (Path(__file__).parents[2] / "docs" / "recipe.md").read_text()
    assert "| normalisation (Tiny ImageNet) | mean 0.5, std 0.5 | code |" in recipe
