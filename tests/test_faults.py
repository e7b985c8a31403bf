"""Every fault survived, round two: the promises, one test each, each asserting the exact outcome (state,
message, exit code, files left).

1. A finished trial whose logits or checkpoint no longer read is `corrupt`, left out of the report with the
   reason, and recomputed by the next run from what still reads: damaged logits from the final checkpoint (no
   training), an unreadable checkpoint by retraining from the one before.
2. Two drivers started together on fresh storage: one runs, the other gets the lock's message (no SQLAlchemy
   traceback from both creating the MLflow store).
3. A full disk, at the start or during the run: one line, exit 3, Ray's messages in the suite's ray.log (none on the
   terminal), no temporary lock file left; with space again, the same command goes on.
4. Side files are checked, naming the file and line: lock records (a pid of 0 or -1, wrong types), evaluation
   records (fields of their kind), rate tables (a short row, a huge field, non-UTF-8).
5. User paths: a symlink loop is one line; a truncated checkpoint names its file; a refused one says why,
   without torch's advice to load it unsafely.

Round three (results folders shared between people):

6. A report no planted file can script: every value from a file escaped (HTML, Markdown), CSV cells that a
   spreadsheet would run neutralised, a Content-Security-Policy without script, checked in headless Chromium.

Elsewhere: Ctrl-C on `harness run` (test_safety: the second-driver test), `harness sync` to the URI runs were kept
back from (test_tracking_server: the outage test).
"""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.bench.rates import read_rates
from harness.core import schema
from harness.evaluation.kinds import record_problem
from harness.store import results
from harness.store.lock import SuiteLock, running_trials
from harness.store.results import TrialFolder
from harness.trial.trainer import Trainer
from helpers import attempts, chromium_dom, cli, finished_trial, harness, harness_env, tiny_config, trial, write_suite

GRID = {"method": ["vanilla"], "width": [1, 2, 3, 4]}


