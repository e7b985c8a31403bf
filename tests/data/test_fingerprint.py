"""A dataset's identity travels with its results: swapped data is never answered with old numbers, and an
evaluation set is known by its images, not its folder's name."""

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.data import DATASETS
from harness.evaluation.evaluate import evaluate_trial
from harness.evaluation.kinds import parse_eval_set
from harness.store.trial_folder import TrialFolder
from helpers import cli, tiny_config


def write_cifar10(root, seed):
    rng = np.random.default_rng(seed)
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("test", 20)):
        np.savez(folder / f"{split}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=np.arange(n) % 10)


def trial_file(tmp_path, data):
    cfg = tiny_config(dataset="cifar10", data_dir=data, output_dir=tmp_path / "results", epochs=1, name="fp")
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg, path


def test_the_fingerprint_follows_the_bytes_not_the_folder(tmp_path):
    write_cifar10(tmp_path / "a", 0)
    write_cifar10(tmp_path / "b", 0)  # the same bytes elsewhere
    write_cifar10(tmp_path / "c", 1)
    spec = DATASETS.get("cifar10")
    a, b, c = (spec.fingerprint(tmp_path / n) for n in "abc")
    assert a == b != c and a.startswith("sha256:")
    assert DATASETS.get("synthetic").fingerprint(None) is None  # a function of the recipe: its keys say it all


@pytest.mark.slow  # trains, or runs the CLI in subprocesses: the full lane
def test_swapped_data_is_refused_not_answered_with_old_results(tmp_path):
    data = tmp_path / "data"
    write_cifar10(data, 0)
    cfg, path = trial_file(tmp_path, data)
    assert cli("train", path).returncode == 0
    folder = TrialFolder(cfg.trial_dir)
    recorded = folder.config()["data_fingerprint"]
    assert recorded == DATASETS.get("cifar10").fingerprint(data)
    before = (cfg.trial_dir / "metrics.json").read_bytes()
    write_cifar10(data, 1)  # other images in the same folder
    proc = cli("train", path)
    assert proc.returncode == 2 and "trained on other data" in proc.stderr and "--restart" in proc.stderr
    assert (cfg.trial_dir / "metrics.json").read_bytes() == before
    suite = tmp_path / "suite.yaml"  # the sweep's driver says it before anything runs (a dry run too)
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "fp",
                "base": {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("name", "output_dir")},
                "grid": {"seed": [0]},
                "storage": str(tmp_path / "results"),
            }
        )
    )
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 2 and "1 trial(s) hold results of other data" in proc.stderr, proc.stderr
    assert cfg.trial_id in proc.stderr
    assert cli("train", path, "--restart").returncode == 0
    assert folder.config()["data_fingerprint"] == DATASETS.get("cifar10").fingerprint(data) != recorded


@pytest.mark.slow  # subprocesses: the full lane
def test_an_ood_folder_is_known_by_its_images_not_its_name(tmp_path, said_by):
    data = tmp_path / "data"
    write_cifar10(data, 0)
    cfg, path = trial_file(tmp_path, data)
    assert cli("train", path).returncode == 0
    for name, n in (("a", 3), ("b", 5)):  # two folders named imgs
        (tmp_path / name / "imgs").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)).save(tmp_path / name / "imgs" / f"{i}.png")
    said = said_by("harness.evaluation.evaluate")
    first = evaluate_trial(cfg, [parse_eval_set(f"ood:folder={tmp_path / 'a' / 'imgs'}")], "cpu")
    second = evaluate_trial(cfg, [parse_eval_set(f"ood:folder={tmp_path / 'b' / 'imgs'}")], "cpu")
    (r1,), (r2,) = first.values(), second.values()
    assert r1["out_images"] == 3 and r2["out_images"] == 5 and r1["fingerprint"] != r2["fingerprint"]
    assert any("recorded on other images" in m for m in said), said
    again = evaluate_trial(cfg, [parse_eval_set(f"ood:folder={tmp_path / 'b' / 'imgs'}")], "cpu")
    assert list(again.values())[0] == r2  # the same images: the record is reused as it is


def test_a_partial_evaluation_of_other_images_is_not_resumed(tmp_path):
    data = tmp_path / "data"
    write_cifar10(data, 0)
    cfg, path = trial_file(tmp_path, data)
    assert cli("train", path).returncode == 0
    folder = TrialFolder(cfg.trial_dir)
    folder.begin_eval("ood-folder-imgs", "sha256:other")
    folder.save_eval_part("ood-folder-imgs", "ood", {"logits": np.zeros((7, 1, 10), np.float16)})  # stale part
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 99 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    (record,) = evaluate_trial(cfg, [parse_eval_set(f"ood:folder={tmp_path / 'imgs'}")], "cpu").values()
    assert record["out_images"] == 2


@pytest.mark.parametrize("size", [10, 2 << 20])
def test_file_hashes_are_cached_by_size_and_time_when_large(tmp_path, size):
    from harness.data import fingerprint as fp

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * size)
    first = fp.fingerprint([path], tmp_path)
    assert (str(path.resolve()) in fp._cache()) == (size >= fp.CACHED_FROM_BYTES)
    path.write_bytes(b"b" * size)  # new bytes, new mtime: hashed again either way
    assert fp.fingerprint([path], tmp_path) != first
