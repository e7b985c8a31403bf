"""The harness at scale: what keeps a grid of thousands of trials cheap (the status index, logits verified once,
the report's cache and worker processes) gives the same answers as the straightforward computation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from analysis import cache
from analysis.stats import bootstrap, probability_of_improvement
from harness.core import schema
from harness.metrics import topk_accuracy
from harness.store.errors import CorruptFile
from harness.store.files import save_logits, write_json
from harness.store.verified import Verified, check_zip
from helpers import harness_env, write_suite

STATUS_WITHOUT_TORCH = (
    "import sys; from harness.cli import main; code = main(['status', sys.argv[1]]); "
    "print('torch imported:', 'torch' in sys.modules); sys.exit(code)"
)


def status(suite, cache_dir):
    return subprocess.run(
        [sys.executable, "-c", STATUS_WITHOUT_TORCH, str(suite)],
        env=harness_env(HARNESS_CACHE_DIR=str(cache_dir)),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # subprocesses, worker pools or a whole report: the full lane
def test_status_reads_an_indexed_grid_without_the_registries_and_sees_every_change(tmp_path):
    suite = write_suite(tmp_path)
    first, second = status(suite, tmp_path / "cache"), status(suite, tmp_path / "cache")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "torch imported: True" in first.stdout and "torch imported: False" in second.stdout
    assert first.stdout.replace("True", "False") == second.stdout  # the same table, from the index
    assert len(list((tmp_path / "cache" / "suites").glob("*.json"))) == 1
    # a grid value added: the suite's bytes are the index's key, so the new trials show at once
    raw = yaml.safe_load(suite.read_text())
    raw["grid"]["seed"] = [*raw["grid"].get("seed", [0]), 7]
    suite.write_text(yaml.safe_dump(raw))
    grown = status(suite, tmp_path / "cache")
    assert "torch imported: True" in grown.stdout
    rows = lambda out: sorted(line for line in out.splitlines() if line.split()[:1] and "-" in line.split()[0])  # noqa: E731
    assert len(rows(grown.stdout)) == 2 * len(rows(first.stdout))
    # a variable the suite expands is part of the key too
    suite.write_text(suite.read_text().replace(str(tmp_path / "results"), "$SCALE_TEST_ROOT/results"))
    moved = status(suite, tmp_path / "cache").stdout
    os.environ["SCALE_TEST_ROOT"] = str(tmp_path / "elsewhere")
    try:
        assert "torch imported: True" in status(suite, tmp_path / "cache").stdout != moved
    finally:
        os.environ.pop("SCALE_TEST_ROOT")


@pytest.mark.slow  # subprocesses, worker pools or a whole report: the full lane
def test_status_after_a_dry_run_reads_the_grid_the_run_indexed(tmp_path):
    suite = write_suite(tmp_path)
    dry = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(suite), "--dry-run"],
        env=harness_env(HARNESS_CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    after = status(suite, tmp_path / "cache")
    assert after.returncode == 0 and "torch imported: False" in after.stdout and "4 pending" in after.stdout


def test_a_suite_with_a_module_plugin_is_never_indexed(tmp_path):
    from harness.store import trial_index

    suite = write_suite(tmp_path, plugins=["json"])  # a module: its code is not the index's to key
    assert trial_index.key(suite, None) is None
    assert trial_index.key(write_suite(tmp_path), None) is not None


def test_logits_are_read_whole_once_and_again_when_they_change(tmp_path):
    path = tmp_path / "logits.npz"
    save_logits(path, test_logits=np.ones((50, 1, 4), np.float16), test_labels=np.zeros(50, np.int64))
    verified = Verified(tmp_path)
    check_zip(path, thorough=True, verified=verified)
    assert Verified.identity(path) in verified.files
    verified.save()
    assert Verified(tmp_path).files == verified.files  # kept for the next run
    data = bytearray(path.read_bytes())
    start = data.index(b"\x93NUMPY") + 200  # inside the first member: the directory still reads
    data[start : start + 20] = bytes(20)
    path.write_bytes(bytes(data))  # a new modification time: not the verified file any more
    with pytest.raises(CorruptFile, match="fails its CRC check"):
        check_zip(path, thorough=True, verified=verified)
    with pytest.raises(CorruptFile):  # the zip check itself, without the memory, agrees
        check_zip(path, thorough=True)
    assert zipfile.ZipFile(path).testzip() is not None


def test_topk_without_a_sort_is_the_stable_sort_ranking_on_ties():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n, k_classes = int(torch.randint(1, 100, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g))
        logits = torch.randint(-2, 3, (n, k_classes), generator=g).float()  # ties everywhere
        labels = torch.randint(0, k_classes, (n,), generator=g)
        ranked = np.argsort(-logits.numpy(), axis=1, kind="stable")  # numpy's stable sort: the reference
        for k in (1, 2, 5, 20):
            expected = (ranked[:, :k] == labels.numpy()[:, None]).any(1).mean()
            assert topk_accuracy(logits, labels, k) == pytest.approx(expected, abs=1e-7)


def test_the_vectorised_bootstraps_draw_what_the_loops_drew():
    rng = np.random.default_rng(3)
    for n, m in ((3, 3), (5, 2), (1, 4), (10, 7)):
        x, y = rng.normal(size=n).round(1), rng.normal(size=m).round(1)
        draws = np.random.default_rng(0)
        loop = []
        for _ in range(2000):  # the definition: each draw resamples x, then y, from one stream
            a, b = draws.choice(x, n), draws.choice(y, m)
            loop.append(((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])).mean())
        p, low, high = probability_of_improvement(x, y)
        assert (low, high) == tuple(np.quantile(loop, [0.025, 0.975]))
        assert p == ((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])).mean()
    right, other = rng.integers(0, 2, 997), rng.integers(0, 2, 997)
    index = np.random.default_rng(0).integers(0, 997, (2000, 997))
    for values, b in ((right, None), (right, other)):
        diff = values.astype(float) - (0 if b is None else b.astype(float))
        boot = diff[index].mean(1)
        low, high = np.quantile(boot, [0.025, 0.975])
        assert bootstrap(values, b)[0] == (high - low) / 2


def square(x):
    return x * x


@pytest.mark.slow  # subprocesses, worker pools or a whole report: the full lane
def test_cached_values_come_back_from_the_cache_and_from_worker_processes(tmp_path, monkeypatch):
    files = []
    for i in range(6):
        files.append(tmp_path / f"f{i}")
        files[-1].write_text(str(i))
    monkeypatch.setattr(cache, "PARALLEL_FROM", 4)  # worker processes from 4 values
    with cache.reading(tmp_path, "logits") as kept:
        assert cache.cached_map("square", [([f], i) for i, f in enumerate(files)], square, "squares") == [
            i * i for i in range(6)
        ]
        assert kept.misses == 6 and kept.hits == 0
    with cache.reading(tmp_path, "logits") as kept:
        assert cache.cached_map("square", [([f], i) for i, f in enumerate(files)], square, "squares")[5] == 25
        assert kept.hits == 6 and kept.misses == 0
        files[2].write_text("changed")  # its identity changed: computed again
        cache.cached_map("square", [([files[2]], 2)], square, "squares")
        assert kept.misses == 1
    with cache.reading(tmp_path, "probabilities") as kept:  # another rule: another value
        cache.cached_map("square", [([files[0]], 0)], square, "squares")
        assert kept.misses == 1
    assert json.loads((tmp_path / ".cache" / "report.json").read_text())["values"]


def test_the_cache_is_keyed_by_every_module_its_numbers_come_from():
    """A cached number is recomputed when the code behind it changes: every harness module that the collection, the
    ensembles and the statistics import (the metric modules) is part of the cache's code version."""
    import analysis.collect  # noqa: F401  (what the cached values are computed with)

    root = Path(cache.__file__).resolve().parents[1]
    behind = {
        str(Path(m.__file__).resolve().relative_to(root))
        for name, m in sys.modules.items()
        if name.startswith("harness.metrics") and getattr(m, "__file__", None)
    }
    assert behind and behind <= set(cache._CODE), behind - set(cache._CODE)


