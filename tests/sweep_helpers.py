"""Helpers for the sweep tests: suites written into a temporary folder, `harness run` as a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

SUITE = yaml.safe_load((Path(__file__).parent / "suites" / "synthetic_2x2.yaml").read_text())


def write_suite(tmp_path: Path, **changes) -> Path:
    suite = {**SUITE, "storage": str(tmp_path / "results"), **changes}
    suite["base"] = {**SUITE["base"], **changes.get("base", {})}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def harness_env(**extra) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("HARNESS_TEST_FAULT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def harness(*args, timeout=600, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], env=harness_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def harness_background(*args, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], env=harness_env(**env),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
