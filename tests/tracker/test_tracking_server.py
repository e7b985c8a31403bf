"""Tracking against a real `mlflow server` on localhost, and a tracking outage that loses nothing."""

import os
import signal

import numpy as np
import pytest

from harness.planning.suite import expand, load_suite
from helpers import (
    finished_trial,
    free_port,
    harness,
    harness_background,
    runs,
    start_postgres,
    start_server,
    write_suite,
)


@pytest.mark.slow  # Ray, subprocesses or a server: the full lane (CI) runs it
def test_outage_then_sync_then_live_server(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    suite = write_suite(tmp_path, grid={"method": ["vanilla", "cut_mixmo"], "width": [1]})
    # 1. the server is down: training is unaffected, what could not be logged is kept
    down = harness("run", suite, "--tracking-uri", uri)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert "tracking: could not reach" in down.stderr and "harness sync" in down.stderr
    assert "2 finished" in down.stdout
    server = start_server(tmp_path, port)
    try:
        # 2. the server is back: `harness sync` sends everything where it was meant to go (no --tracking-uri)
        synced = harness("sync", suite)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert f"kept back from {uri}: sent there" in synced.stdout and uri in synced.stdout
        client, parents, children = runs(uri, "synth")
        assert len(parents) == 1 and len(children) == 2
        for c in children:
            assert c.info.status == "FINISHED"
            assert sorted(m.step for m in client.get_metric_history(c.info.run_id, "test_top1")) == [1, 2]
            assert "final_top1" in c.data.metrics
            assert "metrics.json" in {a.path for a in client.list_artifacts(c.info.run_id)}
        # a second sync sends nothing twice
        assert harness("sync", suite, "--tracking-uri", uri).returncode == 0
        assert len(runs(uri, "synth")[2]) == 2
        assert len(client.get_metric_history(children[0].info.run_id, "test_top1")) == 2
        # 3. a sweep tracked live on the server
        (tmp_path / "live").mkdir()
        live_suite = write_suite(tmp_path / "live", name="live", grid={"method": ["mimo"], "width": [1, 2]})
        live = harness("run", live_suite, "--tracking-uri", uri)
        assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
        assert "could not reach" not in live.stderr
        _, parents, children = runs(uri, "live")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert sorted(c.data.tags["width"] for c in children) == ["1", "2"]
        assert all(c.data.tags["M"] == "2" and c.info.status == "FINISHED" for c in children)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow  # a PostgreSQL server, an mlflow server and a sweep: the full lane (CI) runs it
def test_the_cluster_store_postgresql_takes_two_writers_at_once(tmp_path):
    """ray_cluster.yaml's store: `mlflow server` on PostgreSQL. A sweep sends its runs through the server while
    another process writes a second suite's runs into the same database directly; both arrive whole, once."""
    from mlflow.tracking import MlflowClient

    database, stop_database = start_postgres(tmp_path / "pg")
    direct = database.replace("postgresql://", "postgresql+psycopg://")  # the recipe's URI: the driver named
    port = free_port()
    server = start_server(tmp_path, port, store=direct, workers=2)
    try:
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
        live = write_suite(tmp_path / "a", name="live", grid={"method": ["vanilla", "mimo"], "width": [1]})
        done = write_suite(
            tmp_path / "b", name="done", grid={"method": ["vanilla"], "width": [1], "seed": list(range(6))}
        )
        for cfg in expand(load_suite(done), "done"):  # six finished trials, written as the trainer writes them
            labels = np.arange(40) % 4
            logits = 3 * np.eye(4)[labels][:, None] + np.random.default_rng(cfg.seed).normal(size=(40, 1, 4))
            finished_trial(cfg, logits, labels)
        sweep = harness_background("run", live, "--tracking-uri", f"http://127.0.0.1:{port}", log=tmp_path / "live.log")
        synced = harness("sync", done, "--tracking-uri", direct)  # meanwhile, straight into the database
        assert sweep.wait(timeout=600) == 0, (tmp_path / "live.log").read_text()[-3000:]
        assert synced.returncode == 0, synced.stdout[-2000:] + synced.stderr[-2000:]
        log = (tmp_path / "live.log").read_text()
        assert "could not reach" not in log and "database is locked" not in log + synced.stderr
        for uri in (f"http://127.0.0.1:{port}", direct):  # the server and the database hold the same runs
            _, parents, children = runs(uri, "live")
            assert len(parents) == 1 and sorted(c.data.tags["method"] for c in children) == ["mimo", "vanilla"]
            assert all(c.info.status == "FINISHED" and "final_top1" in c.data.metrics for c in children)
            _, _, synced_children = runs(uri, "done")
            assert sorted(int(c.data.tags["seed"]) for c in synced_children) == list(range(6))
        history = MlflowClient(direct).get_metric_history(children[0].info.run_id, "test_top1")
        assert sorted(m.step for m in history) == [1, 2]
        again = harness("sync", done, "--tracking-uri", f"http://127.0.0.1:{port}")  # nothing doubled
        assert again.returncode == 0 and len(runs(direct, "done")[2]) == 6
        # written straight into the database, the artifacts went beside the results, not into the working folder
        assert len(list((tmp_path / "b" / "results" / "mlartifacts").rglob("metrics.json"))) == 6
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        stop_database()


@pytest.mark.slow  # a PostgreSQL server stopped under a sweep
def test_a_database_store_that_stops_mid_sweep_is_an_outage_of_seconds_without_a_traceback(tmp_path):
    """PostgreSQL stops after the first trial: the sweep finishes, keeps back what it could not send and says so in
    a line; `harness sync` with the database down says so at once (MLflow alone retries for ~100 s); once the
    database is back, sync sends every run once."""
    import time

    database, stop_database = start_postgres(tmp_path / "pg")
    uri = database.replace("postgresql://", "postgresql+psycopg://")
    suite = write_suite(tmp_path, grid={"method": ["vanilla"], "width": [1], "seed": [0, 1, 2]}, concurrency=1)
    log = tmp_path / "run.log"
    sweep = harness_background("run", suite, "--tracking-uri", uri, log=log)
    results = tmp_path / "results" / "synth"
    deadline = time.time() + 300
    while time.time() < deadline and not list(results.glob("*/metrics.json")):
        time.sleep(0.5)
    stop_database()
    assert sweep.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and "tracking: " in text, text[-3000:]  # the outage said in a line
    down = harness("sync", suite, "--tracking-uri", uri, timeout=300)
    # the probe's words: the store was found down by one connection attempt, not by MLflow's ~100 s of retries
    assert "Traceback" not in down.stderr and "does not answer" in down.stdout + down.stderr, down.stderr
    database, stop_database = start_postgres(tmp_path / "pg2")  # a fresh server: the runs are rebuilt from folders
    uri = database.replace("postgresql://", "postgresql+psycopg://")
    try:
        up = harness("sync", suite, "--tracking-uri", uri, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        _, parents, children = runs(uri, "synth")
        assert len(children) == 3 and len(parents) == 1
    finally:
        stop_database()
