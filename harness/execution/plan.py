"""A sweep's plan before it runs: what it costs, and how its trials share GPUs.

GPU time comes from the measured rate of each trial's shape on the card the suite names
(`resources.card`, the tables of harness.bench.rates, written by `harness bench --suite`); a shape
without a measurement falls back to one flat FLOP rate, and the plan says which trials did. With
`resources.pack` the trials of a shape share a card: `auto` takes the k the measurements favour
(harness.bench.rates.plan_packing), a number fixes k; each trial then asks Ray for gpus / k.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import astuple, dataclass
from pathlib import Path

from harness.bench.rates import Packing, Rate, Shape, plan_packing, read_rates, table_for, trial_samples
from harness.core import schema
from harness.core.config import ConfigError, TrialConfig
from harness.execution.progress import duration
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder
from harness.trial.cost import CPU_GFLOPS_PER_CORE, REFERENCE_TFLOPS, format_flops, training_memory, trial_flops


@dataclass
class TrialPlan:
    cfg: TrialConfig
    per_card: int  # trials of its shape sharing one card
    gpu_seconds: float
    measured: bool  # False: the flat FLOP rate


def load_rates(suite) -> tuple[list[Rate], Path | None]:
    """The measured rates of the suite's card (``resources.card``, else this machine's GPU), if any."""
    card = suite.resources.card
    if card is None:
        import torch

        if not torch.cuda.is_available():
            return [], None
        card = torch.cuda.get_device_name(0)
    try:
        path = table_for(card)
        return (read_rates(path), path) if path else ([], None)
    except ValueError as err:
        raise ConfigError(f"resources.card: {err}") from None


def packing_for(suite, shape: Shape, rates: list[Rate]) -> Packing | None:
    """How trials of ``shape`` share a card under ``resources.pack`` (None: one trial per card)."""
    pack = suite.resources.pack
    if pack is None or pack == 1:
        return None
    if pack == "auto":
        return plan_packing(rates, shape)
    measured = next((r for r in rates if r.shape == shape and r.concurrent == pack), None)
    rate = measured.samples_per_s if measured else float("nan")
    return Packing(shape, pack, rate, float("nan"), f"{pack} per card (resources.pack)")


def gpu_fraction(suite, cfg: TrialConfig, rates: list[Rate]) -> float:
    """The GPUs one trial asks Ray for: resources.gpus, divided by the trials sharing its card."""
    packing = packing_for(suite, Shape.of(cfg), rates)
    return suite.resources.gpus / packing.per_card if packing else suite.resources.gpus


def trial_plans(suite, trials: list[TrialConfig], rates: list[Rate]) -> list[TrialPlan]:
    out = []
    for cfg in trials:
        shape = Shape.of(cfg)
        packing = packing_for(suite, shape, rates)
        k = packing.per_card if packing else 1
        rate = next((r for r in rates if r.shape == shape and r.concurrent == k), None)
        if rate is not None:
            out.append(TrialPlan(cfg, k, trial_samples(cfg) / rate.samples_per_s / k, True))
        else:
            out.append(TrialPlan(cfg, k, trial_flops(cfg) / (REFERENCE_TFLOPS * 1e12), False))
    return out


def gpu_estimate(suite, plans: list[TrialPlan], table: Path | None) -> list[str]:
    """Per width and in total: GPU-hours, and what each number rests on."""
    card = suite.resources.card or "this machine's GPU"
    by_width: dict[int, list[TrialPlan]] = defaultdict(list)
    for p in plans:
        by_width[p.cfg.width].append(p)
    basis = f"measured rates in {table}" if table else f"no rate table for {card} (harness bench --suite measures one)"
    lines = [f"GPU estimate for {card} ({basis}):"]
    for width in sorted(by_width):
        group = by_width[width]
        hours = sum(p.gpu_seconds for p in group) / 3600
        measured = sum(p.measured for p in group)
        packs = sorted({p.per_card for p in group})
        how = (
            "measured"
            if measured == len(group)
            else "flat rate"
            if not measured
            else f"{measured} measured, {len(group) - measured} flat"
        )
        share = "" if packs == [1] else f"; {'/'.join(map(str, packs))} trials per GPU"
        lines.append(f"  width {width:>3}: {len(group):>3} trials, {hours:9.3f} GPU-h ({how}{share})")
    total = sum(p.gpu_seconds for p in plans) / 3600
    flat = [p for p in plans if not p.measured]
    lines.append(
        f"  total     : {len(plans):>3} trials, {total:9.3f} GPU-h"
        + (
            f"; {len(flat)} trial(s) at the flat {REFERENCE_TFLOPS:.0f} TFLOP/s (WRN-28-10, bf16, CUDA graphs, "
            f"H100): their shapes are not measured, run `harness bench --suite` on the card"
            if flat
            else ""
        )
    )
    return lines


def plugin_reruns(todo: list[TrialConfig]) -> list[str]:
    """A line per trial to run because a plugin it uses changed: a folder of the same method, shape and seed holds
    the same recipe recorded with other plugin code."""
    lines = []
    for cfg in todo:
        if not cfg.plugin_code:
            continue
        recipe = {k: v for k, v in cfg.record().items() if k not in ("plugin_code", "trial_id")}
        for folder in sorted(cfg.trial_dir.parent.glob(cfg.trial_id.rsplit("-", 1)[0] + "-*")):
            if folder.name == cfg.trial_id or not (folder / schema.CONFIG).is_file():
                continue
            try:
                old = TrialFolder(folder).config()
            except CorruptFile:
                continue
            same = all(old.get(k) == v for k, v in recipe.items() if TrialConfig.model_fields.get(k) is None or
                       TrialConfig.role(k).value != "runtime")  # fmt: skip
            changed = [
                f"{entry} {old.get('plugin_code', {}).get(entry, 'none')[:12]} -> {sha[:12]}"
                for entry, sha in cfg.plugin_code.items()
                if old.get("plugin_code", {}).get(entry) != sha
            ]
            if same and changed:
                lines.append(
                    f"  rerun {cfg.trial_id} (was {folder.name}): plugin code changed ({', '.join(changed)}; "
                    f"{', '.join(cfg.plugins)})"
                )
    return lines


def plan_text(suite, trials: list[TrialConfig], address: str | None = None) -> str:
    flops = [trial_flops(t) for t in trials]
    finished = {t.trial_id for t in trials if TrialFolder(t.trial_dir).is_finished()}
    todo = [t for t in trials if t.trial_id not in finished]
    todo_flops = [f for t, f in zip(trials, flops) if t.trial_id not in finished]
    lines = [
        f"suite {suite.name}: {len(trials)} trials ({len(trials) - len(todo)} finished, {len(todo)} to run), "
        f"results in {suite.suite_dir.resolve()}"
    ]
    reruns = plugin_reruns(todo)
    if reruns:
        lines += [f"{len(reruns)} trial(s) run again because a plugin changed (older results stay in their folders):"]
        lines += reruns
    head = f"cost: {format_flops(sum(flops))} of training in all, {format_flops(sum(todo_flops))} to run"
    if suite.resources.gpus > 0:
        lines.append(head)
        rates, table = load_rates(suite)
        lines += gpu_estimate(suite, trial_plans(suite, todo, rates), table)
        if suite.resources.pack is not None:
            shapes = sorted({Shape.of(t) for t in todo}, key=astuple)
            for shape, packing in ((s, packing_for(suite, s, rates)) for s in shapes):
                lines.append(f"  packing {shape}: {packing.reason if packing else '1 per card (no measurement)'}")
        if address is None and not os.environ.get("RAY_ADDRESS") and not _local_gpu():
            lines.append(
                "warning: the suite asks for GPUs (`resources.gpus`), but this machine has none and no "
                "--address names a cluster"
            )
    else:
        cores = min(os.cpu_count() or 1, suite.resources.cpus * (suite.concurrency or len(trials)))
        seconds = sum(todo_flops) / (CPU_GFLOPS_PER_CORE * 1e9 * max(1.0, cores))
        lines.append(
            f"{head} (on CPUs: ~{duration(seconds)} on {cores:g} core(s) of this machine at ~"
            f"{CPU_GFLOPS_PER_CORE:.0f} GFLOP/s each; a rough guide, the sweep measures its own rate)"
        )
    lines += memory_lines(suite, todo)
    return "\n".join(lines)


# The memory of cards a suite may name (resources.card) without this machine having one: GiB, by name part.
CARD_MEMORY_GIB = {"H200": 141, "H100": 80, "A100-SXM4-80GB": 80, "A100 80GB": 80, "A100": 40, "L40": 48, "A10": 24,
                   "L4": 24, "4090": 24, "V100": 16, "T4": 16}  # fmt: skip


def memory_lines(suite, todo: list[TrialConfig]) -> list[str]:
    """The largest training-memory estimate of the trials to run, and a warning per shape that would not fit the
    memory one trial gets (the card's, shared by packed trials; on CPUs, the machine's, shared by concurrent ones)."""
    if not todo:
        return []
    by_shape = {}
    for t in todo:
        key = (t.model, t.depth, t.width, t.num_inputs, t.method, t.batch_size, t.precision, t.dataset)
        if key not in by_shape:
            by_shape[key] = (t, training_memory(t))
    cfg, peak = max(by_shape.values(), key=lambda v: v[1]["total"])
    data = max(dataset_bytes(t) for t in todo)
    lines = [
        f"memory: up to {_gib(peak['total'])} per trial while training ({cfg.method} {cfg.model}-{cfg.depth}-"
        f"{cfg.width}, M = {cfg.num_inputs}, batch {cfg.batch_size}: {_gib(peak['weights'])} weights, "
        f"{_gib(peak['optimizer'])} gradients and momentum, {_gib(peak['activations'])} activations; estimated); "
        f"each worker process also holds the dataset's arrays ({_gib(data)}) and the framework (~1 GiB on a CPU, "
        "benchmarks/worker_memory)"
    ]
    limit, what = _memory_limit(suite, len(todo))
    for t, need in by_shape.values():
        if limit and need["total"] > limit:
            lines.append(
                f"warning: {t.method} {t.model}-{t.depth}-{t.width} (M = {t.num_inputs}, batch {t.batch_size}) needs "
                f"~{_gib(need['total'])}, more than {what} ({_gib(limit)}): it would run out of memory; lower "
                f"batch_size or the width, or run where there is more"
            )
    return lines


def dataset_bytes(cfg: TrialConfig) -> int:
    """The uint8 image arrays a trial reads whole into its worker: its dataset's train and test splits."""
    from harness.data.datasets import DATASETS

    spec = DATASETS.get(cfg.dataset)
    if cfg.dataset == "synthetic":  # its test set is a fifth of its size
        return int(cfg.synthetic_size * 1.2) * cfg.synthetic_resolution**2 * 3
    return ((spec.train_size or 0) + (spec.test_size or 0)) * (spec.resolution or 32) ** 2 * 3


def _memory_limit(suite, trials: int) -> tuple[float | None, str]:
    """The bytes one trial may use, and what they are."""
    if suite.resources.gpus > 0:
        if _local_gpu():
            import torch

            card, total = torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory
        else:
            card = suite.resources.card or ""
            gib = next((v for k, v in CARD_MEMORY_GIB.items() if k.lower() in card.lower()), None)
            if gib is None:
                return None, ""
            total = gib * 2**30
        share = suite.resources.pack if isinstance(suite.resources.pack, int) else 1
        per_gpu = total * suite.resources.gpus / share
        return per_gpu, f"the {card} memory one trial gets" + (f" ({share} per card)" if share > 1 else "")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    together = max(1, min(trials, suite.concurrency or int((os.cpu_count() or 1) // max(suite.resources.cpus, 1))))
    return total / together, f"this machine's memory shared by {together} concurrent trial(s)"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def _local_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
