from harness.methods.base import Method


class CutMix(Method):
    """A single network with CutMix on its inputs (docs/recipe.md §4: alpha = 1, probability 0.5 per sample)."""

    sample_augmentation = "cutmix"
