"""Safe and solid in real use: its own Ray, nothing in a results folder executes, one driver per suite,
corrupt files survived, bad values refused up front, resource errors said plainly, honest progress."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from harness.core import schema
from harness.execution.progress import Progress, TrialReport
from harness.store.errors import CorruptFile
from harness.store.files import load_logits
from harness.store.lock import LockHeld, SuiteLock, is_live
from harness.store.trial_folder import TrialFolder
from harness.trial.trainer import Trainer
from helpers import attempts, cli, epochs, harness, harness_background, tiny_config, write_suite


class Payload:
    """A pickle that runs a shell command when loaded by an unsafe loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def fail_after(epoch: int):
    """An on_epoch callback that stops the trial once epoch ``epoch``'s checkpoint is written."""

    def on_epoch(row: dict) -> None:
        if row["epoch"] == epoch:
            raise RuntimeError(f"injected failure after epoch {epoch}")

    return on_epoch


def plant(path: Path, marker: Path) -> None:
    torch.save({"epoch": 1, "model": Payload(marker)}, path)


# --- Ray: never a stranger's cluster
@pytest.mark.slow
def test_run_starts_its_own_ray_when_a_dead_cluster_is_recorded(tmp_path):
    """The first-hour failure: /tmp/ray/ray_current_cluster names a cluster that is gone (here: a port nothing
    listens on). ray.init(address=None) would try to join it for a minute; `harness run` starts its own."""
    ray_tmp = Path(os.environ["RAY_TMPDIR"]) / "ray"
    ray_tmp.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    record = ray_tmp / "ray_current_cluster"
    previous = record.read_text() if record.exists() else None
    record.write_text(dead)
    try:
        suite = write_suite(tmp_path, grid={"method": ["vanilla"], "width": [1]}, base={"epochs": 1})
        proc = harness("run", suite, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "1 finished" in proc.stdout and "Failed to connect to GCS" not in proc.stderr
    finally:
        record.write_text(previous) if previous is not None else record.unlink(missing_ok=True)


def test_ray_target_is_local_unless_an_address_is_named(monkeypatch):
    from harness.execution.cluster import ray_target

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_target() == "local" and ray_target("auto") == "auto" and ray_target("10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert ray_target() == "ray://head:10001" and ray_target("auto") == "auto"


@pytest.mark.slow
def test_a_suite_asking_for_a_gpu_on_a_machine_without_one_is_refused(tmp_path):
    suite = write_suite(tmp_path, resources={"cpus": 1, "gpus": 1}, grid={"method": ["vanilla"], "width": [1]})
    dry = harness("run", suite, "--dry-run")
    assert dry.returncode == 0 and "warning: the suite asks for GPUs" in dry.stdout
    assert "GPU-h (flat rate)" in dry.stdout
    proc = harness("run", suite, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "asks for CPU 1, GPU 1" in proc.stderr and "no GPU here" in proc.stderr
    assert not list((tmp_path / "results" / "synth").glob("*/config.yaml"))  # nothing ran


# --- nothing in a results folder executes code
@pytest.mark.parametrize("planted, resumed_from", [([schema.CHECKPOINT], 1), ([schema.CHECKPOINT, schema.PREVIOUS], 0)])
def test_planted_pickle_in_a_checkpoint_is_refused_and_training_resumes(tmp_path, planted, resumed_from, said_by):
    cfg = tiny_config(epochs=3, output_dir=tmp_path)
    with pytest.raises(RuntimeError, match="injected"):
        Trainer(cfg).run(on_epoch=fail_after(2))
    marker = tmp_path / "pwned"
    for name in planted:
        plant(cfg.trial_dir / name, marker)
    logs = said_by("harness.trial.trainer")
    Trainer(cfg).run()
    assert not marker.exists()
    for name in planted:
        assert any("refused by the weights-only loader" in line and name in line for line in logs), logs
        assert (cfg.trial_dir / (name + schema.CORRUPT_SUFFIX)).exists()
    # the last checkpoint refused: resumed from the one before; both refused: from scratch
    assert [a["from_epoch"] for a in attempts(cfg.trial_dir)] == [0, resumed_from]
    assert epochs(cfg.trial_dir) == [1, 2, 3] and TrialFolder(cfg.trial_dir).is_finished()


@pytest.mark.slow
@pytest.mark.parametrize("tags, resumed_from", [(["epoch2"], 1), (["epoch1", "epoch2"], 0)])
def test_planted_pickle_in_deepspeed_state_is_refused(tmp_path, tags, resumed_from, said_by):
    cfg = tiny_config(epochs=3, output_dir=tmp_path, engine="deepspeed", zero_stage=1)
    with pytest.raises(RuntimeError, match="injected"):
        Trainer(cfg).run(on_epoch=fail_after(2))
    marker = tmp_path / "pwned"
    planted = [p for tag in tags for p in (cfg.trial_dir / "deepspeed" / tag).glob("*.pt")]
    assert len(planted) == 2 * len(tags)  # model states and ZeRO optimizer states of each tag
    for path in planted:
        plant(path, marker)
    logs = said_by("harness.trial.trainer")
    Trainer(cfg).run()
    assert not marker.exists()
    assert sum("refused by the weights-only loader" in line for line in logs) == len(tags), logs
    assert [a["from_epoch"] for a in attempts(cfg.trial_dir)] == [0, resumed_from] and epochs(cfg.trial_dir) == [
        1,
        2,
        3,
    ]


def test_deepspeed_reads_its_own_files_weights_only(tmp_path):
    """Even past the check, DeepSpeed's loader itself is the weights-only one."""
    from harness.engines.deepspeed_engine import load_weights_only

    cfg = tiny_config(epochs=1, output_dir=tmp_path, engine="deepspeed", zero_stage=1)
    trainer = Trainer(cfg)
    assert trainer.engine.engine.checkpoint_engine.load is load_weights_only
    marker = tmp_path / "pwned"
    plant(tmp_path / "evil.pt", marker)
    with pytest.raises(Exception, match="(?i)unsupported global"):
        load_weights_only(tmp_path / "evil.pt")
    assert not marker.exists()


def test_logits_with_pickled_objects_are_refused(tmp_path):
    import numpy as np

    np.savez(tmp_path / "logits.npz", test_logits=np.array([Payload(tmp_path / "pwned")], dtype=object))
    with pytest.raises(CorruptFile, match="logits.npz"):
        load_logits(tmp_path / "logits.npz")
    assert not (tmp_path / "pwned").exists()


# --- one driver per suite
def test_lock_refuses_a_live_driver_and_takes_over_a_dead_one(tmp_path):
    first = SuiteLock(tmp_path, command="harness run a.yaml")
    first.acquire()
    record = json.loads((tmp_path / schema.LOCK).read_text())
    assert (
        record["pid"] == os.getpid()
        and record["host"] == socket.gethostname()
        and record["command"] == "harness run a.yaml"
    )
    with pytest.raises(LockHeld, match=f"being run by `harness run a.yaml` \\(pid {os.getpid()} on .*--break-lock"):
        SuiteLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / schema.LOCK).exists()
    # a driver that died on this host (its pid is gone): stale, taken over
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / schema.LOCK).write_text(json.dumps({**record, "pid": dead.pid, "token": "old"}))
    with SuiteLock(tmp_path) as second:
        assert json.loads((tmp_path / schema.LOCK).read_text())["token"] == second.record["token"]
    # another host: live while its heartbeat is fresh, stale once it is older than STALE_S
    other = {"host": "elsewhere", "pid": 1, "updated": time.time(), "token": "x"}
    assert is_live(other) and not is_live({**other, "updated": time.time() - 600})
    (tmp_path / schema.LOCK).write_text(json.dumps(other))
    with pytest.raises(LockHeld, match="elsewhere"):
        SuiteLock(tmp_path).acquire()
    with SuiteLock(tmp_path, break_lock=True):
        pass


@pytest.mark.slow
def test_second_driver_is_turned_away_and_status_shows_running(tmp_path):
    # one long trial, stopped with Ctrl-C once the second driver was turned away: the lock must go with it
    suite = write_suite(
        tmp_path,
        base={"epochs": 50, "synthetic_size": 1024, "synthetic_resolution": 32},
        grid={"method": ["vanilla"], "width": [1]},
    )
    log = tmp_path / "first.log"
    first = harness_background("run", suite, log=log, HARNESS_PROGRESS_S="0.5")
    try:
        deadline = time.time() + 240
        status = None
        while time.time() < deadline:
            status = harness("status", suite)
            if "running" in status.stdout and ", step " in status.stdout:
                break
            time.sleep(2)
        assert "running" in status.stdout and "driver: `harness run" in status.stdout, log.read_text()[-3000:]
        second = harness("run", suite)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"pid {first.pid}" in second.stderr and "--break-lock" in second.stderr
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=300) == 130, log.read_text()[-3000:]  # Ray's teardown is slow on a loaded machine
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    out = log.read_text()
    assert "elapsed " in out and ", step " in out and "ETA " in out
    assert "Traceback" not in out and "Tuner.restore" not in out
    assert "interrupted" in out and f"harness run {suite}" in out  # how to go on
    assert not (tmp_path / "results" / "synth" / schema.LOCK).exists()  # released


