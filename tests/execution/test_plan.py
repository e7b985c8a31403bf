"""The grid's GPU cost: measured rates per shape, the packing planner, the plan's estimate per width, GPU
sharing (CUDA MPS or time-slicing), and `harness bench --suite` measuring a suite's shapes on this CPU."""

import math
import os
import stat

import pytest

from harness.bench.rates import Rate, Shape, card_slug, plan_packing, read_rates, table_for, trial_samples, write_rates
from harness.core.config import ConfigError
from harness.execution.gpu_sharing import GpuSharing, mps_state
from harness.execution.plan import gpu_fraction, plan_text
from harness.planning.suite import expand, load_suite
from helpers import cli, harness, write_suite

SMALL = Shape("wrn", 28, 2, 1, 1, 64, "bf16", "reduce-overhead")
WIDE = Shape("wrn", 28, 10, 2, 4, 64, "bf16", "reduce-overhead")


def rates(card_memory=80.0, peak=2.0):
    # one WRN-28-2 trial alone: 40,000 samples/s; 2 at once: 30,000 each; 4: 18,000 each; 8: 8,000 each
    return [Rate("NVIDIA H100 80GB HBM3", SMALL, k, r, peak, card_memory) for k, r in
            [(1, 40000.0), (2, 30000.0), (4, 18000.0), (8, 8000.0)]]  # fmt: skip


def test_planner_takes_the_fastest_k_that_fits():
    packing = plan_packing(rates(), SMALL)
    assert packing.per_card == 4 and packing.gpus == 0.25  # 72,000 in all beats 60,000 (k=2) and 64,000 (k=8)
    assert packing.gain == pytest.approx(72000 / 40000)
    # 25 GB per trial: 4 x 25 > 0.9 x 80, so at most 2 share the card
    tight = plan_packing(rates(peak=25.0), SMALL)
    assert tight.per_card == 2 and "k = 4, 8 would not fit in 80 GB" in tight.reason
    assert plan_packing(rates(), WIDE) is None  # no measurement of the shape
    alone = plan_packing(rates()[:1], SMALL)
    assert alone.per_card == 1 and alone.gain == 1.0 and "only measurement" in alone.reason


def test_rate_table_round_trip_merge_and_lookup(tmp_path):
    path = write_rates(tmp_path / f"{card_slug('NVIDIA H100 80GB HBM3')}.csv", rates())
    assert path.name == "nvidia-h100-80gb-hbm3.csv"
    assert read_rates(path) == rates()
    newer = Rate("NVIDIA H100 80GB HBM3", SMALL, 2, 31000.0, 2.0, 80.0)
    write_rates(path, [newer])  # a new measurement of the same shape and k replaces the old one
    assert [r.samples_per_s for r in read_rates(path) if r.concurrent == 2] == [31000.0]
    assert len(read_rates(path)) == 4
    assert table_for("H100", tmp_path) == path and table_for("h200", tmp_path) is None
    write_rates(tmp_path / "nvidia-h100-nvl.csv", rates())
    with pytest.raises(ValueError, match="fits several rate tables"):
        table_for("h100", tmp_path)
    (tmp_path / "bad.csv").write_text("card,model\nx,wrn\n")
    with pytest.raises(ValueError, match="line 2: not a rate row"):
        read_rates(tmp_path / "bad.csv")


WIDTHS = {
    "base": {"dataset": "cifar100", "model": "wrn", "depth": 28, "epochs": 300, "precision": "bf16",
             "compile": "reduce-overhead", "batch_size": 64},
    "grid": {"method": ["vanilla"], "width": [2, 10]},
    "rules": [],
    "include": [],
    "ensembles": [],
    "resources": {"cpus": 1, "gpus": 1, "card": "H100", "pack": "auto"},
}  # fmt: skip


