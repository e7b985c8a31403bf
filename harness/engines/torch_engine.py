"""The torch engine: SGD (fused on CUDA), bf16 autocast, optional torch.compile, DDP across workers."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.engines import register_engine
from harness.engines.inference import Inference
from harness.methods import METHODS

if TYPE_CHECKING:
    from harness.core.config import TrialConfig


def sgd(cfg: TrialConfig, model: torch.nn.Module, **options) -> torch.optim.SGD:
    """The recipe's optimizer. The L2 term l2 * sum(w^2) in the loss has gradient 2 * l2 * w: exactly
    SGD's weight decay, so the loss itself stays the cross-entropy. The groups are the method's
    (``Method.param_groups``); a group's ``lr_scale`` multiplies the scheduled lr (set_lr)."""
    groups = [g for g in METHODS.get(cfg.method).param_groups(model, cfg) if g["params"]]
    return torch.optim.SGD(
        groups,
        lr=cfg.learning_rate,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=2 * cfg.l2 + cfg.weight_decay,
        **options,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@register_engine("torch")
class TorchEngine:
    """Plain torch: DDP across workers, torch.compile, bf16 autocast, SGD with the recipe's groups."""

    channels_last = True  # NHWC weights on CUDA (place_model): the tensor cores' layout

    @staticmethod
    def weight_dtype(cfg: TrialConfig) -> torch.dtype:
        return torch.float32  # bf16 is autocast over float32 weights

    @staticmethod
    def autocast_bf16(cfg: TrialConfig) -> bool:
        return cfg.precision == "bf16"

    def __init__(self, cfg: TrialConfig, model: torch.nn.Module, device: torch.device, world):
        self.model, self.device = model, device
        module = model
        if world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        # Training runs the compiled module (same parameters); evaluation the eager one.
        self.train_module = (
            torch.compile(module, mode=None if cfg.compile is True else cfg.compile) if cfg.compile else module
        )
        # one fused kernel for all parameters on CUDA; multi-tensor ops on the CPU
        self.optimizer = sgd(cfg, model, **({"fused": True} if device.type == "cuda" else {"foreach": True}))
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.precision == "bf16" else nullcontext
        )
        self.accum = cfg.grad_accum_steps
        self.infer = Inference(cfg, model, device)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def forward(self, inputs: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
        with self.autocast():
            return self.train_module(inputs, mix)

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        """Accumulate a micro-batch's gradient (DDP averages over the workers); step at the boundary."""
        (loss / self.accum).backward()
        if boundary:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    # --- checkpoints: the optimizer state travels in the trial's checkpoint.pt
    def save(self, trial_dir: Path, epoch: int) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def verify(self, trial_dir: Path, state: dict) -> None:
        """Nothing beyond checkpoint.pt to check: the optimizer state travels in it."""

    def load(self, trial_dir: Path, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def config_files(self) -> dict:
        return {}
