"""Engines: how the model's gradients become an optimizer step (the torch engine, or DeepSpeed).

A new engine is one file in this package: a class implementing ``Engine``, registered with
``@register_engine("<name>")`` (then ``engine: <name>`` in a trial).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from harness.engines.inference import Inference, place_model, weight_dtype
from harness.engines.registry import ENGINES, register_engine

if TYPE_CHECKING:
    from harness.core.config import TrialConfig
    from harness.core.parallel import World


class Engine(Protocol):
    """What the trainer asks of an engine; the class itself says how the network is placed and predicts
    (harness.engines.inference: training's evaluations and `harness evaluate` alike)."""

    channels_last: bool  # whether the engine takes NHWC weights (by default on CUDA)

    @staticmethod
    def weight_dtype(cfg: TrialConfig) -> torch.dtype:
        """The dtype the engine trains the weights in (the images are cast to it)."""

    @staticmethod
    def autocast_bf16(cfg: TrialConfig) -> bool:
        """Whether the engine computes under bf16 autocast (prediction does the same)."""

    model: torch.nn.Module  # the plain module: evaluation, state_dict

    def set_lr(self, lr: float) -> None: ...

    def forward(self, inputs: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
        """Training forward pass (autocast, compiled or wrapped module as the engine sees fit)."""

    infer: Inference  # prediction: the same for training's evaluations and `harness evaluate`

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        """Accumulate a micro-batch's gradient; step at the boundary of the last one."""

    def save(self, trial_dir: Path, epoch: int) -> dict:
        """The engine's part of the checkpoint (written into checkpoint.pt; may write files of its own)."""

    def verify(self, trial_dir: Path, state: dict) -> None:
        """Raise results.CorruptFile if the files ``state`` points at cannot be read safely."""

    def load(self, trial_dir: Path, state: dict) -> None: ...

    def config_files(self) -> dict[str, dict]:
        """Extra JSON files for the trial folder (name -> content)."""


def build_engine(cfg: TrialConfig, model: torch.nn.Module, device: torch.device, world: World) -> Engine:
    """The engine the config names, wrapping ``model`` (already on ``device``) for ``world``."""
    return ENGINES.get(cfg.engine)(cfg, model, device, world)


__all__ = ["ENGINES", "Engine", "Inference", "build_engine", "place_model", "register_engine", "weight_dtype"]
