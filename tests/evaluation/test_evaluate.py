"""`harness evaluate` end to end on real CIFAR-100: a trained trial's checkpoint on its own test set (it must
give metrics.json's numbers), a generated corruption stand-in and a class-split OOD set; resumed, not
recomputed; and a sweep that evaluates its `eval_sets` as trials finish, into MLflow and the report."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from harness.core import schema
from harness.metrics.uncertainty import confidence_scores, detection_metrics
from harness.store.trial_folder import TrialFolder
from helpers import cli, harness, runs, write_suite

TRIAL = [
    "dataset=cifar100",
    "model=wrn",
    "depth=10",
    "width=1",
    "epochs=2",
    "train_subset=800",
    "test_subset=300",
    "class_subset=90",  # the other 10 classes (1,000 test images): the held-out OOD set
    "method=cut_mixmo",
    "M=2",
    "b=2",
    "eval_every=0",
    "progress=false",
]


@pytest.fixture(scope="module")
def evaluated(real_data_dir, tmp_path_factory):
    """One real-data trial, a stand-in of 2 corruptions x 5 severities of 80 test images, evaluated once."""
    tmp = tmp_path_factory.mktemp("evaluate")
    sets = [f"--set={s}" for s in TRIAL]
    out = harness("train", *sets, f"--set=output_dir={tmp / 'results'}", HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr
    out = harness(
        "data", "corrupt", "cifar100", "--images", 80, "--corruptions", "gaussian_noise", "contrast",
        "--out", tmp / "cc", HARNESS_DATA_DIR=real_data_dir,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "not the official" in out.stdout
    folder = TrialFolder(next((tmp / "results" / "trial").iterdir()))
    on = ["test", f"cifar100-c-generated={tmp / 'cc'}", "ood:heldout-classes"]
    out = harness("evaluate", folder.path.parent, "--on", *on, HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr + out.stdout
    return tmp, folder, on, out.stdout


def test_checkpoint_reproduces_metrics_json(evaluated):
    _, folder, _, stdout = evaluated
    trained, again = folder.metrics(), folder.evaluation("test")["metrics"]
    assert again["top1"] == trained["top1"]  # same network, same images: the same predictions
    for key in ("nll", "ece", "cal_nll", "brier", "aurc", "acc_at_90"):  # float16 logits on disk: rounding only
        assert again[key] == pytest.approx(trained[key], rel=2e-3, abs=2e-4), key
    assert "top-1" in stdout


def test_generated_corruptions_labelled_and_restricted_to_the_trained_classes(evaluated):
    tmp, folder, _, stdout = evaluated
    record = folder.evaluation("cifar100-c-generated")
    assert record["generated"] and record["generation"]["by"] == "harness data corrupt"
    assert "(generated stand-in)" in stdout
    labels = np.load(tmp / "cc" / "labels.npy")[:80]
    kept = int((labels < 90).sum())  # the trial knows classes 0-89 only
    assert record["per_corruption"]["contrast"]["5"]["images"] == kept
    assert record["summary"]["corruptions_in_mean"] == 2
    assert record["temperature"] == folder.metrics()["temperature"]  # the clean fit, applied under shift
    assert record["summary"]["corrupted_cal_nll"] > 0 and 0 <= record["summary"]["corrupted_cal_ece"] <= 1
    saved = folder.eval_part("cifar100-c-generated", "gaussian_noise")
    assert saved["logits"].dtype == np.float16 and saved["logits"].shape == (5 * kept, 2, 90)
    assert saved["severity"].tolist() == [s for s in range(1, 6) for _ in range(kept)]


def test_ood_always_against_the_test_set(evaluated):
    _, folder, _, _ = evaluated
    record = folder.evaluation("ood-heldout-classes")
    assert record["in_images"] == folder.metrics()["test_images"] == 300
    assert record["out_images"] == 1000  # the 10 held-out classes x 100 test images
    ins = confidence_scores(torch.from_numpy(folder.logits()[schema.TEST_LOGITS]).float())
    outs = confidence_scores(torch.from_numpy(folder.eval_part("ood-heldout-classes", "ood")["logits"]).float())
    for score in ("msp", "mutual_information"):
        expected = detection_metrics(ins[score].numpy(), outs[score].numpy())
        assert record["scores"][score] == pytest.approx(expected)


def test_evaluated_twice_recomputes_nothing_and_resumes_a_part(evaluated, real_data_dir):
    tmp, folder, on, _ = evaluated
    files = sorted(p for p in (folder.path / "eval").rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    out = harness("evaluate", folder.path.parent, "--on", *on, HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr
    assert "evaluating" not in out.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    # a run stopped after one corruption: the saved part is reused, the missing one predicted
    before = folder.evaluation("cifar100-c-generated")
    (folder.path / "eval" / "cifar100-c-generated" / "metrics.json").unlink()
    (folder.path / "eval" / "cifar100-c-generated" / "contrast.npz").unlink()
    kept = folder.path / "eval" / "cifar100-c-generated" / "gaussian_noise.npz"
    out = harness("evaluate", folder.path.parent, "--on", on[1], HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr
    assert kept.stat().st_mtime_ns == stamps[kept]
    after = folder.evaluation("cifar100-c-generated")
    assert after["per_corruption"] == before["per_corruption"] and after["summary"] == before["summary"]


def test_deep_ensemble_composed_from_eval_logits(evaluated):
    """Two identical members: pooled heads average to the member's logits, so the ensemble's corrupted and
    OOD numbers are the member's own (computed again from the saved logits)."""
    from analysis.robustness import _ensemble_records

    _, folder, _, _ = evaluated
    twin = folder.path.parent / "twin"
    shutil.copytree(folder.path, twin)
    try:
        records = _ensemble_records([folder.path, twin], rule="probabilities")
    finally:
        shutil.rmtree(twin)
    single = folder.evaluation("cifar100-c-generated")["summary"]
    assert records["cifar100-c-generated"]["summary"]["corrupted_top1"] == pytest.approx(single["corrupted_top1"])
    # the ensemble is rescored from the saved float16 logits, the member's record from its float32 ones: a tie made
    # or broken by float16 flips one of the 300 x 1,000 (in, out) pairs, 3.3e-6 of AUROC each
    assert records["ood-heldout-classes"]["scores"]["msp"]["auroc"] == pytest.approx(
        folder.evaluation("ood-heldout-classes")["scores"]["msp"]["auroc"], abs=3e-5
    )
    assert "test" not in records  # the clean set is the ensemble's own row in the results table


