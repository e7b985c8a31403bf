"""CutMix: a single network with CutMix on its inputs."""

from harness.methods import register_method
from harness.methods.base import Method


@register_method("cutmix")
class CutMix(Method):
    """A single network with CutMix on its inputs (docs/recipe.md §4: alpha = 1, probability 0.5 per sample)."""

    order, color, marker = 2, "#1f77b4", "^"  # the report: tables' order, plots' colour and marker

    sample_augmentation = "cutmix"