# --- bad values, refused before anything runs
def test_unusable_storage_and_tracking_are_refused_up_front(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for storage, why in ((str(afile / "results"), "Not a directory"), ("/proc/harness-results", "")):
        proc = cli("run", write_suite(tmp_path, storage=storage))
        assert proc.returncode == 2 and "is not a writable folder" in proc.stderr and why in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = cli("run", write_suite(tmp_path, storage=str(afile / "results")), "--dry-run")  # checked, nothing made
    assert proc.returncode == 2 and f"({afile} is not a folder)" in proc.stderr, proc.stderr
    suite = write_suite(tmp_path)
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 0 and not (tmp_path / "results").exists()  # a dry run creates no folder
    proc = cli("run", suite, "--tracking-uri", "banana://x")
    assert proc.returncode == 2 and "tracking URI 'banana://x': not one MLflow can open" in proc.stderr
    assert not (tmp_path / "results" / "synth").exists() or not list(
        (tmp_path / "results" / "synth").glob("*/config.yaml")
    )


def test_bad_suite_files_name_the_problem(tmp_path):
    cases = {
        "utf16.yaml": ("name: x\n".encode("utf-16"), "not UTF-8 text: byte 0 is b'\\xff' (it looks like UTF-16)"),
        "binary.yaml": (b"name: x\n\x00\x01\x02", "a binary file"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        proc = cli("run", tmp_path / name, "--dry-run")
        assert proc.returncode == 2 and expected in proc.stderr and name in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.slow  # trains, or runs the CLI in subprocesses: the full lane
def test_train_refuses_coerced_values_and_divergence_is_said_plainly(tmp_path):
    for value in ("'2'", "true", "2.5"):
        proc = cli("train", "--set", f"width={value}", "--set", "dataset=synthetic")
        assert proc.returncode == 2 and "width: Input should be a valid integer" in proc.stderr, proc.stderr
    proc = cli("train", "--set", "dataset=synthetic", "--set", "name=..")
    assert proc.returncode == 2 and "name: '..' is not a single folder name" in proc.stderr
    proc = cli("train", "--set", "dataset=synthetic", "--set", "device=banana")
    assert proc.returncode == 2 and "device: 'banana' is not a device: auto, cpu, cuda or cuda:N" in proc.stderr
    config = tmp_path / "diverge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **tiny_config().model_dump(mode="json"),
                "base_lr": 1e12,
                "l2": 0.0,
                "output_dir": str(tmp_path),
                "epochs": 3,
            }
        )
    )
    proc = cli("train", config)
    assert proc.returncode == 1 and "training diverged" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow  # a subprocess on a small tmpfs
