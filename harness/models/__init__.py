"""Network registry: each entry has ``check_shape(depth, width)``, ``networks`` (the families it can be built
as: "multi_io", and those of harness.models.ensembles) and ``build(depth, width, num_classes, num_inputs,
network, **options)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from harness.models.multi_io import MultiIONet
from harness.models.preact_resnet import PreActResNet18
from harness.models.wrn import WideResNet
from harness.registry import Registry

if TYPE_CHECKING:
    from harness.config import TrialConfig

MODELS: Registry = Registry("model")
MODELS.register("wrn")(WideResNet)
MODELS.register("preact_resnet")(PreActResNet18)


def build_model(cfg: TrialConfig, num_classes: int) -> nn.Module:
    """The trial's network: its model's, in the family its method trains (MultiIONet, or harness.models.ensembles)."""
    from harness.methods import METHODS

    method = METHODS.get(cfg.method)
    return MODELS.get(cfg.model).build(
        cfg.depth, cfg.width, num_classes, cfg.num_inputs, network=method.network, **method.network_options(cfg)
    )


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["MODELS", "MultiIONet", "build_model", "count_parameters"]
