"""Mixup: a single network with Mixup on its inputs."""

from harness.methods import register_method
from harness.methods.base import Method


@register_method("mixup")
class Mixup(Method):
    """A single network with Mixup on its inputs (docs/recipe.md §4: alpha = 1, probability 0.5 per sample)."""

    order, color, marker = 1, "#8c564b", "v"  # the report: tables' order, plots' colour and marker

    sample_augmentation = "mixup"
