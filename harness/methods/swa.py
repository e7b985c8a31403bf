"""Stochastic Weight Averaging (Izmailov et al., UAI 2018): the weights of the last epochs averaged, batch-norm
statistics recomputed for the average (docs/recipe.md)."""

from __future__ import annotations

import torch

from harness.methods import register_method
from harness.methods.time_ensembles import Averaging
from harness.models.weight_members import recompute_batch_norm


@register_method("swa")
class SWA(Averaging):
    """Stochastic Weight Averaging (Izmailov et al., 2018): the weights at the end of each epoch from swa_start on,
    averaged into one network whose batch-norm statistics are recomputed."""

    order, color, marker = 62, "#17becf", "h"
    single_network = True  # one averaged network: M = 1

    def __init__(self, cfg, num_classes: int, mix_size: int, partners=None):
        super().__init__(cfg, num_classes, mix_size, partners)
        self.average: dict[str, torch.Tensor] = {}
        self.averaged = 0

    @torch.no_grad()
    def after_epoch(self, loop) -> None:
        if not self.collects(loop.epoch):
            return
        current = self.weights(loop.model)
        if not self.averaged:
            self.average = {k: v.clone() for k, v in current.items()}
        else:  # the running mean, as Izmailov et al.'s moving_average(swa_model, model, 1 / (n + 1))
            for k, v in current.items():
                self.average[k] += (v - self.average[k]) / (self.averaged + 1)
        self.averaged += 1

    @torch.no_grad()
    def after_training(self, loop) -> None:
        if not self.averaged:
            return
        params = dict(loop.model.named_parameters())
        for k, v in self.average.items():
            params[k].copy_(v)
        recompute_batch_norm(loop.model, loop.train_images)

    def state_dict(self) -> dict:
        return {"average": self.average, "averaged": self.averaged}

    def load_state_dict(self, state: dict) -> None:
        self.average, self.averaged = state.get("average", {}), state.get("averaged", 0)
