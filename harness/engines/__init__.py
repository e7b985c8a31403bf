"""Engines: how the model's gradients become an optimizer step (the torch engine, or DeepSpeed)."""
from __future__ import annotations

from harness.engines.torch_engine import TorchEngine


def build_engine(cfg, model, device, world):
    """The engine the config names, wrapping ``model`` (already on ``device``) for ``world``."""
    if cfg.engine == "deepspeed":
        from harness.engines.deepspeed_engine import DeepSpeedEngine

        return DeepSpeedEngine(cfg, model, device, world)
    return TorchEngine(cfg, model, device, world)


__all__ = ["TorchEngine", "build_engine"]
