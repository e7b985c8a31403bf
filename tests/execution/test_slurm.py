"""`harness slurm` on a real SLURM: munged, slurmctld and slurmd started here on localhost (one node, 2 CPUs, ports
and state folders of the test's own), the generated batch scripts submitted with sbatch. Two jobs share the node,
each with its own Ray; one is drained by `scancel --signal=USR1 --batch` mid-sweep, requeues itself and resumes.
The fast tests read the generated script and the drain protocol (harness.trial.preemption) without SLURM."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from harness.core import schema
from harness.execution.slurm import jobs, jobs_summary
from harness.trial import preemption
from tests.helpers import SUITE, attempts, cli, free_port, harness, runs
from tests.helpers import epochs as trial_epochs

SLURM_DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")


class LocalSlurm:
    """A one-node SLURM cluster on this machine (root: slurmd runs jobs as their user), its own munge key and
    socket, ports, state and spool folders; every command of the test reaches it through $SLURM_CONF."""

    def __init__(self, root: Path):
        self.root, self.procs = root, []
        for d in ("munge", "state", "spool", "log"):
            (root / d).mkdir(parents=True)
        (root / "munge").chmod(0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = root / "munge" / "munge.socket"
        host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=harnesstest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    "SlurmUser=root",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.socket}",
                    f"StateSaveLocation={root}/state",
                    f"SlurmdSpoolDir={root}/spool",
                    f"SlurmctldPidFile={root}/slurmctld.pid",
                    f"SlurmdPidFile={root}/slurmd.pid",
                    f"SlurmctldLogFile={root}/log/slurmctld.log",
                    f"SlurmdLogFile={root}/log/slurmd.log",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",  # two 1-CPU jobs share the node
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "JobCompType=jobcomp/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "MinJobAge=600",  # finished jobs stay visible to squeue/scontrol for the assertions
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
                    f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        r = self.root
        subprocess.run(
            ["munged", f"--socket={self.socket}", f"--key-file={r}/munge/munge.key", f"--pid-file={r}/munge/pid",
             f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge/seed", "--force"],
            check=True,
        )  # fmt: skip
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(r / "log" / f"{daemon[0]}.out", "w")
            self.procs.append(subprocess.Popen(daemon, env=self.env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while self.run("sinfo", "-h", "-o", "%t").stdout.strip() != "idle":
            assert time.monotonic() < deadline, (r / "log" / "slurmctld.log").read_text()[-3000:]
            time.sleep(0.5)

    def run(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)

    def state(self, job: str) -> str:
        out = self.run("scontrol", "show", "job", job).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "GONE")

    def wait(self, job: str, until: set[str], timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state(job)) not in until:
            assert time.monotonic() < deadline, f"job {job} still {state} after {timeout} s"
            time.sleep(1)
        return state

    def stop(self) -> None:
        self.run("scancel", "--full", "--user=root")
        time.sleep(2)
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=30)
        pid = (self.root / "munge" / "pid").read_text().strip()
        os.kill(int(pid), signal.SIGTERM)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [d for d in SLURM_DAEMONS if shutil.which(d) is None]
    assert not missing, f"SLURM is not installed here ({missing}): .ci/run installs Debian's slurm-wlm and munge"
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


def _suite(tmp_path: Path, name: str, epochs: int, size: int, seeds: int = 1) -> Path:
    suite = {
        **SUITE,
        "name": name,
        "storage": str(tmp_path / "results"),
        "grid": {"method": ["vanilla"], "width": [1], "seed": list(range(seeds))},
        "concurrency": 1,
        "base": {**SUITE["base"], "epochs": epochs, "synthetic_size": size},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _submit(slurm: LocalSlurm, suite: Path, *flags: str) -> str:
    proc = harness("slurm", suite, "--submit", "--time=0:20:00", *flags, SLURM_CONF=str(slurm.conf))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("submitted: job ")[1].split()[0]


def _events(suite_dir: Path) -> list[str]:
    return [row["event"] for row in jobs(suite_dir)]


def _ray_address(suite_dir: Path) -> str:
    return jobs(suite_dir)[0]["detail"].split("Ray at ")[1]


def _history_epochs(suite_dir: Path) -> dict[str, list[int]]:
    """Each started trial's epochs, in its history's order."""
    return {h.parent.name: trial_epochs(h.parent) for h in sorted(suite_dir.glob(f"*/{schema.HISTORY}"))}


def _attempts(suite_dir: Path) -> dict[str, list[int]]:
    """Each trial's runs: the epoch each started from."""
    return {
        p.parent.name: [a["from_epoch"] for a in attempts(p.parent)] for p in suite_dir.glob(f"*/{schema.ATTEMPTS}")
    }


def _log(suite_dir: Path, job: str, tail: int = 4000) -> str:
    return (suite_dir / schema.SLURM_DIR / f"{job}.out").read_text()[-tail:]