def test_plan_uses_measured_rates_per_width_and_says_which_are_flat(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RATES_DIR", str(tmp_path / "rates"))
    write_rates(tmp_path / "rates" / "nvidia-h100-80gb-hbm3.csv", rates())
    suite = load_suite(write_suite(tmp_path, **WIDTHS))
    trials = expand(suite)
    small = next(t for t in trials if t.width == 2)
    assert trial_samples(small) == 781 * 300 * 64  # 50,000 images: 781 full batches of 64 per epoch
    text = plan_text(suite, trials)
    # WRN-28-2 at 18,000 samples/s with 4 to a card: a quarter of the card for samples / 18,000 seconds
    hours = 781 * 300 * 64 / 18000 / 4 / 3600
    assert f"width   2:   1 trials, {hours:9.3f} GPU-h (measured; 4 trials per GPU)" in text
    assert "width  10:   1 trials" in text and "(flat rate)" in text
    assert "1 trial(s) at the flat 280 TFLOP/s" in text
    assert "packing wrn-28-2 M=1 b=1 batch 64 bf16 compile=reduce-overhead: 4 per card" in text
    assert gpu_fraction(suite, small, rates()) == 0.25
    assert gpu_fraction(suite, next(t for t in trials if t.width == 10), rates()) == 1.0
    fixed = load_suite(write_suite(tmp_path, **{**WIDTHS, "resources": {"gpus": 1, "pack": 2}}))
    assert gpu_fraction(fixed, small, rates()) == 0.5


def test_suite_resources_checked(tmp_path):
    for pack, expected in ((0, "greater than or equal to 1"), ("max", "auto")):
        with pytest.raises(ConfigError, match=expected):
            load_suite(write_suite(tmp_path, resources={"gpus": 1, "pack": pack}))


def stub_control(folder, log):
    """A stand-in for nvidia-cuda-mps-control (this machine has no GPU): it records how it was called."""
    folder.mkdir(exist_ok=True)
    path = folder / "nvidia-cuda-mps-control"
    path.write_text(f'#!/bin/sh\necho "args=$* stdin=$(cat -)" >> {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_gpu_sharing_mps_and_time_slicing(tmp_path, monkeypatch, said_by):
    said = said_by("harness.execution.gpu_sharing")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "pipe"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert mps_state() == "absent"
    with GpuSharing(True, local=True) as sharing:
        assert sharing.mode == "time-slicing"
    assert "time-slices them" in said[-1]
    with GpuSharing(False, local=True) as sharing:  # nothing shared: nothing said
        assert sharing.mode == "exclusive" and len(said) == 1
    log = tmp_path / "calls.txt"
    stub_control(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    assert mps_state() == "available"
    with GpuSharing(True, local=True) as sharing:
        assert sharing.mode == "mps" and sharing.started
    assert log.read_text().splitlines() == ["args=-d stdin=", "args= stdin=quit"]  # started, then stopped
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "control").touch()  # a daemon of the node's own: used, never stopped
    assert mps_state() == "running"
    with GpuSharing(True, local=True) as sharing:
        assert sharing.mode == "mps" and not sharing.started
    assert len(log.read_text().splitlines()) == 2
    with GpuSharing(True, local=False) as sharing:
        assert sharing.mode == "cluster" and "setup commands" in said[-1]


@pytest.mark.slow
def test_bench_suite_measures_every_shape_alone_and_packed(tmp_path):
    # one width: 2 shapes, each measured alone and 2 at once (every measurement starts its own processes)
    suite = write_suite(
        tmp_path, resources={"cpus": 1, "gpus": 0}, grid={"method": ["vanilla", "cut_mixmo"], "width": [1]}
    )
    out = harness(
        "bench", "--suite", suite, "--pack", 1, 2, "--seconds", 1, "--warmup", 1, "--rates-dir", tmp_path / "rates"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (table,) = (tmp_path / "rates").glob("*.csv")
    measured = read_rates(table)
    # the suite's 2 trials have 2 shapes (M=1,b=1 / M=2,b=2), each measured alone and 2 at once
    assert sorted((r.shape.width, r.shape.M, r.concurrent) for r in measured) == [
        (1, m, k) for m in (1, 2) for k in (1, 2)
    ]
    assert all(r.samples_per_s > 0 and math.isnan(r.peak_memory_gb) for r in measured)
    assert "per card: most samples/s in total" in out.stdout


def test_broken_rate_tables_name_the_file_and_line(tmp_path):
    path = write_rates(tmp_path / "card.csv", rates())
    good = path.read_text()
    header, first = good.splitlines()[:2]
    cases = {
        "short row": (f"{header}\n{first.rsplit(',', 4)[0]}\n".encode(), r"card.csv: line 2: not a rate row"),
        "huge field": (f"{header}\n{'x' * 200_000},{first}\n".encode(), r"card.csv: line \d+: not CSV"),
        "not UTF-8": (b"\xff\xfe" + good.encode("utf-16-le"), r"card.csv: not UTF-8 text \(byte 0\)"),
    }
    for why, (data, message) in cases.items():
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_rates(path)


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
