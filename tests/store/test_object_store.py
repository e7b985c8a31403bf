"""Object-store storage (`storage: s3://bucket/prefix`): a real S3-compatible server on localhost
(moto's standalone server, as Ray's own tests use; real S3 is out of reach here), pyarrow.fs as the
harness uses it, a multi-node Ray cluster whose nodes each work in their own staging folder: trial
folders, checkpoints, the report and MLflow's artifacts end up in the bucket; a trial whose node is
lost resumes on the other node from the checkpoint in the bucket."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pyarrow.fs
import pytest

from harness.store.object_store import CACHE_ONLY, ObjectStore
from helpers import FAULTS, free_port, harness, harness_background, node_of, write_suite

pytestmark = pytest.mark.timeout(600)
BUCKET = "harness-test"


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """An S3 endpoint with one bucket; the environment every process (Ray nodes included) reads it from."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(tmp_path / "s3.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "s3.log").read_text()[-2000:]
            time.sleep(0.2)
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HARNESS_STAGING_DIR": str(tmp_path / "staging"),
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}/sweeps"
    os.killpg(proc.pid, signal.SIGKILL)


def stored(uri, rel):
    return ObjectStore(uri).list(rel)


def read(uri, path) -> bytes:
    store = ObjectStore(uri)
    fs, root = store._open()
    with fs.open_input_stream(f"{root}/{path}") as f:
        return f.read()


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_push_and_pull_move_changed_files_only(tmp_path, s3):
    store = ObjectStore(s3)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("one")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 5000)
    (src / "checkpoint.pt").write_bytes(b"weights")
    (src / ".a.txt.tmp").write_text("a half-written file")  # results' atomic writes: never mirrored
    assert store.push(src, "t") == 3
    assert set(stored(s3, "t")) == {"a.txt", "sub/b.bin", "checkpoint.pt"}
    assert store.push(src, "t") == 0  # nothing changed
    time.sleep(0.01)
    (src / "a.txt").write_text("two")
    assert store.push(src, "t") == 1 and read(s3, "t/a.txt") == b"two"

    dst = tmp_path / "dst"
    assert store.pull("t", dst, skip=CACHE_ONLY) == 2
    assert (dst / "a.txt").read_text() == "two" and (dst / "sub" / "b.bin").read_bytes() == (
        src / "sub" / "b.bin"
    ).read_bytes()
    assert not (dst / "checkpoint.pt").exists()
    assert store.pull("t", dst, skip=CACHE_ONLY) == 0 and store.push(dst, "t") == 0  # pulled files are not sent back

    # prune: what a copy pushed or pulled and then deleted goes from the store too, a deleted folder as a whole
    (src / "ds" / "epoch1").mkdir(parents=True)
    (src / "ds" / "epoch1" / "part").write_bytes(b"old")
    (src / "ds" / "latest").write_text("epoch1")
    assert store.push(src, "t", prune=True) == 2
    assert store.pull("t", dst) == 3  # dst: a second copy (another rank) holding the same files
    shutil.rmtree(src / "ds" / "epoch1")
    (src / "a.txt").unlink()
    assert store.push(src, "t") == 0 and len(stored(s3, "t")) == 5  # without prune nothing is deleted
    store.push(src, "t", prune=True)
    assert set(stored(s3, "t")) == {"sub/b.bin", "checkpoint.pt", "ds/latest"}
    fs, root = store._open()
    assert fs.get_file_info(f"{root}/t/ds/epoch1").type == pyarrow.fs.FileType.NotFound  # no empty folder marker left
    shutil.rmtree(dst / "ds" / "epoch1")
    store.push(dst, "t", prune=True)  # the other copy prunes what is already gone: no error
    assert set(stored(s3, "t")) == {"sub/b.bin", "checkpoint.pt", "ds/latest"}  # nor brings back its unchanged a.txt
    store.delete("t")
    assert stored(s3, "t") == {}


def test_bad_object_store_settings_are_refused_before_anything_runs(tmp_path, capsys):
    from harness.cli import main

    assert main(["run", str(write_suite(tmp_path, storage="ftp://host/results"))]) == 2
    err = capsys.readouterr().err
    assert "storage" in err and "'ftp://host/results'" in err and "s3://bucket/prefix" in err


