"""DeepSpeed's configuration, built from the recipe (no DeepSpeed import: the inference path reads it too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.core.config import TrialConfig


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deepspeed_config(cfg: TrialConfig, world_size: int) -> dict:
    micro = cfg.batch_size // (world_size * cfg.grad_accum_steps)
    generated = {
        "train_batch_size": cfg.batch_size,  # the recipe's global batch
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "zero_optimization": {"stage": cfg.zero_stage},
        "zero_allow_untested_optimizer": True,  # torch's SGD under ZeRO: the recipe's optimizer, kept
        "bf16": {"enabled": cfg.precision == "bf16"},  # bf16 weights, fp32 master weights in the optimizer
        "gradient_clipping": 0.0,  # the recipe clips nothing
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _merge(generated, cfg.deepspeed)
