"""`harness run` on a real local Ray: a synthetic 2-method x 2-width suite, tracked in MLflow (sqlite)."""

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import FAULTS, attempts, harness, harness_background, trial_dirs, write_suite


def child_runs(client, experiment="synth"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    suite = write_suite(tmp, concurrency=2)  # two trials at once: the one sweep test of a pool of trial workers
    proc = harness("run", suite, HARNESS_PROGRESS_S="0")  # a progress line at every report: each epoch is seen
    return tmp, suite, proc


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_suite_runs_to_completion_with_result_folders(finished_sweep):
    tmp, suite, proc = finished_sweep
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "suite synth: 4 trials (0 finished, 4 to run)" in proc.stdout
    assert "4 finished" in proc.stdout
    dirs = trial_dirs(tmp)
    assert len(dirs) == 4
    for d in dirs:
        metrics = json.loads((d / "metrics.json").read_text())
        history = list(csv.DictReader(open(d / "history.csv")))
        assert [r["epoch"] for r in history] == ["1", "2"] and metrics["trial_id"] == d.name
        # the final top-1 is a share of the test images, the one the last epoch's evaluation logged
        correct = metrics["top1"] * metrics["test_images"]  # a count of images, up to float32 rounding
        assert abs(correct - round(correct)) < 1e-4
        assert metrics["top1"] == float(history[-1]["test_top1"])
    # progress lines: counts by state and running trials' epochs
    assert "done," in proc.stdout and "running" in proc.stdout and "epoch 1/2" in proc.stdout
    # the end: the compact results table, how to open MLflow, how to get the report
    assert (
        "top-1 %" in proc.stdout and "95% t-interval" in proc.stdout and "mlflow ui --backend-store-uri" in proc.stdout
    )


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_mlflow_has_the_parent_and_four_children_with_epoch_metrics(finished_sweep):
    tmp, _, _ = finished_sweep
    client = MlflowClient(f"sqlite:///{tmp / 'results' / 'mlflow.db'}")
    parents, children = child_runs(client)
    assert len(parents) == 1 and len(children) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.params["name"] == "synth" and "cut_mixmo" in parents[0].data.params["grid"]
    assert parents[0].data.params["base.depth"] == "10" and parents[0].data.params["concurrency"] == "2"
    for c in children:
        assert c.info.status == "FINISHED"
        assert {"method", "width", "M", "seed", "trial_id"} <= set(c.data.tags)
        assert c.data.params["method"] in ("vanilla", "cut_mixmo") and c.data.params["depth"] == "10"
        history = client.get_metric_history(c.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == [1, 2]
        assert "final_top1" in c.data.metrics
        assert "final_workers" not in c.data.metrics and "final_epochs" not in c.data.metrics  # facts, not results
        artifacts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert {"metrics.json", "history.csv", "config.yaml", "logits.npz"} <= artifacts


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_rerun_is_a_no_op_and_status_reports(finished_sweep):
    tmp, suite, _ = finished_sweep
    mtimes = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in trial_dirs(tmp)}
    again = harness("run", suite)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(4 finished, 0 to run)" in again.stdout
    assert {d.name: (d / "metrics.json").stat().st_mtime_ns for d in trial_dirs(tmp)} == mtimes
    # nothing to do: no analysis (the report does it), and every logits file was read whole once, then remembered
    assert "nothing to run: all 4 trials are finished" in again.stdout and "top-1 %" not in again.stdout
    verified = json.loads((tmp / "results" / "synth" / ".cache" / "verified.json").read_text())
    assert sorted(Path(v[0]).parent.name for v in verified) == sorted(d.name for d in trial_dirs(tmp))
    status = harness("status", suite)
    assert status.returncode == 0 and "4 finished" in status.stdout
    folder_status = harness("status", tmp / "results" / "synth")
    assert folder_status.returncode == 0 and folder_status.stdout.count("finished") >= 4
    dry = harness("run", suite, "--dry-run")
    assert dry.returncode == 0 and "cost:" in dry.stdout and "on CPUs: ~" in dry.stdout and "GPU-h" not in dry.stdout


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_driver_killed_mid_sweep_then_resumed(tmp_path):
    """SIGKILL the driver while a trial is half-way; the same command finishes the sweep, keeps the
    finished trials' files untouched and resumes the interrupted trial from its checkpoint."""
    suite = write_suite(
        tmp_path,
        concurrency=1,
        grid={"method": ["vanilla"], "width": [1, 2], "seed": [0, 1]},
        base={"epochs": 6, "synthetic_size": 384},
        ensembles={"method": "vanilla", "sizes": [2]},
    )
    proc = harness_background("run", suite, log=tmp_path / "first.log")
    root = tmp_path / "results" / "synth"
    partial = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        dirs = [d for d in root.glob("*-s*-*") if d.is_dir()] if root.exists() else []
        finished = [d for d in dirs if (d / "metrics.json").exists()]
        running = [
            d
            for d in dirs
            if not (d / "metrics.json").exists()
            and (d / "history.csv").exists()
            and len((d / "history.csv").read_text().splitlines()) >= 3
        ]  # >= 2 epochs done
        if finished and running:
            partial = running[0]
            break
        time.sleep(0.2)
    assert partial is not None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    time.sleep(2)
    before = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in finished}
    rows_before = list(csv.DictReader(open(partial / "history.csv")))
    second = harness("run", suite)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"({len(finished)} finished, {4 - len(finished)} to run)" in second.stdout
    for d in finished:
        assert (d / "metrics.json").stat().st_mtime_ns == before[d.name]
    rows_after = list(csv.DictReader(open(partial / "history.csv")))
    assert [r["epoch"] for r in rows_after] == [str(e) for e in range(1, 7)]  # no restarted or repeated epoch
    assert rows_after[: len(rows_before)] == rows_before  # the epochs before the kill were kept, not redone
    assert all((d / "metrics.json").exists() for d in root.glob("vanilla-*"))
    ensembles = json.loads((root / "ensembles.json").read_text())
    assert sorted(e["width"] for e in ensembles) == [1, 2] and all(e["members"] == 2 for e in ensembles)
    assert "deep ensemble vanilla wrn-10-1 x2" in second.stdout


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_failing_trial_is_retried_then_recorded_and_a_transient_failure_resumes(tmp_path):
    suite = write_suite(tmp_path, max_retries=1, base={"epochs": 3})
    # every attempt of the width-2 Cut-MixMo trial raises after its first epoch; the width-1 vanilla trial raises
    # once, after epoch 2; the others are untouched (one sweep for both: each `harness run` starts Ray and a worker)
    faults = "raise@1+@cut_mixmo-wrn10x2,raise@2@vanilla-wrn10x1"
    proc = harness("run", suite, "--plugin", FAULTS, HARNESS_TEST_FAULT=faults)
    assert proc.returncode == 1
    assert "1 trial(s) failed" in proc.stderr and "cut_mixmo-wrn10x2" in proc.stderr
    assert "retrying from its last checkpoint" in proc.stdout and "retry 1" in proc.stdout
    root = tmp_path / "results" / "synth"
    failed = next(root.glob("cut_mixmo-wrn10x2-*"))
    assert "injected test fault" in (failed / "error.txt").read_text()
    assert not (failed / "metrics.json").exists()
    assert sum((d / "metrics.json").exists() for d in root.glob("*-M*-s0-*")) == 3
    resumed = next(root.glob("vanilla-wrn10x1-*"))  # from its epoch-2 checkpoint: each epoch once
    assert [r["epoch"] for r in csv.DictReader(open(resumed / "history.csv"))] == ["1", "2", "3"]
    assert [a["from_epoch"] for a in attempts(resumed)] == [0, 2]
    status = harness("status", suite)
    assert "failed" in status.stdout and "injected test fault" in status.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    _, children = child_runs(client)
    states = sorted(c.info.status for c in children)
    assert states == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_new_grid_values_run_alone_and_restart_runs_everything(tmp_path):
    one = {"method": ["vanilla"], "width": [1]}
    assert harness("run", write_suite(tmp_path, grid=one, base={"epochs": 1})).returncode == 0
    first = next((tmp_path / "results" / "synth").glob("vanilla-wrn10x1-*")) / "metrics.json"
    stamp = first.stat().st_mtime_ns
    grown = harness("run", write_suite(tmp_path, grid={"method": ["vanilla"], "width": [1, 2]}, base={"epochs": 1}))
    assert grown.returncode == 0 and "(1 finished, 1 to run)" in grown.stdout
    assert first.stat().st_mtime_ns == stamp
    restarted = harness("run", tmp_path / "suite.yaml", "--restart")
    assert restarted.returncode == 0 and "(0 finished, 2 to run)" in restarted.stdout
    assert first.stat().st_mtime_ns != stamp


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_report_goes_to_the_parent_run_with_the_aggregated_results(finished_sweep):
    tmp, suite, _ = finished_sweep
    proc = harness("report", suite)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "top-1 %" in proc.stdout
        and "file://" in proc.stdout
        and "mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    )
    client = MlflowClient(f"sqlite:///{tmp / 'results' / 'mlflow.db'}")
    parents, _ = child_runs(client)
    metrics = client.get_run(parents[0].info.run_id).data.metrics
    assert {"top1/vanilla-wrn10x1-M1", "top1/cut_mixmo-wrn10x2-M2", "cal_ece/vanilla-wrn10x2-M1"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/index.html" in artifacts
