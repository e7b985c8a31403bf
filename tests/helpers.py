"""Helpers shared by the tests: suites written into a temporary folder, `harness` as a subprocess, trial
folders read back, an `mlflow server` on localhost, images whose crops can be read back."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import forked
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from harness.core import schema
from harness.core.config import TrialConfig
from harness.tracker.tracking import all_runs
from harness.trial.catalog import build_config

SUITE = yaml.safe_load((Path(__file__).parent / "suites" / "synthetic_2x2.yaml").read_text())

FAULTS = Path(__file__).parent / "faults.py"  # the fault-injection plugin (`--plugin`, read HARNESS_TEST_FAULT)


def write_suite(tmp_path: Path, **changes) -> Path:
    suite = {**SUITE, "storage": str(tmp_path / "results"), **changes}
    suite["base"] = {**SUITE["base"], **changes.get("base", {})}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def harness_env(**extra) -> dict:
    extra = {k: str(v) for k, v in extra.items()}  # a Path given as a value: what the process's environment holds
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("HARNESS_TEST_FAULT", None)  # set by a test that loads FAULTS, never inherited
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def harness(*args, timeout=600, **env) -> subprocess.CompletedProcess:
    """`harness ARGS` in a process of its own, output captured: forked from this worker's fork server where its
    imports could not differ from a new interpreter's (tests/forked.py: seconds of imports saved), else a new one."""
    args = [str(a) for a in args]
    forked_run = forked.run(args, harness_env(**env), timeout)
    return forked_run if forked_run is not None else on_a_new_interpreter(*args, timeout=timeout, **env)