def trials(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "results" / "synth").glob("vanilla-*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Four finished trials (widths 1 to 4; 2 epochs each), trained once for the module."""
    tmp = tmp_path_factory.mktemp("finished")
    proc = harness("run", write_suite(tmp, grid=GRID))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def copy_of(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished / "results", tmp_path / "results")
    return write_suite(tmp_path, grid=GRID)


# --- 1. finished trials with unreadable files
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

    report = cli("report", suite)
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
    assert "missing from the report" not in cli("report", suite).stdout


# --- 2. two drivers on fresh storage
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


# --- 3. a full disk
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


# --- 4. side files
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


def test_evaluation_records_are_checked_against_their_kind(tmp_path, said_by):
    cfg = trial(dataset="synthetic", synthetic_classes=4, depth=10, width=1, name="s", output_dir=tmp_path)
    labels = np.arange(8) % 4
    folder = TrialFolder(finished_trial(cfg, np.eye(4)[labels][:, None], labels))
    good = {"kind": "ood", "id": "ood-svhn", "set": "ood:svhn", "scores": {}, "in_images": 8, "out_images": 8}
    folder.finish_eval("ood-svhn", good)
    folder.finish_eval("ood-c10", {**good, "id": "ood-c10", "set": "ood:cifar10", "in_images": "8"})
    folder.finish_eval("odd", {**good, "id": "odd", "kind": "magic"})
    (cfg.trial_dir / "eval" / "test").mkdir()
    (cfg.trial_dir / "eval" / "test" / schema.METRICS).write_text('{"kind": ')  # truncated
    said = said_by("harness.store.results")
    assert list(folder.evaluations(record_problem)) == ["ood-svhn"]
    assert any("eval/test/metrics.json: not valid JSON" in m and "left out" in m for m in said), said
    assert any("eval/ood-c10/metrics.json: a ood record without in_images" in m for m in said), said
    assert any("eval/odd/metrics.json: not an evaluation record (kind must be one of" in m for m in said), said


def test_rate_tables_name_the_file_and_line(tmp_path):
    header = "card,model,depth,width,M,b,batch_size,precision,compile,concurrent,samples_per_s,peak_memory_gb\n"
    row = "H100,wrn,28,10,1,1,64,bf16,none,1,3000,10\n"
    cases = {
        "short.csv": (header + row + "H100,wrn,28\n", "short.csv: line 3: not a rate row"),
        "huge.csv": (header + row + "H100," + "x" * 200_000 + "\n", "huge.csv: line 3: not CSV (field larger than"),
        "latin1.csv": ((header + row).encode() + b"H\xe9\n", "latin1.csv: not UTF-8 text (byte"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            read_rates(path)


# --- 5. user paths and messages
def test_a_symlink_loop_is_one_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    proc = cli("evaluate", tmp_path, "--on", f"ood:folder={tmp_path / 'a'}")
    assert proc.returncode == 2 and "cannot be resolved (Symlink loop" in proc.stderr, proc.stderr
    proc = cli("run", write_suite(tmp_path, eval_sets=[f"ood:folder={tmp_path / 'a'}"]), "--dry-run")
    assert proc.returncode == 2 and "eval_sets: " in proc.stderr and "Symlink loop" in proc.stderr, proc.stderr


def test_truncated_checkpoints_and_refusals_name_the_file_without_unsafe_advice(tmp_path):
    """A checkpoint truncated to a few KB raised OSError (Errno 22) past the reader; a refused one repeated
    torch's advice to load it with weights_only=False."""
    import os

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
        with pytest.raises(results.CorruptFile, match=r"checkpoint.pt: unreadable"):
            results.load_checkpoint(path)
    torch.save({"epoch": 1, "model": Payload()}, path)
    with pytest.raises(results.CorruptFile) as err:
        results.load_checkpoint(path)
    message = str(err.value)
    assert "refused by the weights-only loader" in message and "system" in message
    assert "weights_only" not in message.replace("weights-only", "") and not (tmp_path / "pwned").exists()


# --- 6. a report no planted file can script
PAYLOADS = (
    "<script>document.body.dataset.pwned='script'</script>",
    "<img src=x onerror=\"document.body.dataset.pwned='img'\">",
    '"><svg onload="document.body.dataset.pwned=\'attr\'">',
)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.handlers, self.urls = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.urls += [value or "" for name, value in attrs if name in ("href", "src")]


@pytest.mark.slow  # a browser
def test_planted_values_never_script_the_report(tmp_path):
    from markupsafe import escape

    from analysis.output import CONTENT_SECURITY_POLICY
    from analysis.report import build_report

    root = tmp_path / "results" / "shared"
    payload = " ".join(PAYLOADS)
    cfg = trial(name=root.name, output_dir=root.parent, dataset="cifar100", depth=16, width=2, epochs=1)
    labels = np.arange(10) % 3
    finished_trial(
        cfg,
        np.eye(3)[labels][:, None, :] * 3,
        labels,
        device_name="+cmd|' /C calc'!A0 " + payload,
    )
    failed = cfg.model_copy(update={"seed": 1})
    TrialFolder(failed.trial_dir).begin(failed.record(), "test-node", 0)
    (failed.trial_dir / schema.ERROR).write_text("RuntimeError: " + PAYLOADS[0] + "\n")
    (root / "report").mkdir()
    (root / "report" / "<img src=x onerror=alert(1)>.txt").write_text("planted")
    report = build_report(root, expected={PAYLOADS[2]: PAYLOADS[0]}, source=PAYLOADS[1])

    page = (report["dir"] / "index.html").read_text()
    assert f'content="{escape(CONTENT_SECURITY_POLICY)}"' in page
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and "svg" not in parsed.tags and parsed.handlers == []
    assert parsed.tags.count("img") == len([p for p in report["figures"] if p.suffix == ".png"])
    assert "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.txt" in parsed.urls  # the planted file: a quoted link
    assert page.count("&lt;script&gt;") == 3  # shown as text: the hardware, the failed trial's error, a description
    assert page.count("&lt;img src=x onerror=") == 3  # the hardware, the suite file, the planted file name
    assert page.count("&lt;svg onload=") == 2  # the hardware, an expected trial id
    dom = chromium_dom(report["dir"] / "index.html", tmp_path / "chrome")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "data-pwned" not in dom.stdout and "<table" in dom.stdout

    # the policy holds even where escaping would fail: an inline script appended to the page does not run
    forged = report["dir"] / "forged.html"
    forged.write_text(page.replace("</body>", "<script>document.body.dataset.pwned='inline'</script></body>"))
    dom = chromium_dom(forged, tmp_path / "chrome")
    assert dom.returncode == 0 and "data-pwned" not in dom.stdout
    assert "Content Security Policy" in dom.stderr  # Chromium says what it refused


def test_table_cells_are_neutralised_for_spreadsheets_and_markdown(tmp_path):
    from analysis.output import write_table

    table = pd.DataFrame(
        {
            "set": ['=HYPERLINK("http://x")', "@SUM(A1)", "-2+3+cmd|' /C calc'!A0", "\tx", "clean"],
            "difference": ["-1.20\u00a0±\u00a00.40", "+0.80", "-0.5", "12.3 ± 1.0‡", "-"],
            "label": ["<b>x</b> | [a](javascript:alert(1))", "a`b`", r"\write18{calc}", "x", "y"],
        }
    )
    md, csv_path, tex = write_table(table, tmp_path / "t", r"caption <i> \write18{calc}")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["set"] for r in rows] == [
        '\'=HYPERLINK("http://x")',
        "'@SUM(A1)",
        "'-2+3+cmd|' /C calc'!A0",
        "'\tx",
        "clean",
    ]
    assert [r["difference"] for r in rows] == table["difference"].tolist()  # numbers, and "no value", stay
    text = md.read_text()
    assert "caption \\<i\\>" in text and "\\<b\\>x\\</b\\> \\| \\[a\\](javascript:alert(1))" in text
    assert "<b>" not in text and "a\\`b\\`" in text
    assert len(re.split(r"(?<!\\)\|", text.splitlines()[4])) == 3 + 2  # an escaped pipe is not a column
    latex = tex.read_text()
    assert latex.count("write18") == 2 and r"\write18" not in latex  # a cell and the caption: no command


# --- 7. MLflow, a mirror of the trial folders
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


# --- 8. only the suite's own trials in its numbers
@pytest.mark.slow  # trains, or runs the CLI in subprocesses: the full lane
def test_the_report_counts_only_the_suites_trials_and_lists_the_others(tmp_path):
    from analysis.report import build_report

    root = tmp_path / "results" / "shared"
    labels = np.arange(10) % 3

    def write(right: int, **keys):
        cfg = trial(name=keys.pop("name", root.name), output_dir=root.parent, dataset="cifar100", depth=16, **keys)
        logits = np.eye(3)[np.where(np.arange(10) < right, labels, (labels + 1) % 3)][:, None, :] * 3
        return cfg, finished_trial(cfg, logits, labels)

    grid = [write(6, seed=s, width=2, epochs=1)[0] for s in (0, 1)]
    write(9, seed=0, width=2, epochs=2)  # the suite was edited since: another recipe
    write(9, seed=0, width=4, epochs=1)  # a width the grid no longer has
    _, other = write(9, seed=2, width=2, epochs=1, name="other")
    shutil.copytree(other, root / other.name)  # copied in from another suite
    _, renamed = write(9, seed=3, width=2, epochs=1)
    renamed.rename(root / "vanilla-wrn16x2-M1-s9-00000000")  # a folder renamed by hand

    report = build_report(root, grid={t.trial_id: t.record() for t in grid})
    summary = report["summary_frame"]
    assert summary.members.tolist() == [1, 2]  # the two seeds, and their ensemble
    summary = summary[summary.members == 1]
    assert summary.n.tolist() == [2] and summary.top1_mean.tolist() == pytest.approx([0.6])
    foreign = report["not_in_suite"]
    assert sorted(foreign.values()) == sorted(
        [
            "a trial of suite other",
            "another recipe: epochs 2 (the suite's: 1)",
            "its config.yaml is trial vanilla-wrn16x2-M1-s3-"
            + renamed.name.rsplit("-", 1)[1]
            + " (copied in from elsewhere)",
            "not in the grid (method vanilla, model wrn, depth 16, width 4, M 1, seed 0)",
        ]
    )
    assert json.loads((report["dir"] / "not_in_suite.json").read_text()) == foreign
    assert "Not in this suite (4 folders)" in (report["dir"] / "index.html").read_text()


# --- 9. one writer at a time
WRITER = """
import sys, numpy as np
from harness.data.corrupt import write_generated_set
images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
write_generated_set(images, np.arange(16), sys.argv[1], "cifar100", "first", corruptions=("glass_blur",))
"""


def test_two_corruption_writers_into_one_folder_never_mix(tmp_path):
    from harness.core.config import ConfigError
    from harness.data.corrupt import _put_in_place, write_generated_set

    out = tmp_path / "c"
    first = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], env=harness_env(), stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".c.partial-*")) and time.time() < deadline:
        time.sleep(0.05)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match=rf"--out {out}: harness data corrupt \(pid {first.pid} on .*\) is writing"):
        write_generated_set(images, np.arange(4), out, "cifar100", "second", corruptions=("fog",))
    assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["GENERATED.json", "README.md", "glass_blur.npy", "labels.npy"]
    assert json.loads((out / "GENERATED.json").read_text())["source"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging folder, no lock left

    # a set that appeared while this one was written (a writer the lock could not see, e.g. on another NFS client)
    staged = tmp_path / ".staged"
    staged.mkdir()
    (staged / "fog.npy").write_bytes(b"second")
    with pytest.raises(ConfigError, match="written by another process while this one ran; nothing was changed"):
        _put_in_place(staged, out, force=False)
    assert (out / "glass_blur.npy").exists() and not (out / "fog.npy").exists()


def test_evaluate_is_refused_while_a_run_holds_the_suite_and_says_who(tmp_path):
    cfg = tiny_config(output_dir=tmp_path / "results", name="synth")
    labels = np.arange(8) % 4
    finished_trial(cfg, np.eye(4)[labels][:, None, :], labels)
    with SuiteLock(cfg.trial_dir.parent, command="harness run suite.yaml"):
        proc = cli("evaluate", cfg.trial_dir.parent, "--on", "test")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"this suite is being run by `harness run suite.yaml` (pid {os.getpid()} on" in proc.stderr
    assert not (cfg.trial_dir / schema.EVAL_DIR).exists()


# --- 10. readers that only read regular files
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data: only the header may be read)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def _tree_with_traps(tmp_path: Path) -> Path:
    from PIL import Image

    tree = tmp_path / "ood"
    (tree / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tree / "sub" / "real.png")
    os.mkfifo(tree / "x.png")  # opening it would block until a writer comes
    (tree / "zero.jpg").symlink_to("/dev/zero")  # reading it would never end
    (tree / "loop").symlink_to(tree)  # a folder link: not followed
    return tree


