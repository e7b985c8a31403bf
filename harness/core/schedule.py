"""The recipe's schedules as functions of the trial's config (docs/recipe.md): the learning rate's warmup and step
decay, and the clock of the patch-probability schedule. The trainer and the methods that change the schedule
(FGE's cycles) read them here."""

from __future__ import annotations

from harness.core.config import TrialConfig


def milestone_epochs(cfg: TrialConfig) -> list[int]:
    """0-indexed epochs at which the lr drops, scaled from the reference budget: 1-indexed milestones
    101/201/226 of 300 are after 100/200/225 epochs, i.e. at 1/3, 2/3 and 3/4 of training."""
    return [round((m - 1) * cfg.epochs / cfg.milestones_budget) for m in cfg.milestones]


def training_progress(cfg: TrialConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The clock of the patch-probability schedule, in (0, 1]: the epoch's number (1-based) over the
    number of epochs, as the authors' (constant within an epoch; the last epoch sits at 1, where p is 0),
    or, with ``p_clock: step``, the share of training done at this step."""
    if cfg.p_clock == "step":
        return (epoch + step / steps_per_epoch) / cfg.epochs
    return (epoch + 1) / cfg.epochs


def learning_rate(cfg: TrialConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear per-step warmup over the first warmup_epochs, then step decay at the milestones."""
    lr = cfg.learning_rate * cfg.lr_gamma ** sum(epoch >= m for m in milestone_epochs(cfg))
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    global_step = epoch * steps_per_epoch + step
    if global_step < warmup_steps:
        lr *= min(1.0, (global_step + 1) / warmup_steps)  # a fractional warmup length must not overshoot
    return lr
