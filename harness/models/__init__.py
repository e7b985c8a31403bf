"""Networks: one file each, registered with ``@register_model("name")`` (harness/models/*.py are discovered; a
plugin's file registers the same way). An entry has ``check_shape(depth, width)`` (ValueError for a shape it
cannot build), ``networks`` (the families it can be built as: "multi_io", MixMo's M encoders and heads around
one core, and those of harness.models.ensembles) and ``build(depth, width, num_classes, num_inputs, network,
**options)``, which returns a module mapping images (B, C, H, W) or (B, M, C, H, W) and mixing weights to head
logits (B, M, K)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from harness.core.registry import Registry
from harness.models.layers import Layers
from harness.models.multi_io import MultiIONet

if TYPE_CHECKING:
    from harness.core.config import TrialConfig

MODELS: Registry = Registry("model", package=__name__)
# network families: builders (core factory, stem channels, classes, members, **options) -> a network of M members,
# from a core built with the family's layers (harness.models.ensembles); a model built from a Layers kit (wrn) can
# be built as any of them
NETWORKS: Registry = Registry("network family", package=__name__, word="network")


def register_network(name: str):
    """Decorator on a builder ``(core, stem_channels, num_classes, members, **options) -> nn.Module``: a method with
    ``network = "<name>"`` then trains it, on every model whose ``networks`` include it (wrn: all families)."""
    return NETWORKS.register(name)


def register_model(name: str):
    """Class decorator: ``@register_model("my_resnet")`` makes it ``model: my_resnet`` in trial files."""

    def add(cls):
        missing = [a for a in ("check_shape", "networks", "build") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"@register_model({name!r}): {cls.__name__} has no {', '.join(missing)}")
        return MODELS.register(name)(cls)

    return add


def build_model(cfg: TrialConfig, num_classes: int) -> nn.Module:
    """The trial's network: its model's, in the family its method trains (MultiIONet, or harness.models.ensembles)."""
    from harness.methods import METHODS

    method = METHODS.get(cfg.method)
    return build_network(
        cfg.model, cfg.depth, cfg.width, num_classes, cfg.num_inputs, method.network, method.network_options(cfg),
        method.weight_members(cfg),
    )  # fmt: skip


def build_network(
    model: str, depth: int, width: int, num_classes: int, num_inputs: int, network: str, options: dict, members: int
) -> nn.Module:
    """A model built in a network family; with ``members`` > 1 weight states (a method's ``weight_members``), one
    single-input network per member inside a WeightMembers."""
    from harness.models.weight_members import WeightMembers

    built = MODELS.get(model).build(depth, width, num_classes, 1 if members else num_inputs, network=network, **options)
    return WeightMembers(built, members) if members > 1 else built


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "MODELS",
    "NETWORKS",
    "Layers",
    "MultiIONet",
    "build_model",
    "build_network",
    "count_parameters",
    "register_model",
    "register_network",
]