def test_image_trees_skip_fifos_devices_and_folder_links_by_name(tmp_path):
    from harness.data.errors import DataError
    from harness.data.readers import images_under, load_image, logger, read_image_tree

    tree = _tree_with_traps(tmp_path)
    said = logging.Handler()
    said.emit = lambda record: lines.append(record.getMessage())
    lines = []
    logger.addHandler(said)
    try:
        arrays = read_image_tree(tree, 16)
    finally:
        logger.removeHandler(said)
    assert arrays.x.shape == (1, 16, 16, 3) and arrays.y.tolist() == [-1]
    assert sorted(lines) == [
        f"skipped, not an image file: {tree / 'x.png'} (a FIFO)",
        f"skipped, not an image file: {tree / 'zero.jpg'} (a character device)",
    ]
    with pytest.raises(DataError, match=r"x\.png: not a regular file \(a FIFO\); only image files are read"):
        load_image(tree / "x.png")
    with pytest.raises(DataError, match="/: the root of the filesystem; point at the folder that holds the images"):
        images_under(Path("/"))
    (tree / "huge.png").write_bytes(_png_header(12_000, 12_000))
    with pytest.raises(DataError, match=r"huge\.png: 12000x12000 pixels, more than the 25,000,000 an image may have"):
        read_image_tree(tree, 16)


