"""Issue 8's sweep on one GPU within a fixed wall-clock budget, without Ray or MLflow (the device
machine has neither): every trial of the suite at once as its own `harness train` process.

1. probe: every trial's training step at once, compiled as the trial compiles it (this fills the
   torch.compile caches the trials then reuse), timed once all are warm -> steps/s with the GPU shared;
2. the epoch budget: the most epochs whose slowest trial still ends before the deadline (the
   lr milestones scale with it, as the suite's milestones_budget says);
3. the trials, all at once, progress every 20 s; trials still running at the deadline are stopped;
4. `harness report` on the results folder; the trial folders (no checkpoints) packed into <= 8
   archives under --out.

    python benchmarks/mini_fig2/gpu_run.py suites/cifar100_mini_fig2.yaml --data-dir /tmp/data --out $OUT --budget-s 540
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

START = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - START:6.0f} s] {msg}", flush=True)


def launch(args: list[str], logfile: Path, module: bool = True, compile_threads: int = 1) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TORCHINDUCTOR_COMPILE_THREADS": str(compile_threads),
        "PYTHONUNBUFFERED": "1",
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }  # probes compile, trials reuse
    return subprocess.Popen(
        [sys.executable, *(["-m", "harness"] if module else []), *args],
        stdout=logfile.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def wait_all(procs: dict, deadline: float, every: float = 20.0, status=None) -> dict:
    """Wait until every process ends or the deadline; stop the rest. Returns {key: exit code or None}."""
    last = time.time()
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline:
        time.sleep(1)
        if status and time.time() - last > every:
            last = time.time()
            log(status())
    for p in procs.values():
        if p.poll() is None:
            p.kill()
    return {k: p.wait() for k, p in procs.items()}


def probe_one(config: Path, ready: Path, total: int, warmup: int, steps: int, until: float) -> None:
    """In a probe process: build the trial, compile and warm its step up, wait until every probe is
    ready (or `until`), then time `steps` steps, so that every rate is measured with the GPU shared."""
    import torch

    from harness.bench.runner import _cycle, timed
    from harness.core.config import load_trial_config
    from harness.trial.trainer import Trainer

    cfg = load_trial_config(config)
    trainer = Trainer(cfg)
    batches = _cycle(lambda: iter(trainer.train_loader))

    def step():
        return trainer.step(*next(batches), lr=1e-3, progress=0.5)

    timed(trainer.device, step, warmup, 0)  # compiles and records the CUDA graphs
    (ready / cfg.trial_id).touch()
    while len(list(ready.iterdir())) < total and time.time() < until:
        time.sleep(0.2)
    rate = steps / timed(trainer.device, step, 0, steps)
    print(
        json.dumps(
            {
                "steps_per_s": rate,
                "all_ready": len(list(ready.iterdir())) >= total,
                "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
            }
        )
    )


def probe(trials, work: Path, deadline: float, steps: int) -> tuple[dict[str, float], set[str]]:
    """Steps/s of each trial's training step while all of them run at once (NaN where it did not
    finish in time), and the trials whose step failed (these run without torch.compile)."""
    ready = work / "ready"
    ready.mkdir(exist_ok=True)
    procs = {}
    for cfg in trials:
        path = work / f"{cfg.trial_id}.yaml"
        path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
        procs[cfg.trial_id] = launch(
            [__file__, "--probe-one", str(path), str(ready), str(len(trials)), str(steps), str(deadline - 30)],
            work / f"probe_{cfg.trial_id}.log",
            module=False,
            compile_threads=max(1, (os.cpu_count() or 1) // len(trials)),
        )
    codes = wait_all(
        procs,
        deadline,
        status=lambda: (
            f"probe: {sum(p.poll() is None for p in procs.values())} running, {len(list(ready.iterdir()))} compiled"
        ),
    )
    rates, failed = {}, set()
    for cfg in trials:
        key, rates[cfg.trial_id] = cfg.trial_id, float("nan")
        text = (work / f"probe_{key}.log").read_text()
        try:
            rates[key] = json.loads(text.strip().splitlines()[-1])["steps_per_s"]
        except (IndexError, KeyError, ValueError):
            timed_out = codes[key] == -9
            failed |= set() if timed_out else {key}
            log(f"probe of {key} {'timed out' if timed_out else 'failed'}:\n{text[-600:]}")
    return rates, failed


def pack(trial_dirs: list[Path], suite_dir: Path, out: Path, limit: int = 18 * 2**20, most: int = 5) -> None:
    """The trial folders without checkpoints, the report and the logs, in at most `most` archives of at most
    `limit` bytes before compression (the device tool returns 8 files of 16 MiB; 3 are the logs)."""
    skip = {"checkpoint.pt", "deepspeed"}
    items = [
        p
        for d in trial_dirs
        if d.exists()
        for p in sorted(d.rglob("*"))
        if p.is_file() and not skip & set(p.relative_to(d).parts)
    ]
    items += [p for p in sorted((suite_dir / "report").rglob("*")) if p.is_file()]
    items += [p for p in sorted((suite_dir / "logs").glob("*")) if p.is_file()]
    bins: list[list[Path]] = [[]]
    size = 0
    for p in items:
        n = p.stat().st_size
        if bins[-1] and size + n > limit:
            bins.append([])
            size = 0
        bins[-1].append(p)
        size += n
    for i, group in enumerate(bins[:most]):
        with tarfile.open(out / f"results_{i}.tar.gz", "w:gz") as tar:
            for p in group:
                tar.add(p, arcname=str(p.relative_to(suite_dir.parent)))
    if len(bins) > most:
        log(f"WARNING: {len(bins) - most} archive(s) over the {most}-file limit were not written")


def main() -> int:
    if sys.argv[1:2] == ["--probe-one"]:
        config, ready, total, steps, until = sys.argv[2:7]
        probe_one(Path(config), Path(ready), int(total), warmup=10, steps=int(steps), until=float(until))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds for everything, from start")
    ap.add_argument("--probe-steps", type=int, default=300)
    ap.add_argument("--probe-limit-s", type=float, default=240)
    ap.add_argument("--fallback-rate", type=float, default=10, help="steps/s assumed if no probe finished")
    ap.add_argument("--reserve-s", type=float, default=90, help="kept for trial start-up, evaluation, report, packing")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every trial (dry runs)"
    )
    args = ap.parse_args()
    from harness.core.config import TrialConfig
    from harness.core.yaml_files import parse_overrides
    from harness.planning.suite import expand, load_suite
    from harness.store.files import read_json, write_json
    from harness.store.trial_folder import TrialFolder

    deadline = START + args.budget_s
    suite = load_suite(args.suite, data_dir=str(Path(args.data_dir).resolve()))
    overrides = parse_overrides(args.set)
    trials = [TrialConfig.model_validate({**t.model_dump(), **overrides}) for t in expand(suite, str(args.suite))]
    suite_dir = trials[0].trial_dir.parent
    work = suite_dir / "logs"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"{len(trials)} trials of {suite.name}; probing {args.probe_steps} steps each, all at once")

    # 1. probe
    rates, failed_probe = probe(trials, work, min(deadline, time.time() + args.probe_limit_s), args.probe_steps)
    good = [r for r in rates.values() if r > 0]
    # a trial not measured is assumed as slow as the slowest that was (or --fallback-rate)
    rates = {k: r if r > 0 else min(good, default=args.fallback_rate) for k, r in rates.items()}
    # 2. the epoch budget
    steps = {t.trial_id: math.ceil(t.train_subset * t.b / t.batch_size) for t in trials}  # the suite sets train_subset
    epoch_s = max(steps[k] / rates[k] for k in rates)
    left = deadline - time.time() - args.reserve_s
    epochs = max(1, min(args.max_epochs, int(left / epoch_s)))
    log(
        "probe (steps/s with all trials sharing the GPU): "
        + ", ".join(f"{t.method}-w{t.width}-s{t.seed} {rates[t.trial_id]:.1f}" for t in trials)
    )
    log(
        f"slowest trial: {epoch_s:.1f} s/epoch; {left:.0f} s left for training -> {epochs} epochs"
        + (f"; without torch.compile (its probe failed): {sorted(failed_probe)}" if failed_probe else "")
    )
    runs = []
    for t in trials:
        update = {"epochs": epochs} | ({"compile": False} if t.trial_id in failed_probe else {})
        runs.append(TrialConfig.model_validate({**t.model_dump(), **update}))
    write_json(
        args.out / "plan.json",
        {
            "epochs": epochs,
            "no_compile": sorted(failed_probe),
            "rates_steps_per_s": rates,
            "steps_per_epoch": steps,
            "probe_s": time.time() - START,
            "trials": [c.trial_id for c in runs],
        },
    )

    # 3. the trials
    procs = {}
    for cfg in runs:
        path = work / f"train_{cfg.trial_id}.yaml"
        path.write_text(json.dumps(cfg.model_dump(mode="json")))
        procs[cfg.trial_id] = launch(["train", str(path)], work / f"train_{cfg.trial_id}.log")
    t0 = time.time()

    def status() -> str:
        done = [TrialFolder(c.trial_dir).state().epochs for c in runs]
        running = sum(p.poll() is None for p in procs.values())
        return f"trials: {running} running, epochs done {sum(done)}/{epochs * len(runs)}"

    codes = wait_all(procs, deadline - 35, status=status)
    finished = [c for c in runs if TrialFolder(c.trial_dir).is_finished()]
    log(f"{len(finished)}/{len(runs)} trials finished in {time.time() - t0:.0f} s")
    for c in runs:
        if c not in finished:
            log(f"{c.trial_id} (exit {codes[c.trial_id]}):\n" + (work / f"train_{c.trial_id}.log").read_text()[-800:])

    # 4. report and archives
    subprocess.run(
        [sys.executable, "-m", "harness", "report", str(suite_dir)], timeout=max(5, deadline - time.time() - 15)
    )
    write_json(
        args.out / "plan.json",
        {
            **read_json(args.out / "plan.json"),
            "train_s": time.time() - t0,
            "finished": [c.trial_id for c in finished],
            "total_s": time.time() - START,
        },
    )
    pack([c.trial_dir for c in runs], suite_dir, args.out)
    log(f"done: {len(finished)}/{len(runs)} trials, {epochs} epochs each")
    return 0 if len(finished) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
