"""Multi-node: a real Ray cluster on this machine (a head with no CPUs and two worker nodes, Ray's
``cluster_utils.Cluster``), `harness run --address` against it, a real `mlflow server`; trials spread
over the workers, a worker node lost mid-trial, the driver lost mid-sweep."""

import os
import signal
import time

import pytest

from harness.store.filesystems import filesystem_type, storage_problem
from helpers import attempts, epochs, harness, harness_background, node_of, runs, trial_dirs, write_suite

pytestmark = pytest.mark.timeout(600)


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_trials_spread_over_the_worker_nodes_and_reach_the_mlflow_server(tmp_path, cluster, mlflow_server):
    c, workers = cluster
    suite = write_suite(
        tmp_path, grid={"method": ["vanilla", "cut_mixmo"], "width": [1]}, base={"epochs": 3}, concurrency=2
    )
    proc = harness("run", suite, "--address", c.address, "--tracking-uri", mlflow_server)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    dirs = trial_dirs(tmp_path)
    assert len(dirs) == 2 and all((d / "metrics.json").exists() for d in dirs)
    nodes = {node_of(workers, attempts(d)[0]).node_id for d in dirs}
    assert nodes == {w.node_id for w in workers}  # one trial on each worker (the head has no CPU)
    _, parents, children = runs(mlflow_server, "synth")
    assert len(parents) == 1 and len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["harness.nodes"] == attempts(tmp_path / "results" / "synth" / run.info.run_name)[0]["node"]
        assert "final_top1" in run.data.metrics


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_lost_worker_node_is_survived_by_resuming_on_the_other(tmp_path, cluster):
    c, workers = cluster
    suite = write_suite(
        tmp_path,
        grid={"method": ["cut_mixmo"], "width": [1]},
        base={"epochs": 10, "synthetic_size": 1024},
        max_retries=2,
        concurrency=2,
    )
    driver = harness_background("run", suite, "--address", c.address, log=tmp_path / "driver.log")
    try:
        trial = None
        deadline = time.time() + 300
        while time.time() < deadline and not (trial and 2 <= len(epochs(trial)) < 8):
            time.sleep(0.2)
            dirs = trial_dirs(tmp_path) if (tmp_path / "results" / "synth").exists() else []
            trial = dirs[0] if dirs else None
        assert trial is not None and 2 <= len(epochs(trial)) < 8, (tmp_path / "driver.log").read_text()[-3000:]
        lost = node_of(workers, attempts(trial)[0])
        c.remove_node(lost, allow_graceful=False)  # the node dies with the trial on it
        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    tries = attempts(trial)
    assert len(tries) == 2 and tries[0]["node"] != tries[1]["node"]
    survivor = node_of([w for w in workers if w is not lost], tries[1])
    assert survivor is not lost and tries[1]["from_epoch"] >= 2  # resumed from its last checkpoint
    assert epochs(trial) == list(range(1, 11))  # no gap, no repeated epoch
    assert (trial / "metrics.json").exists()


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_a_killed_driver_is_replaced_without_rerunning_finished_trials(tmp_path, cluster):
    c, _ = cluster
    suite = write_suite(
        tmp_path,
        grid={"method": ["vanilla", "cut_mixmo"], "width": [1, 2]},
        base={"epochs": 6, "synthetic_size": 512},
        concurrency=2,
    )
    driver = harness_background("run", suite, "--address", c.address, log=tmp_path / "driver1.log")
    deadline = time.time() + 300
    finished = []
    while time.time() < deadline:
        time.sleep(0.2)
        dirs = trial_dirs(tmp_path) if (tmp_path / "results" / "synth").exists() else []
        finished = [d for d in dirs if (d / "metrics.json").exists()]
        if finished and any(0 < len(epochs(d)) < 6 for d in dirs):
            break
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert finished, (tmp_path / "driver1.log").read_text()[-3000:]
    stamps = {d.name: (d / "metrics.json").stat().st_mtime_ns for d in finished}
    proc = harness("run", suite, "--address", c.address)  # the same command, a new driver, the same cluster
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"({len(finished)} finished, {4 - len(finished)} to run)" in proc.stdout
    for d in trial_dirs(tmp_path):
        assert epochs(d) == list(range(1, 7)), d.name  # resumed ones repeat no epoch
        assert (d / "metrics.json").exists()
    for name, stamp in stamps.items():
        assert (tmp_path / "results" / "synth" / name / "metrics.json").stat().st_mtime_ns == stamp  # not re-run


def test_node_local_storage_is_refused_on_a_multi_host_cluster(tmp_path):
    mounts = "/dev/sda1 / ext4 rw 0 0\nfs-1.efs:/ /mnt/shared nfs4 rw 0 0\n"
    assert filesystem_type(tmp_path / "x", mounts) == "ext4"
    assert filesystem_type("/mnt/shared/results", mounts) == "nfs4"
    assert storage_problem(tmp_path, {"10.0.0.1"}, "ext4") is None  # one host: local disk is shared
    assert storage_problem(tmp_path, {"10.0.0.1", "10.0.0.2"}, "nfs4") is None
    problem = storage_problem(tmp_path, {"10.0.0.1", "10.0.0.2"}, "ext4")
    assert "node-local filesystem (ext4)" in problem and "spans 2 hosts" in problem and "shared filesystem" in problem


def test_ray_cluster_yaml_is_a_valid_cluster_launcher_config():
    from pathlib import Path

    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((Path(__file__).parents[2] / "ray_cluster.yaml").read_text()))
    validate_config(config)  # Ray's own schema, as `ray up` checks it
    assert set(config["available_node_types"]) == {"head", "gpu_worker"}
    head_commands = "\n".join(config["head_start_ray_commands"])
    assert "mlflow server" in head_commands and "/mnt/shared/mlflow" in head_commands
    # the store for many writers: PostgreSQL on the head (tests/tracker/test_tracking_server.py runs one), not
    # sqlite on NFS
    assert "--backend-store-uri postgresql+psycopg://" in head_commands and "sqlite" not in head_commands
    assert any("createdb" in cmd for cmd in config["head_setup_commands"])
    assert any("[ffcv,deepspeed,s3,cluster]" in cmd for cmd in config["setup_commands"])
    assert any("harness" in cmd and "pip install" in cmd for cmd in config["setup_commands"])