@pytest.mark.slow
def test_two_jobs_share_a_node_and_one_is_drained_requeued_and_resumed(slurm, tmp_path):
    short, long = _suite(tmp_path, "slurm_short", epochs=3, size=512), _suite(tmp_path, "slurm_long", 12, 2048, seeds=2)
    short_dir, long_dir = tmp_path / "results" / "slurm_short", tmp_path / "results" / "slurm_long"
    limited, limited_dir = _suite(tmp_path, "slurm_limited", 12, 2048), tmp_path / "results" / "slurm_limited"
    a, b = _submit(slurm, short), _submit(slurm, long)
    c = _submit(slurm, limited, "--max-requeues=0")  # waits for a CPU: starts when A ends
    script = (short_dir / schema.SLURM_DIR / schema.SLURM_SCRIPT).read_text()
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --signal=B:USR1@600" in script

    # A finishes while B trains on the same node: A stopped its own Ray, and B's went on
    assert slurm.wait(a, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED", _log(short_dir, a)
    assert slurm.state(b) == "RUNNING", _log(long_dir, b)
    assert _ray_address(short_dir) != _ray_address(long_dir)  # ports from the job ids
    assert not Path(f"/tmp/harness-ray-{a}").exists()  # A's Ray folder removed with its Ray; B's is there
    assert Path(f"/tmp/harness-ray-{b}").exists()

    # B: SLURM's warning mid-trial; the trial stops at its next checkpoint and the job requeues itself
    assert slurm.run("scancel", "--signal=USR1", "--batch", b).returncode == 0
    assert slurm.wait(b, {"PENDING", "COMPLETED", "FAILED"}) == "PENDING"  # requeued (held 2 min by SLURM)
    assert _events(long_dir) == ["start", "requeued"]
    stopped_after = {tid: len(epochs) for tid, epochs in _history_epochs(long_dir).items()}
    assert any(0 < n < 12 for n in stopped_after.values()), stopped_after  # one trial stopped mid-way

    # C: no requeue allowed; drained, it ends with exit 75 and says so
    deadline = time.monotonic() + 120
    while not any(_history_epochs(limited_dir).values()):
        assert time.monotonic() < deadline, _log(limited_dir, c)
        time.sleep(0.5)
    assert slurm.run("scancel", "--signal=USR1", "--batch", c).returncode == 0
    assert slurm.wait(c, {"COMPLETED", "FAILED", "CANCELLED"}) == "FAILED"
    assert "ExitCode=75:0" in slurm.run("scontrol", "show", "job", c).stdout
    assert _events(limited_dir) == ["start", "requeue limit"]
    assert "sbatch this script again" in jobs(limited_dir)[-1]["detail"]

    # A (while B waits in the queue): results, MLflow runs, the report
    assert _events(short_dir) == ["start", "end"] and list(_history_epochs(short_dir).values()) == [[1, 2, 3]]
    client, parents, children = runs(f"sqlite:///{tmp_path / 'results' / schema.MLFLOW_DB}", "slurm_short")
    assert len(parents) == 1 and [r.info.status for r in children] == ["FINISHED"]
    assert schema.SLURM_JOBS in {f.path for f in client.list_artifacts(parents[0].info.run_id)}  # the job's record
    report = harness("report", short)
    assert report.returncode == 0, report.stderr
    assert (short_dir / schema.REPORT_DIR / schema.REPORT_PAGE).exists()

    slurm.run("scontrol", "update", f"JobId={b}", "StartTime=now")  # SLURM's requeue hold, skipped to save time
    assert slurm.wait(b, {"COMPLETED", "FAILED", "CANCELLED"}) == "COMPLETED", _log(long_dir, b)

    log = _log(long_dir, b, tail=0)
    assert "USR1: the trials stop at their next checkpoint" in log and "drained:" in log
    assert _events(long_dir) == ["start", "requeued", "start", "end"]
    assert [row["restart"] for row in jobs(long_dir)] == ["0", "0", "1", "1"]
    histories = _history_epochs(long_dir)
    assert len(histories) == 2 and all(e == list(range(1, 13)) for e in histories.values())  # each epoch once
    # the stopped trial resumed from the epoch it stopped after; a trial not started before the drain started in
    # the requeued job only (from epoch 0, once); a trial finished before it was not run again
    expected = {tid: [0, n] if 0 < n < 12 else [0] for tid, n in stopped_after.items()}
    assert _attempts(long_dir) == {tid: expected.get(tid, [0]) for tid in histories}
    requeued_at = jobs(long_dir)[1]["time"][:19]
    for tid in set(histories) - set(stopped_after):  # pending at the drain: it did not start then
        started = attempts(long_dir / tid)[0]["started"]
        assert started > requeued_at, (tid, started, requeued_at)
    assert not (long_dir / schema.DRAIN).exists()
    status = harness("status", long)
    assert "2 finished" in status.stdout and "SLURM: 1 job(s), 2 start(s), 1 requeue(s)" in status.stdout


# --- without SLURM: the script and the drain protocol
def test_script_asks_for_what_the_suite_runs_at_once(tmp_path):
    suite = _suite(tmp_path, "gpu_suite", epochs=2, size=64)
    raw = yaml.safe_load(suite.read_text())
    raw.update(resources={"cpus": 3, "gpus": 0.5}, concurrency=4, grid={"method": ["vanilla"], "seed": [0, 1, 2, 3, 4]})
    suite.write_text(yaml.safe_dump(raw))
    proc = cli(
        "slurm", suite, "--partition=gpu", "--account=proj42", "--time=1-00:00:00", "--grace=900",
        "--max-requeues=5", "--setup=module load cuda/12", "--sbatch=--qos=normal", "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "results" / "gpu_suite" / schema.SLURM_DIR / schema.SLURM_SCRIPT
    assert f"sbatch {script}" in proc.stdout
    text = script.read_text()
    for line in (
        "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=12",  # `concurrency` 4 of the 5 trials at once, 3 CPUs and half a GPU each
        "#SBATCH --gres=gpu:2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj42",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --signal=B:USR1@900",
        "#SBATCH --qos=normal",
        "#SBATCH --requeue",
        "module load cuda/12",
        "MAX_REQUEUES=5",
        f"export HARNESS_DATA_DIR={tmp_path}",
    ):
        assert line in text.splitlines() or any(x.startswith(line) for x in text.splitlines()), line
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0  # the shell reads it
    assert os.access(script, os.X_OK)


def test_script_sizes_nodes_from_flags(tmp_path):
    suite = _suite(tmp_path, "wide", epochs=2, size=64)
    raw = yaml.safe_load(suite.read_text())
    raw.update(resources={"cpus": 2, "gpus": 1}, concurrency=None, grid={"method": ["vanilla"], "seed": [0, 1, 2, 3]})
    suite.write_text(yaml.safe_dump(raw))
    assert cli("slurm", suite, "--nodes=2").returncode == 0
    text = (tmp_path / "results" / "wide" / schema.SLURM_DIR / schema.SLURM_SCRIPT).read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gres=gpu:2" in text and "#SBATCH --cpus-per-task=4" in text
    assert cli("slurm", suite, "--nodes=2", "--gpus-per-node=4", "--cpus-per-node=32").returncode == 0
    text = (tmp_path / "results" / "wide" / schema.SLURM_DIR / schema.SLURM_SCRIPT).read_text()
    assert "#SBATCH --gres=gpu:4" in text and "#SBATCH --cpus-per-task=32" in text


def test_bad_slurm_input_is_one_line(tmp_path):
    suite = _suite(tmp_path, "bad", epochs=2, size=64)
    proc = cli("slurm", suite, "--nodes=0")
    assert proc.returncode == 2 and "--nodes: 0: must be at least 1" in proc.stderr
    raw = yaml.safe_load(suite.read_text())
    raw["storage"] = "s3://bucket/results"
    suite.write_text(yaml.safe_dump(raw))
    proc = cli("slurm", suite)
    assert proc.returncode == 2 and "a folder that every node mounts" in proc.stderr
    raw["storage"] = str(tmp_path / "results")
    suite.write_text(yaml.safe_dump(raw))
    no_sbatch = cli("slurm", suite, "--submit", PATH=str(Path(os.__file__).parent))  # a PATH without sbatch
    assert no_sbatch.returncode == 2 and "no `sbatch` on PATH here; the script is written" in no_sbatch.stderr


def test_drain_request_before_a_driver_is_cleared_and_after_it_stands(tmp_path):
    preemption.request(tmp_path, "test")
    started = time.time() + 1
    preemption.clear(tmp_path, before=started)
    assert not preemption.requested(tmp_path)
    preemption.request(tmp_path, "a signal while the driver starts")
    preemption.clear(tmp_path, before=time.time() - 60)
    assert preemption.requested(tmp_path)


def test_sigusr1_asks_for_a_drain_and_trials_stop_only_before_their_last_epoch(tmp_path):
    suite_dir, trial_dir = tmp_path, tmp_path / "trial"
    with preemption.drain_on_sigusr1(suite_dir):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)
    assert "SIGUSR1" in (suite_dir / schema.DRAIN).read_text()
    with pytest.raises(preemption.Drained, match="stopped after epoch 2"):
        preemption.stop_at_checkpoint(trial_dir, 2, 5)
    preemption.stop_at_checkpoint(trial_dir, 5, 5)  # the last epoch: the trial finishes
    preemption.clear(suite_dir, before=time.time() + 1)
    preemption.stop_at_checkpoint(trial_dir, 2, 5)


def test_jobs_summary_counts_starts_and_requeues(tmp_path):
    folder = tmp_path / schema.SLURM_DIR
    folder.mkdir()
    rows = [
        ("7", "0", "t0", "start", "x"),
        ("7", "0", "t1", "requeued", "1 of at most 3"),
        ("7", "1", "t2", "start", "x"),
        ("7", "1", "t3", "end", "harness run exited with 0"),
    ]
    (folder / schema.SLURM_JOBS).write_text("".join("\t".join(r) + "\n" for r in rows))
    assert jobs_summary(tmp_path).startswith(
        "SLURM: 1 job(s), 2 start(s), 1 requeue(s); last: job 7 end harness run exited with 0 at t3"
    )
    assert jobs_summary(tmp_path / "none") is None
