"""What the ensembles in time share (Snapshot, FGE, SWA, SWAG: one network trained once, its members taken along
the way): the training batch of a single network, M the number of members, and SWA's schedule and averages."""

from __future__ import annotations

import torch

from harness.core.registry import Option
from harness.methods.base import Method


class InTime(Method):
    """One network trained plainly (one input, one-hot targets); M counts its members, not its inputs."""

    single_network = False  # M >= 2 members (SWA, one averaged network, says otherwise)

    def __init__(self, cfg, num_classes: int, mix_size: int, partners=None):
        super().__init__(cfg, num_classes, mix_size, partners)
        self.members = cfg.num_inputs
        self.M = 1  # each batch trains the one network

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.msda != "none":
            raise ValueError(f"msda (Mixup/CutMix on each input) is for MixMo's multi-input methods, not {cfg.method}")
        if cls.weight_members(cfg) > 1 and cfg.workers_per_trial > 1:
            raise ValueError(
                f"workers_per_trial {cfg.workers_per_trial}: {cfg.method}'s frozen members get no gradient, which "
                "data-parallel training refuses; run it with one worker per trial"
            )

    @classmethod
    def train_row(cls, cfg) -> tuple[int, float]:
        return 1, 1  # one image per row: members cost nothing while training


SWA_OPTIONS = {
    "swa_start": Option(0.54, "share of the epochs before averaging starts (Izmailov et al.: 161 of 300)", gt=0, lt=1),
    "swa_lr": Option(0.05, "the constant learning rate while averaging (Izmailov et al., CIFAR-100: 0.05)", gt=0),
}


class Averaging(InTime):
    """SWA's recipe (Izmailov et al., 2018, their train.py): the learning rate held, decayed linearly from 50% to 90%
    of the epochs before averaging, then ``swa_lr``; the weights collected at the end of every epoch from
    ``swa_start`` on."""

    options = SWA_OPTIONS

    def start_epoch(self) -> int:
        return max(1, round(self.option(self.cfg, "swa_start") * self.cfg.epochs))

    def schedule(self, lr: float, epoch: int, step: int, steps_per_epoch: int) -> float:
        # Izmailov et al.'s schedule(epoch): t = epoch / swa_start, then 1 -> swa_lr / lr_init between t 0.5 and 0.9
        base, ratio = self.cfg.learning_rate, self.option(self.cfg, "swa_lr") / self.cfg.learning_rate
        t = epoch / self.start_epoch()
        factor = 1.0 if t <= 0.5 else 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4 if t <= 0.9 else ratio
        return base * factor

    def collects(self, epoch: int) -> bool:
        """Whether the weights at the end of ``epoch`` (from 0) are collected: from the swa_start-th epoch on."""
        return epoch + 1 >= self.start_epoch()

    @staticmethod
    def weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The averaged quantities: the parameters (batch-norm statistics are recomputed, not averaged)."""
        return {name: p.detach() for name, p in network.named_parameters()}
