"""Tracking against a real `mlflow server` on localhost, and a tracking outage that loses nothing."""

import os
import signal

import pytest

from helpers import free_port, harness, runs, start_server, write_suite


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