def on_a_new_interpreter(*args, timeout=600, **env) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` in a new interpreter, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        env=harness_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(*args, **env) -> subprocess.CompletedProcess:
    """`harness ARGS` in this process (milliseconds, not a Python start-up): for checks of a message and an exit
    code. Environment variables in ``env`` are set for the call; output is captured as a subprocess's would be."""
    import contextlib
    import io

    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["harness", *map(str, args)], code, out.getvalue(), err.getvalue())


def harness_background(*args, log: Path, **env) -> subprocess.Popen:
    """`harness ARGS` started in its own session, Ctrl-C (SIGINT) live in it whatever this process did with it."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *map(str, args)],
        env=harness_env(**env),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=interruptible,
    )


def interruptible() -> None:
    """In a child before it runs: SIGINT unblocked and at its default, so Python turns it into KeyboardInterrupt (an
    ignored or blocked signal is inherited: libraries in a test worker, Ray's among them, may have set either)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def trial(**keys) -> TrialConfig:
    """A checked trial config (harness.trial.catalog.build_config) from keyword keys."""
    return build_config(keys, "test")


def tiny_config(**overrides) -> TrialConfig:
    """A synthetic trial small enough to train in seconds."""
    base = dict(
        dataset="synthetic",
        synthetic_size=256,
        synthetic_classes=4,
        synthetic_resolution=16,
        depth=10,
        width=1,
        epochs=2,
        batch_size=32,
        eval_batch_size=128,
        progress=False,
        eval_every=1,
    )
    base.update(overrides)
    return build_config(base, "tiny_config")


# --- trial folders
def finished_trial(cfg: TrialConfig, test_logits: np.ndarray, test_labels: np.ndarray, **facts) -> Path:
    """A finished trial folder written through TrialFolder, as the trainer writes it: config.yaml, the float16
    head logits (N, M, K) and metrics.json from the one metric suite, with the trainer's facts (``facts``
    override them)."""
    import torch

    from harness.metrics import final_metrics
    from harness.store.trial_folder import TrialFolder

    cfg.trial_dir.mkdir(parents=True, exist_ok=True)
    folder = TrialFolder(cfg.trial_dir)
    folder.begin(cfg.record(), "test-node", 0)
    logits, labels = np.asarray(test_logits, np.float16), np.asarray(test_labels, np.int64)
    trainer_facts = schema.TrialFacts(
        trial_id=cfg.trial_id,
        epochs=cfg.epochs,
        test_images=len(labels),
        train_images=100,
        device="cpu",
        device_name="cpu",
        data_source=cfg.dataset,
        engine=cfg.engine,
        workers=1,
        nodes=["test-node"],
        ensemble_average=cfg.ensemble_average,
    )
    metrics = {
        **final_metrics(torch.from_numpy(logits).float(), torch.from_numpy(labels), average=cfg.ensemble_average),
        "num_params": 1000,
        "train_time_s": 1.0,
        "eval_time_s": 0.1,
        **trainer_facts.record(),
        **facts,
    }
    folder.finish(metrics, {schema.TEST_LOGITS: logits, schema.TEST_LABELS: labels})
    return cfg.trial_dir


N, K = 10, 3  # make_trial: N test images of K classes
LABELS = np.arange(N) % K


def head_logits(correct: list[bool], rng) -> np.ndarray:
    """(N, K) logits whose argmax is right exactly where `correct` says, with random margins."""
    out = rng.normal(0, 0.1, size=(N, K))
    for i, ok in enumerate(correct):
        target = LABELS[i] if ok else (LABELS[i] + 1) % K
        out[i, target] += 2 + rng.random()
    return out


def make_trial(root, seed=0, accuracy=0.5, heads=None, **cfg):
    """A finished trial folder as the trainer writes it, from logits with a known accuracy."""
    config = trial(
        **{
            "dataset": "cifar100",
            "depth": 16,
            "width": 2,
            "epochs": 3,
            "seed": seed,
            "name": root.name,
            "output_dir": root.parent,
            **cfg,
        }
    )
    rng = np.random.default_rng(seed * 100 + config.width)
    heads = heads or [[i < round(accuracy * N) for i in range(N)]] * config.num_inputs
    logits = np.stack([head_logits(h, rng) for h in heads], axis=1).astype(np.float16)
    return finished_trial(
        config,
        logits,
        LABELS,
        num_params=1_000_000 * config.width**2 * config.num_inputs,
        train_time_s=3600.0,
        eval_time_s=2.0,
    )


def trial_dirs(tmp_path, name="synth"):
    root = tmp_path / "results" / name
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def attempts(trial_dir):
    path = trial_dir / schema.ATTEMPTS
    return json.loads(path.read_text()) if path.exists() else []


def epochs(trial_dir):
    path = trial_dir / schema.HISTORY
    return [int(r["epoch"]) for r in csv.DictReader(open(path))] if path.exists() else []


def node_of(workers, attempt):
    """The cluster node an attempt ran on (attempts record host/<node id prefix>)."""
    prefix = attempt["node"].split("/")[1]
    return next(w for w in workers if w.node_id.startswith(prefix))


# --- an mlflow server on localhost
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_store(path: Path) -> MlflowClient:
    """A client of a new sqlite MLflow store at ``path``, made as `harness run` makes one: the copy of a cached empty
    store (MLflow's own migrations take seconds)."""
    from harness.tracker.store import seed_sqlite_store

    seed_sqlite_store(f"sqlite:///{path}")
    return MlflowClient(f"sqlite:///{path}")


def start_server(tmp_path, port, store: str | None = None, workers: int = 1):
    """`mlflow server` on localhost (its store: ``store``, default sqlite in tmp_path, which begins as the copy of an
    empty store that `harness run` makes its own from: seconds of MLflow's migrations saved)."""
    from harness.tracker.store import seed_sqlite_store

    store = store or f"sqlite:///{tmp_path / 'server.db'}"
    seed_sqlite_store(store)
    proc = subprocess.Popen(
        [
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--backend-store-uri",
            store,
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=open(tmp_path / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("mlflow server did not come up: " + (tmp_path / "server.log").read_text()[-2000:])


def start_postgres(tmp_path) -> tuple[str, Callable[[], None]]:
    """A real PostgreSQL server on localhost (initdb into tmp_path, trust authentication, its own port and socket
    folder) with an empty database `mlflow`: (its SQLAlchemy URI, stop()). Run as the `postgres` user when this is
    root (PostgreSQL refuses root)."""
    import glob
    import pwd
    import shutil

    binaries = shutil.which("initdb") and Path(shutil.which("initdb")).resolve().parent
    binaries = binaries or Path((sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or ["initdb"])[-1]).parent
    import tempfile

    port, as_user = free_port(), []
    if os.geteuid() == 0:  # a folder the postgres user can reach (pytest's are root's alone)
        data = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    else:
        data = Path(tmp_path) / "pgdata"
        data.mkdir(parents=True)

    def run(*cmd):
        proc = subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{cmd[0]}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"

    run(binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run(binaries / "pg_ctl", "-D", data, "-o", options, "-l", data / "server.log", "-w", "start")
    run(binaries / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "mlflow")

    def stop() -> None:
        run(binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/mlflow", stop


def runs(uri, experiment):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} on {uri}"
    found = all_runs(client, [exp.experiment_id])
    return (
        client,
        [r for r in found if r.data.tags.get("harness.role") == "sweep"],
        [r for r in found if "mlflow.parentRunId" in r.data.tags],
    )


# --- images whose crop offset and flip can be read back
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # "normalised" = the raw pixel values


def coordinate_image(size=32):
    """R encodes the row and G the column (1-based, x7), so a crop's offset and flip can be read back."""
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = (np.arange(size)[:, None] + 1) * 7
    img[..., 1] = (np.arange(size)[None, :] + 1) * 7
    return img


def offsets_and_flip(img):
    """img (H, W, 3) after crop+flip -> (row offset 0..8, col offset 0..8, flipped)."""
    img = np.asarray(img, dtype=np.int64)
    flipped = img[16, 17, 1] < img[16, 16, 1]
    oy = img[16, 16, 0] // 7 - 1 - 12
    ox = img[16, 16, 1] // 7 - 1 - (15 if flipped else 16) + 4
    return int(oy), int(ox), bool(flipped)


def chromium(profile: Path) -> list[str]:
    """Headless Chromium's command line (a private profile, nothing fetched from the network), for a page URI."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise AssertionError("Debian's chromium is needed for this test (.ci/run installs it)")
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]


def chromium_dom(page: Path, profile: Path) -> subprocess.CompletedProcess:
    """The page's DOM after headless Chromium loaded it (and ran whatever script it would run)."""
    return subprocess.run(
        chromium(profile) + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )


# --- four finished trials (conftest's ``finished``), copied where a test damages them
GRID = {"method": ["vanilla"], "width": [1, 2, 3, 4]}


def trials(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results" / "synth").glob("vanilla-*"))


def copy_of(finished: Path, tmp_path: Path) -> Path:
    """``finished``'s results copied into ``tmp_path``, and its suite file written there."""
    import shutil

    shutil.copytree(finished / "results", tmp_path / "results")
    return write_suite(tmp_path, grid=GRID)


# --- image trees with traps in them (FIFOs, devices, folder links)
def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data: only the header may be read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def tree_with_traps(tmp_path: Path) -> Path:
    from PIL import Image

    tree = tmp_path / "ood"
    (tree / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tree / "sub" / "real.png")
    os.mkfifo(tree / "x.png")  # opening it would block until a writer comes
    (tree / "zero.jpg").symlink_to("/dev/zero")  # reading it would never end
    (tree / "loop").symlink_to(tree)  # a folder link: not followed
    return tree
