"""harness.tracker.tracking: MLflow as a mirror of the trial folders: a deleted or moved store is mirrored again,
never doubled; a store that is not a database is one line; a locked store is an outage, sent later by `harness
sync`."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store.trial_folder import TrialFolder
from helpers import copy_of, harness, trials


def _mirror(tmp_path: Path) -> tuple[int, int]:
    """(parent runs, trial runs) the suite's store holds, each trial once."""
    from helpers import runs

    _, parents, children = runs(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", "synth")
    ids = [c.data.tags["trial_id"] for c in children]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(c.info.status == "FINISHED" and "final_top1" in c.data.metrics for c in children)
    return len(parents), len(children)


@pytest.mark.slow  # `harness run`, `report`, `status`, `sync` in subprocesses
def test_a_deleted_or_moved_store_is_mirrored_again_never_doubled(tmp_path, finished):
    suite = copy_of(finished, tmp_path)  # a moved storage folder: the store's URI is new, its runs are found
    for command in (("run", suite), ("report", suite), ("status", suite), ("sync", suite)):
        proc = harness(*command)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert _mirror(tmp_path) == (1, 4)

    (tmp_path / "results" / "mlflow.db").unlink()  # deleted: the next run sends everything to the new store
    proc = harness("run", suite)
    assert proc.returncode == 0 and "could not reach" not in proc.stderr, proc.stderr[-2000:]
    assert _mirror(tmp_path) == (1, 4)
    assert harness("sync", suite).returncode == 0 and _mirror(tmp_path) == (1, 4)


@pytest.mark.slow  # `harness run` and `report` in subprocesses
def test_a_store_that_is_not_a_database_is_one_line_and_exit_2_before_anything_runs(tmp_path, finished):
    suite = copy_of(finished, tmp_path)
    store = tmp_path / "results" / "mlflow.db"
    store.write_bytes(b"garbage " * 1000)
    shutil.rmtree(trials(tmp_path)[0])  # a trial to train, which must not start
    shutil.rmtree(tmp_path / "results" / "synth" / "report", ignore_errors=True)
    for command in ("run", "report"):
        proc = harness(command, suite)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: the MLflow store {store} is not an SQLite database; move it aside and run again: the runs are "
            f"rebuilt from the trial folders (or pass --tracking-uri)"
        )
        assert "Traceback" not in proc.stderr
    assert len(trials(tmp_path)) == 3 and not (tmp_path / "results" / "synth" / "report").exists()
    store.unlink()
    assert harness("run", suite).returncode == 0 and _mirror(tmp_path) == (1, 4)


LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.slow  # `harness run` while another process holds the store
def test_a_locked_store_is_an_outage_the_run_goes_on_and_sync_sends_it_later(tmp_path, finished):
    suite = copy_of(finished, tmp_path)
    shutil.rmtree(trials(tmp_path)[0])  # one trial to train while the store is locked
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "results" / "mlflow.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = harness("run", suite)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not reach" in proc.stderr and "database is locked" in proc.stderr and "Traceback" not in proc.stderr
    kept = json.loads((tmp_path / "results" / "synth" / "tracking_kept_back.json").read_text())
    assert len(kept["trials"]) == 4
    assert all(TrialFolder(t).is_finished() for t in trials(tmp_path))
    proc = harness("sync", suite)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _mirror(tmp_path) == (1, 4)
    assert not (tmp_path / "results" / "synth" / "tracking_kept_back.json").exists()