@pytest.mark.slow  # trains or builds reports: the full lane
@pytest.mark.parametrize("parallel_from", [200, 1], ids=["here", "in-workers"])
def test_a_second_report_keeps_what_did_not_change_and_redraws_what_did(tmp_path, monkeypatch, parallel_from):
    from analysis.report import build_report
    from helpers import finished_trial, trial

    monkeypatch.setattr(cache, "PARALLEL_FROM", parallel_from)  # 1: trials, ensembles and figures in workers
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    dirs = []
    for seed in (0, 1):
        cfg = trial(dataset="synthetic", synthetic_classes=10, depth=10, width=1, method="vanilla", seed=seed,
                    epochs=1, output_dir=str(tmp_path), name="s")  # fmt: skip
        logits = rng.normal(0, 1, (400, 1, 10))
        logits[np.arange(400), 0, labels] += 1.5
        dirs.append(finished_trial(cfg, logits, labels))
    first = build_report(tmp_path / "s")
    files = sorted((tmp_path / "s" / "report").rglob("*.*"))
    drawn = [f for f in files if f.suffix in (".png", ".svg", ".md", ".tex") or f.name == "results.csv"]
    stamps = {f: f.stat().st_mtime_ns for f in drawn}  # (the page and the small JSON lists are always written)
    second = build_report(tmp_path / "s")
    assert first["cache"]["misses"] > 0 and second["cache"]["misses"] == 0
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps  # every table and figure kept, not rewritten
    metrics = json.loads((dirs[1] / schema.METRICS).read_text())
    write_json(dirs[1] / schema.METRICS, {**metrics, "top1": metrics["top1"] - 0.1})
    third = build_report(tmp_path / "s")
    assert third["cache"]["misses"] > 0
    width = next(f for f in stamps if f.name.startswith("width_") and f.suffix == ".png")
    results_csv = tmp_path / "s" / "report" / "results.csv"
    assert width.stat().st_mtime_ns != stamps[width] and results_csv.stat().st_mtime_ns != stamps[results_csv]
    other = json.loads((dirs[0] / schema.METRICS).read_text())["top1"]
    assert f"{100 * (other + metrics['top1'] - 0.1) / 2:.2f}\u00a0[" in results_csv.read_text()  # the new mean


