"""The tests' forked `harness ARGS` (tests/forked.py) answers as a new interpreter does, and declines to fork
where what it inherits could differ."""

import os
import subprocess
import sys

import forked

from helpers import FAULTS, harness_env


def interpreter(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=harness_env(**env), capture_output=True, text=True, timeout=300
    )


def test_a_forked_command_prints_and_exits_as_a_new_interpreter(tmp_path):
    for args in (["list", "methods"], ["status", str(tmp_path / "missing.yaml")], ["run"]):
        fork = forked.run(args, harness_env(), timeout=300)
        assert fork is not None, "a fork was declined in a clean test worker"
        new = interpreter(*args)
        assert (fork.returncode, fork.stdout, fork.stderr) == (new.returncode, new.stdout, new.stderr), args
    assert fork.returncode == 2 and "the following arguments are required: suite" in fork.stderr


def test_a_fork_is_declined_where_the_child_could_differ(monkeypatch):
    assert forked.run(["list"], harness_env(HARNESS_PROGRESS_S="1"), timeout=60) is None  # read at import
    monkeypatch.setenv("HARNESS_PLUGIN_SLOW_S", "3")  # this worker's own environment changed since the imports
    assert forked.run(["list"], harness_env(), timeout=60) is None
    monkeypatch.undo()
    from harness.core import plugins

    plugin = plugins.load(str(FAULTS))  # registers its entries here
    try:
        assert forked.run(["list"], harness_env(), timeout=60) is None
    finally:
        plugins.unload(plugin)
    assert forked.run(["list"], harness_env(), timeout=60) is not None
    assert os.environ.get("HARNESS_PLUGIN_SLOW_S") is None