def test_refusals_are_specific(evaluated, real_data_dir):
    tmp, folder, _, _ = evaluated
    out = harness("evaluate", folder.path.parent, "--on", "cifar100-c", HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 2 and "no corruption files found" in out.stderr and "Zenodo" in out.stderr
    out = harness("evaluate", folder.path.parent, "--on", "cifar100c", HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 2 and "unknown evaluation set; allowed: test, cifar10-c" in out.stderr
    copy = tmp / "broken" / "trial"
    shutil.copytree(folder.path.parent, copy)
    checkpoint = next(copy.iterdir()) / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    out = harness("evaluate", copy, "--on", "ood:synthetic", HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr  # a finished trial's checkpoint checked
    assert "checkpoint.pt: truncated" in out.stderr and "(1 corrupt, run `harness run` first)" in out.stderr


def test_sweep_evaluates_its_sets_into_mlflow_and_the_report(tmp_path, real_data_dir):
    suite = write_suite(
        tmp_path, eval_sets=["test", "ood:cifar100"], grid={"method": ["vanilla", "cut_mixmo"], "width": [1]}
    )
    out = harness("run", suite, HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert " trial(s) on " not in out.stdout  # each trial evaluated itself as it finished, none left for the end
    name = yaml.safe_load(suite.read_text())["name"]
    folders = [TrialFolder(p) for p in (tmp_path / "results" / name).iterdir() if (p / "config.yaml").exists()]
    assert len(folders) == 2
    for folder in folders:
        assert folder.evaluation("test")["metrics"]["top1"] == folder.metrics()["top1"]
        assert folder.evaluation("ood-cifar100")["out_images"] == 10000  # resized to the trials' 16 x 16
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    client, _, children = runs(uri, name)
    assert len(children) == 2
    for run in children:
        assert 0 <= run.data.metrics["eval.ood-cifar100.msp.auroc"] <= 1
        assert "eval.test.top1" in run.data.metrics
    out = harness("run", suite, HARNESS_DATA_DIR=real_data_dir)  # finished and evaluated: nothing is redone
    assert out.returncode == 0 and "evaluating" not in out.stdout
    history = client.get_metric_history(children[0].info.run_id, "eval.ood-cifar100.msp.auroc")
    assert len(history) == 1  # sent once
    out = cli("report", suite, HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "results" / name / "report" / "index.html").read_text()
    assert "Out-of-distribution detection" in page and "figures/roc.png" in page
    assert "Selective prediction" in page and "figures/risk_coverage.png" in page
    table = json.dumps((tmp_path / "results" / name / "report" / "ood.csv").read_text())
    assert "mutual information" in table and "ood:cifar100" in table


def test_report_shows_robustness_labelled_generated(evaluated, real_data_dir):
    _, folder, _, _ = evaluated
    out = harness("report", folder.path.parent, HARNESS_DATA_DIR=real_data_dir)
    assert out.returncode == 0, out.stderr
    report = folder.path.parent / "report"
    page = (report / "index.html").read_text()
    assert "Robustness to corruptions" in page and "figures/severity.png" in page and "not comparable" in page
    table = (report / "robustness.csv").read_text()
    assert "cifar100-c-generated (generated stand-in)" in table
    record = folder.evaluation("cifar100-c-generated")["summary"]
    assert f"{100 * record['corrupted_top1']:.2f}" in table  # the trial's own number, one seed: no interval
    assert (report / "figures" / "risk_coverage.png").exists() and (report / "figures" / "roc.png").exists()
