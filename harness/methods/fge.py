"""Fast Geometric Ensembling (Garipov et al., NeurIPS 2018): the recipe's training, then a cyclic learning rate,
a member collected at each cycle's minimum (docs/recipe.md)."""

from __future__ import annotations

from harness.core.registry import Option
from harness.methods import register_method
from harness.methods.time_ensembles import InTime


@register_method("fge")
class FGE(InTime):
    """Fast Geometric Ensembling (Garipov et al., 2018): the recipe's training for the first epochs, then M cycles
    of a piecewise-linear learning rate, a member collected at each cycle's minimum."""

    order, color, marker = 61, "#bcbd22", "X"
    default_M = 4  # members collected: 4 cycles of 4 epochs after the pre-training
    options = {
        "fge_cycle": Option(4, "epochs per cycle, even (Garipov et al.: 2 to 4)", ge=2),
        "fge_lr_high": Option(0.05, "the cycle's highest learning rate, alpha_1 (Garipov et al.: 0.05)", gt=0),
        "fge_lr_low": Option(0.0005, "the cycle's lowest learning rate, alpha_2, where members are collected", gt=0),
    }

    @classmethod
    def weight_members(cls, cfg) -> int:
        return cfg.num_inputs

    @classmethod
    def pretrain_epochs(cls, cfg) -> int:
        """The recipe's training before the cycles; the last cycle ends at its minimum (its second half would
        train a network that is no member)."""
        cycle = cls.option(cfg, "fge_cycle")
        return cfg.epochs - (cfg.num_inputs - 1) * cycle - cycle // 2

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        cycle = cls.option(cfg, "fge_cycle")
        if cycle % 2:
            raise ValueError(f"fge_cycle: {cycle} epochs; a cycle has an even number of epochs (its minimum halfway)")
        if cls.pretrain_epochs(cfg) < 1:
            raise ValueError(
                f"fge: {cfg.num_inputs} members of {cycle}-epoch cycles need more than "
                f"{(cfg.num_inputs - 1) * cycle + cycle // 2} epochs, the trial has {cfg.epochs}"
            )

    def schedule(self, lr: float, epoch: int, step: int, steps_per_epoch: int) -> float:
        from harness.core.schedule import learning_rate

        pretrain = self.pretrain_epochs(self.cfg)
        if epoch < pretrain:  # the recipe's schedule, fitted to the pre-training epochs
            return learning_rate(self.cfg.model_copy(update={"epochs": pretrain}), epoch, step, steps_per_epoch)
        # Garipov et al.'s cyclic_learning_rate: t in [0, 1) through a cycle, alpha_1 -> alpha_2 -> alpha_1
        cycle, high, low = (self.option(self.cfg, k) for k in ("fge_cycle", "fge_lr_high", "fge_lr_low"))
        t = (((epoch - pretrain) % cycle) + step / steps_per_epoch) / cycle
        return (1 - 2 * t) * high + 2 * t * low if t < 0.5 else (2 - 2 * t) * low + (2 * t - 1) * high

    def after_epoch(self, loop) -> None:
        pretrain, cycle = self.pretrain_epochs(self.cfg), self.option(self.cfg, "fge_cycle")
        done = loop.epoch + 1 - pretrain - cycle // 2  # epochs since the first cycle's minimum
        if done >= 0 and done % cycle == 0 and done // cycle < self.members - 1:
            loop.model.keep(done // cycle)  # the last member is the live network at the end