def test_an_image_tree_larger_than_the_caps_is_refused_while_walking(tmp_path, monkeypatch):
    from harness.data import readers as datasets

    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(_png_header(4, 4))
    monkeypatch.setattr(datasets, "MAX_TREE_IMAGES", 3)
    with pytest.raises(datasets.DataError, match=f"{tmp_path}: more than 3 images under it, the most one folder"):
        datasets.images_under(tmp_path)


@pytest.mark.slow  # `harness evaluate` in subprocesses
def test_evaluate_on_a_folder_of_traps_goes_on_and_on_the_root_is_refused(tmp_path, finished):
    suite = copy_of(finished, tmp_path)
    tree = _tree_with_traps(tmp_path)
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


# --- 11. compiled ops that cannot hang
HOLDER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # as torch's FileBaton takes a build lock
print("holding", flush=True)
time.sleep(600)
"""
LOAD = """
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
from harness.engines.compiled_ops import load_shm_op
print("loaded", load_shm_op() is not None)
"""


@pytest.fixture
def extensions(tmp_path):
    """A private torch extensions folder holding the op as built for this machine (built first if need be)."""
    from harness.engines.compiled_ops import lock_path

    built = lock_path().parent
    if not (built / "deepspeed_shm_comm.so").exists():
        subprocess.run([sys.executable, "-c", LOAD], env=harness_env(), check=True, capture_output=True, timeout=900)
    shutil.copytree(built, tmp_path / "ext" / built.name, symlinks=True)
    return tmp_path / "ext" / built.name / "lock"


@pytest.mark.slow  # trains or builds reports: the full lane
def test_a_build_lock_left_by_a_killed_builder_is_removed_and_a_stuck_one_is_named(extensions):
    env = harness_env(TORCH_EXTENSIONS_DIR=str(extensions.parent.parent), HARNESS_OP_BUILD_TIMEOUT="3")
    extensions.unlink(missing_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(extensions)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    proc = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1  # a live builder that does not finish: named after the bound, not waited on for ever
    assert f"waiting for pid {holder.pid} to finish building deepspeed_shm_comm (lock {extensions})" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"harness.engines.compiled_ops.OpBuildError: {extensions}: DeepSpeed's deepspeed_shm_comm op has been "
        f"built by pid {holder.pid} ({sys.executable} -c"
    )
    assert proc.stderr.strip().endswith("for more than 3 s; if that process is stuck, stop it (its lock goes with it)")

    holder.kill()  # killed mid-build: its lock file stays behind, held by no one
    holder.wait()
    assert extensions.exists()
    proc = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "loaded True" in proc.stdout, proc.stderr[-2000:]
    assert f"{extensions}: a stale build lock (its builder is gone) removed" in proc.stderr


# --- 12. paths, names, FFCV records, the dry run's data checks and memory
def _cifar_folder(root: Path, train_x=None, train_y=None) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "cifar100"
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(folder / "train.npz", x=x if train_x is None else train_x, y=np.arange(40) % 100 if train_y is None else
             train_y)  # fmt: skip
    np.savez(folder / "test.npz", x=x[:10], y=np.arange(10))
    return folder


@pytest.mark.parametrize(
    "bad, message",
    [
        ("labels", "train.npz: labels outside 0..99"),
        ("shape", "train.npz: expected uint8 images (N, H, W, 3) and N labels, got uint8 (40, 32, 32) and (40,)"),
        ("pickle", "train.npz: cannot read as an npz with arrays 'x' and 'y'"),
        ("batch", "batch_size 64 is larger than the 40 training images x b = 1: no full batch to train on"),
    ],
)
def test_the_dry_run_refuses_what_train_would(tmp_path, bad, message):
    data = tmp_path / "data"
    x = np.zeros((40, 32, 32), np.uint8) if bad == "shape" else None
    folder = _cifar_folder(data, x, np.arange(40) + 90 if bad == "labels" else None)
    if bad == "pickle":  # an npz whose images are a pickled object array: refused unread
        np.savez(folder / "train.npz", x=np.array([{"planted": 1}] * 40, dtype=object), y=np.arange(40))
    base = {"dataset": "cifar100", "data_dir": str(data), "batch_size": 64 if bad == "batch" else 8}
    suite = write_suite(tmp_path, base=base)
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "results").exists()


def test_paths_expand_home_and_variables_and_names_refuse_dot_dot(tmp_path, monkeypatch):
    from harness.core.config import ConfigError
    from harness.planning.suite import load_suite

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESULTS_ROOT", str(tmp_path / "elsewhere"))
    suite = load_suite(write_suite(tmp_path, storage="~/runs"))
    assert suite.results_root == tmp_path / "home" / "runs"
    assert load_suite(write_suite(tmp_path, storage="$RESULTS_ROOT/x")).results_root == tmp_path / "elsewhere" / "x"
    assert tiny_config(data_dir="~/data").data_dir == tmp_path / "home" / "data"
    with pytest.raises(ConfigError, match=r"storage: \$NOT_SET_HERE/x: \$NOT_SET_HERE is not set in the environment"):
        load_suite(write_suite(tmp_path, storage="$NOT_SET_HERE/x"))
    for name in ("a..", "a..b", ".."):
        with pytest.raises(ConfigError, match=rf"name: '{re.escape(name)}' is not a single folder name .*no '\.\.'"):
            load_suite(write_suite(tmp_path, name=name))
    assert load_suite(write_suite(tmp_path, name="v1.2")).name == "v1.2"


@pytest.mark.parametrize("record", ["{}", "[]", '{"images": "3", "resolution": 32}', "null"])
def test_an_ffcv_record_that_is_not_ours_is_one_line(tmp_path, record):
    from harness.data import DataError
    from harness.data.ffcv_loader import check_beton

    beton = tmp_path / "train.beton"
    beton.write_bytes(b"x")
    beton.with_suffix(".json").write_text(record)
    np.save(beton.with_suffix(".labels.npy"), np.arange(4))
    with pytest.raises(DataError, match=r"train.json: not the record `harness data prepare` writes"):
        check_beton(beton, "cifar100", np.arange(4), np.arange(4), 32)


def test_the_plan_estimates_memory_and_warns_where_a_trial_would_not_fit(tmp_path):
    suite = write_suite(
        tmp_path,
        base={"batch_size": 100_000, "drop_last": False, "depth": 28, "width": 10},
        grid={"method": ["vanilla"]},
    )
    proc = cli("run", suite, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (memory,) = [line for line in proc.stdout.splitlines() if line.startswith("memory: up to")]
    assert "vanilla wrn-28-10, M = 1, batch 100000" in memory and "activations; estimated)" in memory
    assert "warning: vanilla wrn-28-10 (M = 1, batch 100000) needs ~" in proc.stdout
    assert "more than this machine's memory shared by 1 concurrent trial(s)" in proc.stdout
