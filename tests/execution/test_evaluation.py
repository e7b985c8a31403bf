"""`harness evaluate` over many trials: refused while a run holds the suite (saying who), and a folder of traps
evaluated where it can be, the root refused."""

import os
import time

import numpy as np
import pytest

from harness.core import schema
from harness.store.lock import SuiteLock
from helpers import cli, copy_of, finished_trial, harness, tiny_config, tree_with_traps


def test_evaluate_is_refused_while_a_run_holds_the_suite_and_says_who(tmp_path):
    cfg = tiny_config(output_dir=tmp_path / "results", name="synth")
    labels = np.arange(8) % 4
    finished_trial(cfg, np.eye(4)[labels][:, None, :], labels)
    with SuiteLock(cfg.trial_dir.parent, command="harness run suite.yaml"):
        proc = cli("evaluate", cfg.trial_dir.parent, "--on", "test")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"this suite is being run by `harness run suite.yaml` (pid {os.getpid()} on" in proc.stderr
    assert not (cfg.trial_dir / schema.EVAL_DIR).exists()


@pytest.mark.slow  # `harness evaluate` in subprocesses
def test_evaluate_on_a_folder_of_traps_goes_on_and_on_the_root_is_refused(tmp_path, finished):
    suite = copy_of(finished, tmp_path)
    tree = tree_with_traps(tmp_path)
    proc = harness("evaluate", suite, "--on", f"ood:folder={tree}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 OOD vs" in proc.stdout  # the one real image; the FIFO and the device skipped, nothing blocked
    assert "(a FIFO)" in proc.stderr and "(a character device)" in proc.stderr  # said once, by the driver
    started = time.time()
    proc = harness("evaluate", suite, "--on", "ood:folder=/", timeout=120)
    assert proc.returncode == 2 and time.time() - started < 60, proc.stderr[-2000:]
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(": the root of the filesystem; point at the folder that holds the images")
    )
