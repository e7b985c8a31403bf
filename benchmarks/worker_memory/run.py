"""The memory of Ray's reused trial workers across a sweep: does a worker grow from trial to trial?

    python benchmarks/worker_memory/run.py [--trials 12] [--data-dir ../shared/data]

Runs the same sweep twice with `harness run` (CIFAR-100 subset, WRN-10-1, one epoch per trial, 2 workers reused by
Tune): first with the memory a finished trial held left to the allocator (HARNESS_WORKER_TRIM=0, the baseline),
then as the harness runs it (garbage collected and returned to the system with malloc_trim after each trial,
execution.trainable.release_memory). A sampler reads every Ray worker's resident memory from /proc twice a second.
Prints, per run, each worker's RSS after its first trial and at the end, the growth per trial, the ratio of the two
runs' growths, and the plan's memory estimate per trial (`harness run --dry-run`) beside the measured rise of a
worker's RSS during a trial. Results and their reading: benchmarks/worker_memory/README.md."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

PAGE = os.sysconf("SC_PAGE_SIZE")


def workers() -> dict[int, int]:
    """pid -> resident bytes of every process whose title is a Ray actor's (Tune's trial workers)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if title.startswith("ray::") and "IDLE" not in title and ("Func" in title or "Inner" in title):
                out[int(entry.name)] = int((entry / "statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return out


def sweep(folder: Path, trials: int, data_dir: str, trim: bool) -> tuple[dict[int, list[tuple[float, int, int]]], str]:
    """Run the sweep; -> (pid -> [(time, RSS, trials finished then)], the dry run's memory line)."""
    suite = {
        "name": "memory",
        "storage": str(folder / "results"),
        "base": {
            "dataset": "cifar100",
            "depth": 10,
            "width": 1,
            "epochs": 1,
            "train_subset": 2000,
            "test_subset": 1000,
            "eval_every": 0,
        },  # fmt: skip
        "grid": {"method": ["vanilla", "cut_mixmo"], "seed": list(range(trials // 2))},
        "rules": [{"when": {"method": "cut_mixmo"}, "set": {"M": 2, "b": 2}}],
        "resources": {"cpus": 1},
        "concurrency": 2,
        "tracking": {"enabled": False},
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    env = {**os.environ, "HARNESS_DATA_DIR": data_dir, "HARNESS_WORKER_TRIM": "1" if trim else "0",
           "RAY_AUTH_MODE": "disabled"}  # fmt: skip
    dry = subprocess.run([sys.executable, "-m", "harness", "run", str(path), "--dry-run"], env=env,
                         capture_output=True, text=True)  # fmt: skip
    estimate = next((line for line in dry.stdout.splitlines() if line.startswith("memory:")), "memory: (none)")
    samples: dict[int, list[tuple[float, int, int]]] = {}
    done = threading.Event()
    results = folder / "results" / "memory"

    def sample() -> None:
        while not done.is_set():
            finished = len(list(results.glob("*/metrics.json"))) if results.is_dir() else 0
            for pid, rss in workers().items():
                samples.setdefault(pid, []).append((time.monotonic(), rss, finished))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    run = subprocess.run([sys.executable, "-m", "harness", "run", str(path)], env=env, capture_output=True, text=True)
    done.set()
    sampler.join()
    if run.returncode != 0:
        raise SystemExit(f"harness run failed:\n{run.stderr[-3000:]}")
    return samples, estimate


def summary(samples: dict[int, list[tuple[float, int, int]]], trials: int) -> tuple[float, float, list[str]]:
    """(mean growth per trial in MiB, mean rise of RSS during a trial in MiB, a line per worker)."""
    lines, growths, rises = [], [], []
    for pid, series in sorted(samples.items(), key=lambda kv: kv[1][0][0]):
        if len(series) < 4:
            continue
        settled = [rss for _, rss, finished in series if finished >= 2]  # after every worker's first trial
        if not settled:
            continue
        first, last, peak = settled[0], series[-1][1], max(rss for _, rss, _ in series)
        baseline = min(rss for _, rss, _ in series[len(series) // 10 :])
        growth = (last - first) / 2**20 / max(1, trials / 2 - 1)  # each worker ran about half the trials
        growths.append(growth)
        rises.append((peak - baseline) / 2**20)
        lines.append(f"  worker {pid}: {first / 2**30:.2f} GiB after its first trial, {last / 2**30:.2f} GiB at the "
                     f"end, peak {peak / 2**30:.2f} GiB; {growth:+.1f} MiB per trial")  # fmt: skip
    mean = sum(growths) / len(growths) if growths else float("nan")
    rise = sum(rises) / len(rises) if rises else float("nan")
    return mean, rise, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR", "../shared/data"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/harness-worker-memory"))
    args = parser.parse_args()
    growth = {}
    for trim in (False, True):
        folder = args.workdir / ("trimmed" if trim else "baseline")
        subprocess.run(["rm", "-rf", str(folder)])
        folder.mkdir(parents=True)
        samples, estimate = sweep(folder, args.trials, str(Path(args.data_dir).resolve()), trim)
        growth[trim], rise, lines = summary(samples, args.trials)
        name = "released after each trial (the harness)" if trim else "left to the allocator (baseline)"
        print(f"\n{args.trials} trials, 2 reused workers, memory {name}:")
        print("\n".join(lines))
        estimated = re.search(r"up to ([\d.]+ \w+) per trial", estimate)
        print(f"  a worker's RSS rose {rise:.0f} MiB during a trial; the plan estimated "
              f"{estimated.group(1) if estimated else '?'} per trial ({estimate.strip()})")  # fmt: skip
    ratio = growth[True] / growth[False] if growth[False] else float("nan")
    print(f"\ngrowth per trial: {growth[False]:+.1f} MiB left to the allocator, {growth[True]:+.1f} MiB released "
          f"(ratio {ratio:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
