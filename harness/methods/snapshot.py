"""Snapshot Ensembles (Huang et al., ICLR 2017, "Train 1, get M for free"): M cycles of cosine annealing, the
network at the end of each cycle a member (docs/recipe.md)."""

from __future__ import annotations

import math

from harness.methods import register_method
from harness.methods.time_ensembles import InTime


@register_method("snapshot")
class Snapshot(InTime):
    """Snapshot Ensembles (Huang et al., 2017): M cycles of cosine annealing from the recipe's learning rate, the
    network at the end of each cycle is a member."""

    order, color, marker = 60, "#8c564b", "P"
    default_M = 5  # Huang et al.'s CIFAR runs: 5 or 6 cycles of the budget

    @classmethod
    def weight_members(cls, cfg) -> int:
        return cfg.num_inputs

    def cycle_steps(self, steps_per_epoch: int) -> int:
        return math.ceil(self.cfg.epochs * steps_per_epoch / self.members)  # Huang et al.'s ceil(T / M)

    def schedule(self, lr: float, epoch: int, step: int, steps_per_epoch: int) -> float:
        # Huang et al.'s Eq. 2: alpha0 / 2 (cos(pi mod(t - 1, ceil(T/M)) / ceil(T/M)) + 1), t counted from 1
        cycle = self.cycle_steps(steps_per_epoch)
        t = epoch * steps_per_epoch + step
        return self.cfg.learning_rate / 2 * (math.cos(math.pi * (t % cycle) / cycle) + 1)

    def after_step(self, loop) -> None:
        cycle = self.cycle_steps(loop.steps_per_epoch)
        ended = loop.global_step // cycle
        if loop.global_step % cycle == 0 and ended < self.members:  # a cycle's last step: its snapshot
            loop.model.keep(ended - 1)  # the last cycle's member is the live network at the end
