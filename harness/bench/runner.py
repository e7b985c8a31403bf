"""`harness bench`: samples/s of the loader alone and of the full training step, after a warm-up,
side by side with the reference pipeline (``reference.py``) timed in the same process.

Samples count batch entries (repetitions included), as the batch size does. Every timed region
ends with a device synchronisation.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from harness.core import logs
from harness.core.config import ConfigError, TrialConfig
from harness.methods.base import MixedBatch
from harness.models import build_model

logger = logging.getLogger(__name__)


@dataclass
class Row:
    part: str  # "loader" or "step"
    pipeline: str
    batch_size: int
    samples_per_s: float
    ratio: float | None = None  # against the reference row of the same part
    peak_memory_gb: float | None = None
    seconds: float = 0.0
    steps: int = 0
    note: str = ""


@dataclass
class BenchResult:
    config: dict
    device: str
    device_name: str
    torch: str
    cpu_threads: int
    rows: list[Row] = field(default_factory=list)

    def table(self) -> str:
        from tabulate import tabulate

        body = [
            [
                r.part,
                r.pipeline,
                r.batch_size,
                f"{r.samples_per_s:,.0f}",
                "-" if r.ratio is None else f"{r.ratio:.2f}x",
                "-" if r.peak_memory_gb is None else f"{r.peak_memory_gb:.2f}",
                r.note,
            ]
            for r in self.rows
        ]
        return tabulate(body, headers=["part", "pipeline", "batch", "samples/s", "vs reference", "peak GB", "note"])

    def to_json(self) -> dict:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(make_iter: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make_iter()


def timed(device: torch.device, work: Callable[[], object], warmup: int, steps: int) -> float:
    """Seconds for ``steps`` calls of ``work`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        work()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        work()
    _sync(device)
    return time.perf_counter() - t0


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _variant(cfg: TrialConfig, **update) -> TrialConfig:
    from harness.trial.catalog import build_config

    return build_config({**cfg.model_dump(), **update}, "harness bench")


def _label(cfg: TrialConfig, channels_last: bool) -> str:
    parts = [cfg.loader + " loader", cfg.precision]
    if cfg.engine == "deepspeed":
        parts.insert(0, f"DeepSpeed (ZeRO {cfg.zero_stage})")
    if channels_last:
        parts.append("channels_last")
    if cfg.compile:
        parts.append("compiled" if cfg.compile is True else f"compiled ({cfg.compile})")
    return ", ".join(parts)


def _quiet_trainer(cfg: TrialConfig):
    """A Trainer for timing steps: its start-up line is not bench output."""
    from harness.trial.trainer import Trainer

    with logs.quiet("harness.trial.trainer"):
        return Trainer(cfg)


def run_bench(
    cfg: TrialConfig,
    batch_sizes: list[int],
    precisions: list[str],
    compiles: list,
    loaders: list[str],
    warmup: int,
    steps: int,
    loader_steps: int,
    reference_workers: int,
    reference: bool = True,
    engines: list[str] | None = None,
) -> BenchResult:
    from harness.trial.trainer import resolve_device

    cfg = _variant(cfg, progress=False)
    device = resolve_device(cfg.device)
    result = BenchResult(
        config={
            **cfg.recipe(),
            "device": cfg.device,
            "batch_sizes": batch_sizes,
            "precisions": precisions,
            "compiles": compiles,
            "loaders": loaders,
            "engines": engines or [cfg.engine],
            "warmup": warmup,
            "steps": steps,
            "loader_steps": loader_steps,
            "reference_workers": reference_workers,
        },
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        torch=torch.__version__,
        cpu_threads=torch.get_num_threads(),
    )

    def add(row: Row) -> None:
        result.rows.append(row)
        logger.info(
            f"  {row.part:6s} {row.pipeline:60s} batch {row.batch_size:4d}: {row.samples_per_s:10,.0f} samples/s"
        )

    base = _quiet_trainer(_variant(cfg, batch_size=batch_sizes[0]))
    data, bs0 = base.data, batch_sizes[0]
    if reference:
        try:  # what the method declares for the authors' per-sample pipeline (Method.reference_masks)
            type(base.method).reference_masks(cfg, cfg.num_inputs, base.method.mix_size, 0.5, np.random.default_rng(0))
        except NotImplementedError as err:
            raise ConfigError(f"{err}; run with --no-reference") from None
    logger.info(
        f"bench: {cfg.method} on {cfg.model}-{cfg.depth}-{cfg.width}, M={cfg.num_inputs}, b={cfg.b}, "
        f"{cfg.dataset} ({len(data.train)} train images), {result.device_name}; {warmup} warm-up + {steps} timed steps "
        f"({loader_steps} for the loaders)"
    )

    _loader_rows(cfg, base, loaders, reference, device, warmup, loader_steps, reference_workers, add)
    method = base.method
    del base  # its memory is freed before the steps' trainers
    _step_rows(cfg, batch_sizes, engines or [cfg.engine], precisions, compiles, loaders, device, warmup, steps, add)
    if reference:
        _reference_step(cfg, data, method, bs0, device, reference_workers, warmup, steps, add)
    _set_ratios(result)
    return result


def _loader_rows(cfg, base, loaders, reference: bool, device, warmup: int, loader_steps: int, workers: int, add):
    """The loaders alone (each batch through the method: pairing, masks, targets); the harness's pipelines first,
    the reference last, so that its worker processes cannot slow the others down."""
    from harness.bench.reference import reference_loader

    data, bs0 = base.data, base.cfg.batch_size
    for loader in loaders:
        same = loader == cfg.loader
        seconds = _time_trainer(
            base if same else _quiet_trainer(_variant(cfg, batch_size=bs0, loader=loader)),
            device,
            warmup,
            loader_steps,
            train=False,
        )
        add(
            Row(
                "loader",
                f"{loader} loader + batched mixing on {device.type}",
                bs0,
                loader_steps * bs0 / seconds,
                seconds=seconds,
                steps=loader_steps,
            )
        )
    if reference:
        ref = reference_loader(
            data.train,
            base.method,
            data.mean,
            data.std,
            bs0,
            cfg.b,
            workers,
            pin_memory=device.type == "cuda",
            crop_padding=cfg.crop_padding,
            flip=cfg.flip,
        )
        batches = _cycle(lambda: iter(ref))
        seconds = timed(device, lambda: next(batches), warmup, loader_steps)
        batches.close()  # stops the workers
        add(
            Row(
                "loader",
                f"reference: DataLoader, {workers} workers, PIL, per-sample mixing",
                bs0,
                loader_steps * bs0 / seconds,
                seconds=seconds,
                steps=loader_steps,
            )
        )


def _step_rows(cfg, batch_sizes, engines, precisions, compiles, loaders, device, warmup: int, steps: int, add) -> None:
    """The full training step of every variant (batch size x engine x precision x compile x loader); a variant that
    cannot run here is a row that says why."""
    for bs, engine, precision, compile_mode, loader in itertools.product(
        batch_sizes, engines or [cfg.engine], precisions, compiles, loaders
    ):
        if engine == "deepspeed" and compile_mode:
            continue  # the DeepSpeed engine runs eagerly
        engine_keys = (
            {} if engine == "deepspeed" else {"zero_stage": 0, "deepspeed": {}}
        )  # DeepSpeed's keys on its rows only
        variant = _variant(
            cfg, batch_size=bs, engine=engine, precision=precision, compile=compile_mode, loader=loader, **engine_keys
        )
        _reset_peak(device)
        try:
            trainer = _quiet_trainer(variant)
            seconds = _time_trainer(trainer, device, warmup, steps, train=True)
        except Exception as err:  # a variant that cannot run here (compile without a compiler, OOM) is reported
            add(
                Row("step", _label(variant, False), bs, float("nan"), note=f"failed: {type(err).__name__}: {err}"[:200])
            )
            continue
        channels_last = trainer.model.encoders.weight.is_contiguous(memory_format=torch.channels_last)
        add(
            Row(
                "step",
                _label(variant, channels_last),
                bs,
                steps * bs / seconds,
                peak_memory_gb=_peak_gb(device),
                seconds=seconds,
                steps=steps,
            )
        )
        del trainer  # free its memory before the next variant


def _set_ratios(result: BenchResult) -> None:
    """Each row's samples/s over its part's reference row; per part, the reference row first."""
    for part in ("loader", "step"):
        ref_rows = [r for r in result.rows if r.part == part and r.pipeline.startswith("reference")]
        for r in result.rows:
            if ref_rows and r.part == part and r is not ref_rows[0]:
                r.ratio = r.samples_per_s / ref_rows[0].samples_per_s
    result.rows.sort(key=lambda r: (r.part, r.ratio is not None))


def _time_trainer(trainer, device: torch.device, warmup: int, steps: int, train: bool) -> float:
    """The trainer's loader and the method's batch preparation, plus the SGD step if ``train``."""
    batches = _cycle(lambda: iter(trainer.train_loader))

    def work():
        x, y = next(batches)
        if train:
            return trainer.step(x, y, lr=1e-3, progress=0.5)
        return trainer.method.prepare(x, y, progress=0.5)

    return timed(device, work, warmup, steps)


def _reference_step(cfg: TrialConfig, data, method, batch_size, device, workers, warmup, steps, add) -> None:
    """The authors' way: PIL loader, host-to-device copy, fp32 eager NCHW model, per-parameter SGD."""
    from harness.bench.reference import reference_loader

    _reset_peak(device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.num_classes).to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=1e-3,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=2 * cfg.l2,
        foreach=False,
    )
    ref = reference_loader(
        data.train,
        method,
        data.mean,
        data.std,
        batch_size,
        cfg.b,
        workers,
        pin_memory=device.type == "cuda",
        crop_padding=cfg.crop_padding,
        flip=cfg.flip,
    )
    batches = _cycle(lambda: iter(ref))

    def step():
        b = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        batch = MixedBatch(b["inputs"], b.get("mix"), b["targets"], b["labels"])
        loss = method.loss(model(batch.inputs, batch.mix), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    seconds = timed(device, step, warmup, steps)
    batches.close()
    add(
        Row(
            "step",
            f"reference: PIL loader ({workers} workers), fp32 eager",
            batch_size,
            steps * batch_size / seconds,
            peak_memory_gb=_peak_gb(device),
            seconds=seconds,
            steps=steps,
        )
    )


def save(result: BenchResult, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=1))
    return path


def default_reference_workers() -> int:
    return min(10, os.cpu_count() or 1)  # the authors' loader used 10 workers