def epochs_in(history: bytes) -> list[int]:
    return [int(r["epoch"]) for r in csv.DictReader(io.StringIO(history.decode()))]


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_cluster_sweep_keeps_results_checkpoints_report_and_artifacts_in_the_store(tmp_path, s3, cluster):
    c, workers = cluster
    suite = write_suite(
        tmp_path, storage=s3, grid={"method": ["vanilla", "cut_mixmo"], "width": [1]}, base={"epochs": 3}, concurrency=2
    )
    proc = harness("run", suite, "--address", c.address)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = stored(s3, "synth")
    trials = sorted({name.split("/")[0] for name in files if "/" in name and name.split("/")[1] == "metrics.json"})
    assert len(trials) == 2
    nodes = set()
    for trial in trials:
        assert {
            f"{trial}/{f}"
            for f in ("config.yaml", "history.csv", "checkpoint.pt", "logits.npz", "attempts.json", "metrics.json")
        } <= set(files)
        assert epochs_in(read(s3, f"synth/{trial}/history.csv")) == [1, 2, 3]
        (attempt,) = json.loads(read(s3, f"synth/{trial}/attempts.json"))
        nodes.add(node_of(workers, attempt).node_id)
        # the trial worked in its node's own staging folder
        assert (tmp_path / "staging" / attempt["node"].replace("/", "-") / "synth" / trial / "metrics.json").exists()
    assert nodes == {w.node_id for w in workers}
    assert {"status.txt"} <= set(files), sorted(f for f in files if "/" not in f)  # the suite's own files

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{next((tmp_path / 'staging' / 'driver').iterdir()) / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synth")
    assert exp.artifact_location == f"{s3}/mlartifacts/synth"
    artifacts = stored(s3, "mlartifacts/synth")
    for run in client.search_runs([exp.experiment_id]):
        if run.info.run_name in trials:
            assert any(
                name.startswith(f"{run.info.run_id}/artifacts/") and name.endswith("history.csv") for name in artifacts
            )

    # another machine (an empty staging folder) reports straight from the bucket, and stores the report there
    elsewhere = {"HARNESS_STAGING_DIR": str(tmp_path / "elsewhere")}
    proc = harness("status", f"{s3}/synth", **elsewhere)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("2 finished"), proc.stdout + proc.stderr
    proc = harness("report", suite, **elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {"report/index.html", "report/results.csv"} <= set(stored(s3, "synth"))
    assert not list((tmp_path / "elsewhere").rglob("checkpoint.pt"))  # status and report never download checkpoints
    # evaluation from there: each trial's checkpoint comes from the bucket, its eval/ records go back to it
    proc = harness("evaluate", suite, "--on", "test", **elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for trial in trials:
        record = json.loads(read(s3, f"synth/{trial}/eval/test/metrics.json"))
        assert record["metrics"]["top1"] == json.loads(read(s3, f"synth/{trial}/metrics.json"))["top1"]


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_lost_node_resumes_its_trial_from_the_checkpoint_in_the_store(tmp_path, s3, cluster):
    c, workers = cluster
    suite = write_suite(
        tmp_path,
        storage=s3,
        grid={"method": ["cut_mixmo"], "width": [1]},
        base={"epochs": 10, "synthetic_size": 1024},
        max_retries=2,
    )
    staging = tmp_path / "staging"
    driver = harness_background("run", suite, "--address", c.address, log=tmp_path / "driver.log")
    try:
        history = None
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(0.2)
            found = [h for h in staging.glob("*/synth/*/history.csv") if h.parts[-4] != "driver"]
            # epoch 3 written here: epoch 2's checkpoint is in the store (pushed before epoch 3 began)
            if found and 3 <= len(found[0].read_text().splitlines()) - 1 < 8:
                history = found[0]
                break
        assert history is not None, (tmp_path / "driver.log").read_text()[-3000:]
        first_node = history.parents[2].name
        (first,) = json.loads((history.parent / "attempts.json").read_text())
        c.remove_node(node_of(workers, first), allow_graceful=False)  # the other node has its own staging folder
        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    trial = history.parent.name
    tries = json.loads(read(s3, f"synth/{trial}/attempts.json"))
    assert len(tries) == 2 and tries[1]["from_epoch"] >= 2  # resumed from a checkpoint, not from scratch
    second_node = tries[1]["node"].replace("/", "-")
    assert second_node != first_node and (staging / second_node / "synth" / trial / "metrics.json").exists()
    assert epochs_in(read(s3, f"synth/{trial}/history.csv")) == list(range(1, 11))  # no gap, no repeat
    assert f"{trial}/metrics.json" in stored(s3, "synth")


@pytest.fixture
def fault_after_epoch_2(monkeypatch):
    """Every trial process fails once, after epoch 2 (the cluster's nodes, started after this, inherit it)."""
    monkeypatch.setenv("HARNESS_TEST_FAULT", "raise@2")


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_trial_of_two_workers_on_two_nodes_mirrors_and_resumes_from_the_store(
    tmp_path, s3, fault_after_epoch_2, cluster
):
    c, workers = cluster
    suite = write_suite(
        tmp_path,
        storage=s3,
        grid={"method": ["cut_mixmo"], "width": [1]},
        max_retries=1,
        base={"epochs": 4, "workers_per_trial": 2, "engine": "deepspeed", "zero_stage": 1},
    )
    proc = harness("run", suite, "--address", c.address, "--plugin", FAULTS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = stored(s3, "synth")
    (trial,) = {name.split("/")[0] for name in files if name.endswith("/metrics.json")}
    # one CPU per node: the two ranks ran on different nodes, each in its own staging folder
    copies = list((tmp_path / "staging").glob(f"*/rank*/synth/{trial}"))
    assert {p.parents[1].name for p in copies} == {"rank0", "rank1"} and len({p.parents[2] for p in copies}) == 2
    # failed after epoch 2 on both ranks, retried: resumed from the store's checkpoint, every rank's part of it
    tries = json.loads(read(s3, f"synth/{trial}/attempts.json"))
    assert [t["from_epoch"] for t in tries] == [0, 2]
    assert epochs_in(read(s3, f"synth/{trial}/history.csv")) == [1, 2, 3, 4]
    assert json.loads(read(s3, f"synth/{trial}/metrics.json"))["workers"] == 2
    # the store keeps DeepSpeed's last two tags only, each with both ranks' optimizer partitions
    tags = {name.split("/")[2] for name in files if name.startswith(f"{trial}/deepspeed/epoch")}
    assert tags == {"epoch3", "epoch4"}
    for tag in tags:
        parts = [name for name in files if name.startswith(f"{trial}/deepspeed/{tag}/") and "optim_states" in name]
        assert len(parts) == 2 and any("rank_0" in p for p in parts) and any("rank_1" in p for p in parts), parts
