"""`harness train`: one trial on this machine, and the summary printed after it."""

from __future__ import annotations

import logging
import os

from harness.commands.common import trial_config, what_was_kept
from harness.core.config import TrialConfig
from harness.core.exit_codes import ExitCode, Interrupted

logger = logging.getLogger(__name__)


def cmd_train(args) -> int:
    from harness.data import with_fingerprints
    from harness.trial.launch import train_trial

    cfg = with_fingerprints([trial_config(args)])[0]
    cpus, gpus = 1.0, 0.0
    if cfg.workers_per_trial > 1:  # N workers through Ray Train: $RAY_ADDRESS, else a local Ray of its own
        from harness.data import check_available
        from harness.execution.cluster import start_ray
        from harness.trial.trainer import resolve_device

        check_available(cfg)
        start_ray()
        gpus = 1.0 if resolve_device(cfg.device).type == "cuda" else 0.0
        cpus = max(1.0, (os.cpu_count() or 1) // cfg.workers_per_trial) if not gpus else 1.0
        print(
            f"{cfg.trial_id}: {cfg.workers_per_trial} workers ({'GPU' if gpus else f'{cpus:g} CPUs'} each), "
            f"engine {cfg.engine}",
            flush=True,
        )
    try:
        metrics = train_trial(
            cfg,
            restart=args.restart,
            cpus_per_worker=cpus,
            gpus_per_worker=gpus,
            on_epoch=lambda row: (
                print(f"epoch {row['epoch']}/{cfg.epochs} loss {row['train_loss']:.3f}", flush=True)
                if cfg.workers_per_trial > 1
                else None
            ),
        )
    except KeyboardInterrupt:
        raise Interrupted(what_was_kept([cfg.trial_dir], "harness train")) from None
    print(format_summary(cfg, metrics))
    return ExitCode.DONE


def format_summary(cfg: TrialConfig, metrics: dict) -> str:
    """The one-screen summary printed after a trial: a line per metric group, every declared metric the trial
    recorded (harness.metrics: a plugin's metric shows too), then how and where it ran."""
    from harness.metrics import GROUPS, METRICS
    from harness.tracker.mlflow_mapping import finite_number

    if "train_time_s" in metrics:  # the cost is declared in hours (the report's column)
        metrics = {"train_hours": metrics["train_time_s"] / 3600, **metrics}

    lines = [
        f"trial        {cfg.trial_id}",
        f"setup        {cfg.method} on {cfg.dataset}, {cfg.model}-{cfg.depth}-{cfg.width}, M={cfg.num_inputs}, "
        f"b={cfg.b}, {cfg.epochs} epochs, seed {cfg.seed}",
    ]
    for group in GROUPS:
        values = [
            m.format(metrics[n]) for n, m in METRICS.items() if m.group == group and finite_number(metrics.get(n))
        ]
        if group == "accuracy" and cfg.num_inputs > 1:
            heads = [
                f"{100 * metrics[f'head{i}_top1']:.2f}" for i in range(cfg.num_inputs) if f"head{i}_top1" in metrics
            ]
            values.append(f"heads {' / '.join(heads)}")
        if group == "calibration" and "temperature" in metrics:
            values.append(f"T = {metrics['temperature']:.3f} ({metrics.get('calibration_protocol', '')})")
        if values:
            lines.append(f"{group:<12} " + "   ".join(values))
    if cfg.engine != "torch" or cfg.workers_per_trial > 1:
        zero = f", ZeRO {cfg.zero_stage}" if cfg.engine == "deepspeed" else ""
        lines.append(
            f"engine       {cfg.engine}{zero}, {cfg.precision}, {metrics.get('workers', 1)} worker(s), "
            f"{cfg.grad_accum_steps} micro-batch(es) per step"
        )
    lines.append(f"device       {metrics.get('device_name', '?')}")
    lines.append(f"results      {cfg.trial_dir}")
    return "\n".join(lines)
