"""harness.store.lock: one driver per suite, even when two start together on fresh storage; lock records no driver
writes are stale."""

import json
import subprocess
import sys
import time

import pytest

from harness.core import schema
from harness.store.lock import SuiteLock, running_trials
from helpers import harness_env, write_suite


@pytest.mark.slow  # two `harness run` subprocesses
def test_two_drivers_on_fresh_storage_one_runs_the_other_is_refused_by_the_lock(tmp_path):
    suite = write_suite(tmp_path, grid={"method": ["vanilla"], "width": [1]}, base={"epochs": 1})
    drivers = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "run", str(suite), "--data-dir", str(tmp_path / "data")],
            env=harness_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = sorted((d.wait(timeout=300), d.stderr.read()) for d in drivers)
    (ran, ran_err), (refused, refused_err) = outcomes
    assert (ran, refused) == (0, 2), outcomes
    assert "this suite is being run by `harness run" in refused_err and "--break-lock" in refused_err
    assert f"--data-dir {tmp_path / 'data'}`" in refused_err  # the whole command the driver was started with
    for err in (ran_err, refused_err):
        assert "Traceback" not in err and "OperationalError" not in err
    assert not (tmp_path / "results" / "synth" / schema.LOCK).exists()


def test_lock_records_that_no_driver_writes_are_stale(tmp_path, capsys):
    import socket

    here = {"host": socket.gethostname(), "updated": time.time(), "token": "x", "started": "then"}
    for record in (
        {**here, "pid": -1},  # os.kill(-1, 0) reaches every process: "alive" forever
        {**here, "pid": 0},
        {**here, "pid": "1234"},
        {**here, "pid": 1, "running": ["a", "b"]},
        {**here, "pid": 1, "updated": "now"},
        [1, 2],
    ):
        (tmp_path / schema.LOCK).write_text(json.dumps(record))
        assert running_trials(tmp_path) == (None, {})
        with SuiteLock(tmp_path):
            pass
        assert "held by an unreadable record is stale; taking it over" in capsys.readouterr().out
        assert not (tmp_path / schema.LOCK).exists()