def test_full_disk_is_reported_as_such(tmp_path):
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        config = tmp_path / "trial.yaml"
        config.write_text(yaml.safe_dump({**tiny_config(width=4).model_dump(mode="json"), "output_dir": str(disk)}))
        proc = harness("train", config)
        assert proc.returncode == 3 and "no space left on device" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "inline_container" not in proc.stderr
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.slow  # a subprocess under an address-space limit
def test_out_of_memory_is_reported_as_such(tmp_path):
    """A 6 GB address-space limit: the CPU allocator fails inside the first step."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6 * 10**9, 6 * 10**9))

    config = tmp_path / "trial.yaml"
    big = tiny_config(synthetic_size=512, synthetic_resolution=32, depth=16, width=8, batch_size=512, epochs=1)
    config.write_text(yaml.safe_dump({**big.model_dump(mode="json"), "output_dir": str(tmp_path)}))
    proc = subprocess.run(
        [os.sys.executable, "-m", "harness", "train", str(config)], capture_output=True, text=True, preexec_fn=limit
    )
    assert proc.returncode == 3 and "error: out of memory (asked for" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "enforce fail" not in proc.stderr


@pytest.mark.slow  # a subprocess and a signal
def test_ctrl_c_before_any_epoch_promises_nothing(tmp_path):
    config = tmp_path / "trial.yaml"
    config.write_text(
        yaml.safe_dump(
            {**tiny_config(synthetic_size=20000, epochs=2).model_dump(mode="json"), "output_dir": str(tmp_path)}
        )
    )
    log = tmp_path / "train.log"
    proc = harness_background("train", config, log=log)
    deadline = time.time() + 300  # a loaded machine (CI runs two test files at once) starts slowly
    while "steps/epoch" not in log.read_text() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None and "steps/epoch" in log.read_text(), log.read_text()[-2000:]  # training, not done
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()[-2000:]
    assert "interrupted before any epoch ended: nothing to resume from" in log.read_text()


def test_report_from_another_folder_says_where_it_looked(tmp_path, monkeypatch):
    suite = write_suite(tmp_path)
    suite.write_text("\n".join(line for line in suite.read_text().splitlines() if not line.startswith("storage:")))
    monkeypatch.chdir(tmp_path / "..")
    proc = cli("report", suite)  # no `storage:`: ./results of the working folder
    assert proc.returncode == 2
    assert f"no results yet in {(tmp_path / '..').resolve() / 'results' / 'synth'}" in proc.stderr
    assert "keeps its results in ./results of the folder `harness` runs in" in proc.stderr


def test_missing_data_hint_names_flags_that_exist(tmp_path):
    suite = write_suite(tmp_path, base={"dataset": "cifar100", "data_dir": str(tmp_path / "none")})
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 2 and "`download: true` in a suite's `base:`" in proc.stderr
    assert "`--set download=true` (`harness train`)" in proc.stderr


# --- progress you can trust
def test_eta_counts_each_trials_flops_at_the_measured_rates():
    small, big = tiny_config(epochs=4), tiny_config(epochs=4, method="cut_mixmo", M=2, b=2)
    progress = Progress({"small": small, "big": big}, {"small": 100.0, "big": 400.0}, concurrency=2)
    assert progress.eta() is None and "ETA after the first measurements" in progress.line()
    progress.start("small")
    assert "small: starting" in progress.line()
    # small: epoch 1 done in 5 s (25 FLOP / 5 s = 5 FLOP/s); 75 FLOP left of it, 400 of big; two slots at 5 FLOP/s
    progress.update("small", TrialReport("small", epoch=1, epoch_time_s=5.0, train_loss=1.0))
    assert progress.eta() == pytest.approx(475 / (2 * 5))
    # big: half of its epoch 2 done at 2 steps/s of 10 steps per epoch: 400 / 40 FLOP per step x 2 = 20 FLOP/s
    progress.update("big", TrialReport("big", in_epoch=2, step=5, steps=10, steps_per_s=2.0))
    assert progress.eta() == pytest.approx((75 + 400 * (1 - 1.5 / 4)) / (2 * (5 + 20) / 2))
    assert "big: epoch 2/4, step 5/10 (50%)" in progress.line() and "elapsed " in progress.line()
    progress.update("small", TrialReport("small", in_epoch=2, step=1, steps=10, steps_per_s=2.0))
    assert "small: epoch 2/4, step 1/10 (10%), last epoch loss 1.000" in progress.line()
    progress.update("small", TrialReport("small", evaluating="cifar100-c"))  # trained: its eval_sets running
    assert "small: trained; evaluating cifar100-c" in progress.line()
    progress.update("small", TrialReport("small", epoch=1, epoch_time_s=5.0, train_loss=1.0))  # the rates below
    # small done: one trial left, one slot, at the rate of the one running
    progress.end("small", ok=True)
    assert progress.eta() == pytest.approx(400 * (1 - 1.5 / 4) / 20)
    progress.end("big", ok=None)  # drained at a checkpoint (harness.trial.preemption): pending again, not done
    assert "1 done, 0 running, 1 pending, 0 failed" in progress.line()


def test_a_trial_report_goes_through_tune_and_the_lock_and_reads_the_same():
    """The driver reads back what the trial sent, among Tune's own keys; the lock's heartbeat keeps what `harness
    status` shows, with the progress view's words."""
    from harness.execution.progress import describe
    from harness.execution.status import status_rows

    sent = TrialReport("t", epoch=2, epoch_time_s=3.0, train_loss=0.5, test_top1=0.25, metrics={"lr": 0.1})
    tune_result = {**sent.to_tune(), "training_iteration": 2, "time_this_iter_s": 3.1}
    read = TrialReport.from_tune(tune_result)
    assert (read.epoch, read.epoch_time_s, read.train_loss, read.test_top1, read.done) == (2, 3.0, 0.5, 0.25, False)
    assert read.is_epoch_end and read.metrics["lr"] == 0.1 and "training_iteration" in read.metrics
    assert TrialReport.from_tune(TrialReport("t", done=True, metrics={"top1": 0.5}).to_tune()).done
    assert describe(read, 4) == "epoch 2/4 done, loss 0.500, test 25.0%"
    step = TrialReport("t", in_epoch=3, step=5, steps=10, steps_per_s=1.0)
    assert describe(step, 4, last_epoch=read) == "epoch 3/4, step 5/10 (50%), last epoch loss 0.500"
    cfg = tiny_config(epochs=4)
    for report in (step, TrialReport("t", evaluating="ood-svhn"), TrialReport("t")):
        (row,) = status_rows([cfg], running={cfg.trial_id: report.heartbeat()})
        assert row[7] == "running" and row[8] == describe(
            TrialReport.from_heartbeat(cfg.trial_id, report.heartbeat()), 4
        )
    assert row[8].startswith("starting")