def test_the_driver_counts_how_long_a_freed_slot_idles(monkeypatch):
    from harness.execution.progress import Progress
    from helpers import tiny_config

    clock = iter([0.0, 0.0, 10.0, 10.5, 12.0, 12.25, 20.0, 21.0])  # (start a, start b, end a, start c, ...)
    monkeypatch.setattr("harness.execution.progress.time.monotonic", lambda: next(clock))
    cfg = tiny_config()
    progress = Progress({t: cfg for t in "abcd"}, dict.fromkeys("abcd", 1.0), concurrency=2)
    assert progress.overhead() == ""  # nothing measured yet
    progress.start("a"), progress.start("b")
    progress.end("a", ok=True), progress.start("c")  # a's slot idled 0.5 s
    progress.end("b", ok=True), progress.start("d")  # b's 0.25 s
    progress.end("c", ok=True), progress.end("d", ok=True)  # nothing waits any more: no idle slot counted
    assert progress.gaps == [0.5, 0.25]
    assert "driver overhead: 0.38 s per trial" in progress.overhead() and "mean of 2" in progress.overhead()


def test_long_report_steps_say_how_far_they_are(caplog):
    import logging
    import time

    slow = (time.sleep(0.02) or i for i in range(10))
    with caplog.at_level(logging.INFO, logger="analysis.report"):
        assert list(cache.progress(slow, 10, "deep ensembles", every_s=0.05)) == list(range(10))
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(line.startswith("report: ") and "/10 deep ensembles (" in line for line in lines)


def test_heads_are_combined_once_per_tensor_and_again_when_it_changes():
    from harness.metrics import ensemble_logits

    heads = torch.randn(50, 3, 10)
    first = ensemble_logits(heads)
    assert ensemble_logits(heads) is first  # the metric suite's several calls share one combination
    heads.mul_(2)  # changed in place: its version counter moved
    again = ensemble_logits(heads)
    assert again is not first
    assert torch.allclose(again, torch.logsumexp(heads.log_softmax(-1), 1) - np.log(3))
    assert ensemble_logits(heads.clone()) is not again  # another tensor, equal or not, is combined anew
