"""The harness's own cost as a grid grows: N finished trials written through the project's writer
(harness.store.trial_folder.TrialFolder, metrics from harness.metrics.final_metrics), then the commands timed on them.

    python benchmarks/scale/run.py --trials 10 100 1000 [--images 1000] [--commands dry-run status report] [--sweep 16]
        [--study 8]   # and a real study (`tune:`): the driver's time per configuration beside the plain sweep's

Prints a table of wall seconds per command and N, and the growth ratio between consecutive N (10x more trials:
a ratio near 10 is linear). Results and their reading: benchmarks/scale/README.md."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from harness.core import schema

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path("/tmp/harness-scale-cache")  # the commands' own caches (FLOPs, grid index), cold at the start
COMMANDS = {  # in this order: the first status writes the grid's index, the second reads it; sync before the rerun
    "dry-run": lambda suite: ["run", str(suite), "--dry-run"],
    "status": lambda suite: ["status", str(suite)],
    "status (indexed)": lambda suite: ["status", str(suite)],
    "report": lambda suite: ["report", str(suite)],
    "report (cached)": lambda suite: ["report", str(suite)],
    "sync": lambda suite: ["sync", str(suite)],
    "rerun (all done)": lambda suite: ["run", str(suite)],
}


def suite_file(folder: Path, trials: int) -> Path:
    """A suite of ``trials`` vanilla and Cut-MixMo trials (widths x seeds) on CIFAR-100's shape."""
    widths = max(1, trials // 20)
    seeds = max(1, trials // (2 * widths))
    suite = {
        "name": f"scale{trials}",
        "storage": str(folder / "results"),
        "base": {"dataset": "synthetic", "synthetic_classes": 100, "depth": 10, "epochs": 1, "batch_size": 32},
        "grid": {"method": ["vanilla", "cut_mixmo"], "width": list(range(1, widths + 1)), "seed": list(range(seeds))},
        "tracking": {"enabled": True},
    }
    path = folder / f"scale{trials}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def write_trials(suite_path: Path, images: int) -> int:
    """Every trial of the suite as a finished folder (config, logits of ``images`` test images, metrics)."""
    from harness.metrics import final_metrics
    from harness.planning.suite import expand, load_suite
    from harness.store.trial_folder import TrialFolder

    trials = expand(load_suite(suite_path), str(suite_path))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, images)
    for i, cfg in enumerate(trials):
        logits = rng.normal(0, 2, (images, cfg.num_inputs, 100)).astype(np.float16)
        logits[np.arange(images), :, labels] += 3
        metrics = final_metrics(torch.from_numpy(logits).float(), torch.from_numpy(labels))
        metrics |= {"trial_id": cfg.trial_id, "epochs": 1, "num_params": 1000, "train_time_s": 60.0,
                    "eval_time_s": 1.0, "test_images": images, "train_images": 2000, "device": "cpu",
                    "device_name": "cpu", "engine": "torch", "workers": 1, "nodes": ["bench"]}  # fmt: skip
        folder = TrialFolder(cfg.trial_dir)
        cfg.trial_dir.mkdir(parents=True, exist_ok=True)
        folder.begin(cfg.record(), "bench", 0)
        folder.finish(metrics, {schema.TEST_LOGITS: logits, schema.TEST_LABELS: labels})
        if (i + 1) % max(1, len(trials) // 10) == 0:
            print(f"  wrote {i + 1}/{len(trials)} trials", file=sys.stderr, flush=True)
    return len(trials)


def timed(args: list[str]) -> float:
    return run_harness(args)[0]


def run_harness(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HARNESS_CACHE_DIR": str(CACHE)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"harness {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


TINY = {
    "dataset": "synthetic",
    "synthetic_size": 64,
    "synthetic_classes": 4,
    "synthetic_resolution": 8,
    "depth": 10,
    "epochs": 1,
    "batch_size": 32,
    "eval_batch_size": 64,
}


def overhead_of(out: str) -> list[float]:
    """The driver's own seconds per trial, from each `driver overhead: X s per trial` line a run printed."""
    return [float(x.split()[2]) for x in out.splitlines() if x.startswith("driver overhead:")]


def study_overhead(folder: Path, configurations: int, sweep_seconds_per_trial: float | None) -> None:
    """A real study (`tune:`) of tiny trials: one method, ``configurations`` configurations, then 2 final seeds; the
    driver's own time per configuration in each phase, as a ratio to the plain sweep's measured just before."""
    suite = {
        "name": f"study{configurations}",
        "storage": str(folder / "results"),
        "base": {**TINY, "synthetic_size": 96, "val_size": 32},
        "grid": {"method": ["vanilla"], "width": [1]},
        "tune": {"space": {"base_lr": {"loguniform": [0.01, 0.2]}}, "trials": configurations, "final_seeds": [1, 2]},
        "resources": {"cpus": 1},
        "concurrency": 2,
    }
    path = folder / f"study{configurations}.yaml"
    path.write_text(yaml.safe_dump(suite))
    seconds, out = run_harness(["run", str(path)])
    phases = overhead_of(out)
    print(f"\na real study of {configurations} configurations + 2 final seeds, 2 at a time: {seconds:.1f} s in all")
    for name, value in zip(("search", "final seeds"), phases):
        ratio = f" ({value / sweep_seconds_per_trial:.2f}x the plain sweep's)" if sweep_seconds_per_trial else ""
        print(f"driver overhead, {name}: {value:.2f} s per trial{ratio}")


def sweep_overhead(folder: Path, trials: int) -> float | None:
    """A real sweep of tiny trials on a local Ray (2 at a time): its wall time, and the driver's own time per trial
    (how long a freed slot idles before Tune starts the next trial) beside the trials' time in their workers."""
    suite = {
        "name": f"sweep{trials}",
        "storage": str(folder / "results"),
        "base": TINY,
        "grid": {"method": ["vanilla"], "width": [1], "seed": list(range(trials))},
        "resources": {"cpus": 1},
        "concurrency": 2,
    }
    path = folder / f"sweep{trials}.yaml"
    path.write_text(yaml.safe_dump(suite))
    seconds, out = run_harness(["run", str(path)])
    line = next((x for x in out.splitlines() if x.startswith("driver overhead")), "driver overhead: (not printed)")
    print(f"\na real sweep of {trials} tiny trials, 2 at a time: {seconds:.1f} s in all (Ray's start included)\n{line}")
    return (overhead_of(out) or [None])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--images", type=int, default=1000, help="test images per trial (CIFAR-100: 10,000)")
    parser.add_argument("--commands", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/harness-scale"))
    parser.add_argument("--sweep", type=int, default=0, help="also a real sweep of this many tiny trials")
    parser.add_argument("--study", type=int, default=0, help="and a real study (tune:) of this many configurations")
    args = parser.parse_args()
    shutil.rmtree(CACHE, ignore_errors=True)  # cold FLOP and grid caches: the first dry run and status pay them
    table: dict[str, dict[int, float]] = {c: {} for c in args.commands}
    counts = []
    for n in args.trials:
        folder = args.workdir / str(n)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        suite = suite_file(folder, n)
        started = time.perf_counter()
        count = write_trials(suite, args.images)
        counts.append(count)
        print(f"{count} finished trials written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for command in args.commands:
            table[command][count] = timed(COMMANDS[command](suite))
            print(f"  harness {command}: {table[command][count]:.2f} s", file=sys.stderr, flush=True)
    print(f"\n{'command':<16}" + "".join(f"{n:>12,}" for n in counts) + "   growth per step")
    for command, row in table.items():
        values = [row[n] for n in counts]
        growth = " ".join(f"{b / a:.1f}x" for a, b in zip(values, values[1:]))
        print(f"{command:<16}" + "".join(f"{v:>11.2f}s" for v in values) + f"   {growth}")
    print(f"(trials grow {' '.join(f'{b / a:.0f}x' for a, b in zip(counts, counts[1:]))}; {args.images} test images "
          f"x 100 classes each)")  # fmt: skip
    if args.sweep:
        folder = args.workdir / f"sweep{args.sweep}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        per_trial = sweep_overhead(folder, args.sweep)
        if args.study:
            study_overhead(folder, args.study, per_trial)


if __name__ == "__main__":
    main()
