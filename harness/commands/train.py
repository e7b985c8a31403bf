"""`harness train`: one trial on this machine, and the summary printed after it."""

from __future__ import annotations

import logging
import os

from harness.commands.common import trial_config, what_was_kept
from harness.config import TrialConfig
from harness.exit_codes import ExitCode, Interrupted

logger = logging.getLogger(__name__)


def cmd_train(args) -> int:
    from harness.data import with_fingerprints
    from harness.launch import train_trial

    cfg = with_fingerprints([trial_config(args)])[0]
    cpus, gpus = 1.0, 0.0
    if cfg.workers_per_trial > 1:  # N workers through Ray Train: $RAY_ADDRESS, else a local Ray of its own
        from harness.cluster import start_ray
        from harness.data import check_available
        from harness.trainer import resolve_device

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
    """The one-screen summary printed after a trial."""

    def pct(key: str) -> str:
        return f"{100 * metrics[key]:.2f}%" if key in metrics else "-"

    heads = " / ".join(
        f"{100 * metrics[f'head{i}_top1']:.2f}" for i in range(cfg.num_inputs) if f"head{i}_top1" in metrics
    )
    lines = [
        f"trial      {cfg.trial_id}",
        f"setup      {cfg.method} on {cfg.dataset}, {cfg.model}-{cfg.depth}-{cfg.width}, "
        f"M={cfg.num_inputs}, b={cfg.b}, "
        f"{cfg.epochs} epochs, seed {cfg.seed}",
        f"params     {metrics.get('num_params', 0):,}",
        f"top-1      {pct('top1')}   top-5 {pct('top5')}   heads {heads}",
        f"NLL        {metrics['nll']:.4f}   ECE {metrics['ece']:.4f}   Brier {metrics['brier']:.4f}",
        f"calibrated NLL {metrics['cal_nll']:.4f}   ECE {metrics['cal_ece']:.4f}   T = {metrics['temperature']:.3f}",
        f"           ({metrics['calibration_protocol']})",
    ]
    if "ratio_error" in metrics:
        lines.append(
            f"diversity  ratio-error {metrics['ratio_error']:.3f}   disagreement {metrics['disagreement']:.3f}"
        )
    if cfg.engine != "torch" or cfg.workers_per_trial > 1:
        zero = f", ZeRO {cfg.zero_stage}" if cfg.engine == "deepspeed" else ""
        lines.append(
            f"engine     {cfg.engine}{zero}, {cfg.precision}, {metrics.get('workers', 1)} worker(s), "
            f"{cfg.grad_accum_steps} micro-batch(es) per step"
        )
    lines.append(
        f"time       train {metrics['train_time_s']:.0f} s, test {metrics['eval_time_s']:.1f} s "
        f"on {metrics['device_name']}"
    )
    lines.append(f"results    {cfg.trial_dir}")
    return "\n".join(lines)
