"""Measure a suite's shapes: the training step's samples/s of one trial alone and of each of k trials
running at once on the same device (``--pack``), each in a process of its own as `harness run` would
place them. Every process warms up, waits until all k are warm, then trains for a fixed time: the k
processes overlap for the whole timed window.

    python -m harness.bench.packed CONFIG_JSON SECONDS WARMUP BARRIER_DIR INDEX K   (one measuring process)
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.bench.rates import Rate, Shape
from harness.core import plugins
from harness.core.config import TrialConfig
from harness.trial import catalog

logger = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_one(cfg: TrialConfig, seconds: float, warmup: int, barrier: Path | None, index: int, k: int) -> dict:
    """This process's samples/s over ``seconds`` of training steps, after ``warmup`` steps and the barrier."""
    from harness.core.schedule import learning_rate
    from harness.trial.trainer import Trainer, resolve_device

    device = resolve_device(cfg.device)
    trainer = Trainer(cfg.model_copy(update={"progress": False}))
    trainer.model.train()
    steps_per_epoch = len(trainer.train_loader)

    def batches():
        while True:
            yield from trainer.train_loader

    source = batches()

    def step(i: int) -> None:
        x, y = next(source)
        trainer.step(x, y, learning_rate(cfg, 0, i % steps_per_epoch, steps_per_epoch), progress=0.5)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup):
        step(i)
    _sync(device)
    if barrier is not None:  # every process warm before any is timed
        (barrier / f"ready{index}").touch()
        while len(list(barrier.glob("ready*"))) < k:
            time.sleep(0.01)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(done)
        done += 1
        if done % 5 == 0:
            _sync(device)  # the clock must see finished work, not queued kernels
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"samples_per_s": done * cfg.batch_size / elapsed, "peak_memory_gb": peak, "steps": done}


def measure_packed(cfg: TrialConfig, k: int, seconds: float, warmup: int) -> list[dict]:
    """k processes training ``cfg`` at once; each one's result."""
    with tempfile.TemporaryDirectory() as barrier:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.bench.packed",
                    json.dumps({"trial": cfg.model_dump(mode="json"), "plugins": plugins.shipped()}),
                    str(seconds),
                    str(warmup),
                    barrier,
                    str(i),
                    str(k),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(k)
        ]
        outputs = [p.communicate()[0] for p in procs]
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {k} measuring processes failed (exit {procs[failed[0]].returncode})")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def card_name(device: torch.device) -> tuple[str, float]:
    """(the device's name, its memory in GB; nan on a CPU)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.name, props.total_memory / 2**30
    from harness.bench.runner import _cpu_name

    return _cpu_name(), float("nan")


def measure_shapes(trials: list[TrialConfig], pack: list[int], seconds: float, warmup: int) -> list[Rate]:
    """A rate row per distinct shape of ``trials`` and per k of ``pack``."""
    from harness.trial.trainer import resolve_device

    shapes: dict[Shape, TrialConfig] = {}
    for cfg in trials:
        shapes.setdefault(Shape.of(cfg), cfg)
    device = resolve_device(next(iter(shapes.values())).device)
    card, memory = card_name(device)
    today = time.strftime("%Y-%m-%d")
    out = []
    for n, (shape, cfg) in enumerate(shapes.items(), 1):
        for k in pack:
            runs = measure_packed(cfg, k, seconds, warmup)
            rate = sum(r["samples_per_s"] for r in runs) / k
            peak = max(r["peak_memory_gb"] for r in runs)
            out.append(Rate(card, shape, k, rate, peak, memory, torch.__version__, today))
            logger.info(
                f"[{n}/{len(shapes)}] {shape}: {k} at once: {rate:,.0f} samples/s each, {k * rate:,.0f} in all"
                + (f", peak {peak:.2f} GB each" if peak == peak else "")
            )
    return out


if __name__ == "__main__":
    config, seconds, warmup, barrier, index, k = sys.argv[1:7]
    torch.set_num_threads(1)  # a trial of a sweep holds one CPU (resources.cpus: 1); k processes share the cores
    shipped = json.loads(config)
    result = measure_one(
        catalog.in_worker(shipped["trial"], shipped["plugins"]),
        float(seconds),
        int(warmup),
        Path(barrier),
        int(index),
        int(k),
    )
    print(json.dumps(result))
