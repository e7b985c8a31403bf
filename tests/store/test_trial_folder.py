"""harness.store.trial_folder and the files and errors under it, under faults: unreadable logits or checkpoints
(corrupt, left out, recomputed), a full disk (one line, exit 3), truncated and refused checkpoints named."""

import os
import subprocess

import pytest

from harness.core import schema
from harness.store.errors import CorruptFile
from harness.store.files import load_checkpoint
from harness.store.trial_folder import TrialFolder
from harness.trial.trainer import Trainer
from helpers import attempts, cli, copy_of, harness, tiny_config, trials, write_suite


@pytest.mark.slow  # `harness run` in a subprocess
def test_finished_trials_with_unreadable_files_are_corrupt_left_out_and_recomputed(tmp_path, finished):
    suite = copy_of(finished, tmp_path)
    truncated_logits, damaged_logits, truncated_checkpoint, garbled_metrics = trials(tmp_path)
    logits = truncated_logits / schema.LOGITS
    logits.write_bytes(logits.read_bytes()[:-100])  # its zip directory is gone
    logits = damaged_logits / schema.LOGITS
    data = bytearray(logits.read_bytes())
    data[200:260] = bytes(60)  # inside the first member: the directory reads, the CRC does not match
    logits.write_bytes(bytes(data))
    checkpoint = truncated_checkpoint / schema.CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    (garbled_metrics / schema.METRICS).write_text('{"top1": 0.5,')  # invalid JSON

    status = cli("status", suite)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.startswith("vanilla-")}
    assert "corrupt" in lines[truncated_logits.name] and "logits.npz: truncated" in lines[truncated_logits.name]
    assert "finished" in lines[damaged_logits.name]  # status reads directories only: the damage shows later
    assert "corrupt" in lines[truncated_checkpoint.name] and "checkpoint.pt: truncated" in status.stdout
    assert "metrics.json: not valid JSON" in lines[garbled_metrics.name]
    assert "3 corrupt, 1 finished" in status.stdout

    report = cli("report", suite, "--no-figures")
    assert report.returncode == 0 and "4 trial(s) missing from the report" in report.stdout, report.stderr
    assert f"{damaged_logits.name}: corrupt: logits.npz: unreadable (Bad CRC-32" in report.stdout
    sync = cli("sync", suite)  # an unreadable file is no tracking outage
    assert sync.returncode == 0 and "could not reach" not in sync.stderr and "unreadable file" in sync.stderr

    run = harness("run", suite)
    assert run.returncode == 0, run.stderr[-3000:]
    for d in (truncated_logits, damaged_logits, garbled_metrics):
        assert f"{d.name}: {'metrics.json' if d == garbled_metrics else 'logits.npz'}: " in run.stderr
        assert attempts(d)[-1]["from_epoch"] == 2  # from the final checkpoint: only the evaluation reran
    assert "damaged: test_logits.npy fails its CRC check" in run.stderr
    assert "it is recomputed from its final checkpoint (the evaluation reruns, no training)" in run.stderr
    assert f"{truncated_checkpoint.name}: checkpoint.pt: truncated" in run.stderr
    assert "it is retrained from its last readable checkpoint" in run.stderr
    assert attempts(truncated_checkpoint)[-1]["from_epoch"] == 1  # from checkpoint.prev.pt
    assert (truncated_checkpoint / (schema.CHECKPOINT + schema.CORRUPT_SUFFIX)).exists()  # kept, set aside
    for d in trials(tmp_path):
        assert TrialFolder(d).state(thorough=True).state == "finished"
    assert "4 finished" in cli("status", suite).stdout
    assert "missing from the report" not in cli("report", suite, "--no-figures").stdout


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)])


@pytest.mark.slow  # `harness run` in subprocesses on a small tmpfs
def test_a_full_disk_at_start_or_during_the_run_is_one_line_and_exit_3(tmp_path, small_disk):
    # a checkpoint of width 8 (about 2.5 MB) cannot fit on the 2 MB disk
    suite = write_suite(
        tmp_path,
        storage=str(small_disk / "results"),
        grid={"method": ["vanilla"], "width": [8]},
        base={"epochs": 1},
        max_retries=0,  # a retry would meet the same full disk
    )
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until it is full

    at_start = harness("run", suite)
    assert at_start.returncode == 3 and "Traceback" not in at_start.stderr, at_start.stderr[-3000:]
    assert at_start.stderr.strip().splitlines()[-1] == (
        f"error: no space left on device for the MLflow store {small_disk / 'results' / 'mlflow.db'}; free some "
        f"space and run the same command again"
    )
    assert not (small_disk / "results" / "mlflow.db").exists()  # no half-made store

    filler.unlink()
    during = harness("run", suite)
    suite_dir = small_disk / "results" / "synth"
    (trial,) = suite_dir.glob("vanilla-*")
    assert during.returncode == 3, during.stderr[-3000:]
    assert "Traceback" not in during.stdout + during.stderr
    last = during.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: 1 trial(s) stopped: no space left on device for {trial / schema.CHECKPOINT} (")
    assert last.endswith(f"(Ray's messages: {suite_dir / 'ray.log'})")
    assert "Trial task failed" in (suite_dir / "ray.log").read_text()  # Ray's traceback, kept off the terminal
    leftovers = [
        p.name for p in small_disk.rglob(".*") if p.name.startswith((f".{schema.LOCK}", f".{schema.CHECKPOINT}"))
    ]
    assert leftovers == [] and not (suite_dir / schema.LOCK).exists()
    assert "no space left on device" in cli("status", suite).stdout

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = harness("run", suite)
    assert again.returncode == 0 and TrialFolder(trial).is_finished(), again.stderr[-3000:]


def test_truncated_checkpoints_and_refusals_name_the_file_without_unsafe_advice(tmp_path):
    """A checkpoint truncated to a few KB raised OSError (Errno 22) past the reader; a refused one repeated
    torch's advice to load it with weights_only=False."""

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    cfg = tiny_config(epochs=2, output_dir=tmp_path)
    Trainer(cfg).run()
    path = cfg.trial_dir / schema.CHECKPOINT
    data = path.read_bytes()
    for size in (5_000, 20_000, len(data) // 2):
        path.write_bytes(data[:size])
        with pytest.raises(CorruptFile, match=r"checkpoint.pt: unreadable"):
            load_checkpoint(path)
    torch.save({"epoch": 1, "model": Payload()}, path)
    with pytest.raises(CorruptFile) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "refused by the weights-only loader" in message and "system" in message
    assert "weights_only" not in message.replace("weights-only", "") and not (tmp_path / "pwned").exists()
