"""The tests' forked `harness ARGS` (tests/forked.py) answers as a new interpreter does, whatever the test worker
holds, and leaves to a new interpreter what its server's imports could have read differently."""

import os
import subprocess
from pathlib import Path

import forked
import pytest
import yaml

from helpers import harness_env, on_a_new_interpreter, write_suite

pytestmark = pytest.mark.slow  # the slow lane's commands are the forked ones

REGMIXUP = Path(__file__).parents[1] / "examples" / "plugins" / "regmixup.py"  # registers a method


@pytest.fixture(autouse=True)
def forking_on(monkeypatch):
    """These tests check the forks themselves, also where TESTS_NO_FORK turned them off for the other tests."""
    if forked.base_env is None:
        monkeypatch.setattr(forked, "base_env", harness_env())


def test_a_forked_command_prints_and_exits_as_a_new_interpreter(tmp_path):
    for args in (["list"], ["status", str(tmp_path / "missing.yaml")], ["run"]):
        fork = forked.run(args, harness_env(), timeout=300)
        assert fork is not None, "a command with the default environment was not forked"
        new = on_a_new_interpreter(*args, timeout=300)
        assert (fork.returncode, fork.stdout, fork.stderr) == (new.returncode, new.stdout, new.stderr), args
    assert fork.returncode == 2 and "the following arguments are required: suite" in fork.stderr


def test_what_the_worker_loaded_never_reaches_a_forked_command():
    from harness.core import plugins

    plugin = plugins.load(str(REGMIXUP))  # registers a method in this worker
    try:
        fork = forked.run(["list"], harness_env(), timeout=300)
    finally:
        plugins.unload(plugin)
    assert fork.returncode == 0 and "regmixup" not in [line.split()[0] for line in fork.stdout.splitlines() if line]
    assert fork.stdout == on_a_new_interpreter("list", timeout=300).stdout


def test_a_command_whose_imports_could_differ_runs_on_a_new_interpreter():
    assert forked.run(["list"], harness_env(RAY_DEDUP_LOGS="0"), timeout=60) is None  # Ray reads its own at import
    assert forked.run(["list"], harness_env(PYTHONPATH=os.getcwd()), timeout=60) is None  # what it imports
    assert forked.run(["list"], harness_env(RAY_AUTH_MODE="disabled"), timeout=60) is not None  # the harness sets it


def test_a_forked_command_reads_the_harness_variables_it_is_given(tmp_path):
    """The harness reads HARNESS_* variables where it uses them (tests/test_layout.py): a command given one forks, and
    sees it as a new interpreter does."""
    suite = write_suite(tmp_path)
    raw = yaml.safe_load(suite.read_text())
    raw["base"] = {k: v for k, v in raw["base"].items() if not k.startswith("synthetic")} | {"dataset": "cifar100"}
    suite.write_text(yaml.safe_dump(raw))
    nowhere = tmp_path / "nowhere"
    fork = forked.run(["run", str(suite), "--dry-run"], harness_env(HARNESS_DATA_DIR=nowhere), timeout=300)  # a Path
    assert fork is not None, "a command given a HARNESS_ variable was not forked"
    assert fork.returncode == 2 and f"{nowhere}/cifar100/train.npz" in fork.stderr, fork.stderr
    new = on_a_new_interpreter("run", str(suite), "--dry-run", timeout=300, HARNESS_DATA_DIR=nowhere)
    assert (fork.returncode, fork.stdout, fork.stderr) == (new.returncode, new.stdout, new.stderr)


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs():
    with pytest.raises(subprocess.TimeoutExpired):
        forked.run(["list"], harness_env(), timeout=0.001)
    assert forked.run(["list"], harness_env(), timeout=300).returncode == 0
