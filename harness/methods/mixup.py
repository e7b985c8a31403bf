from harness.methods.base import Method


class Mixup(Method):
    """A single network with Mixup on its inputs (docs/recipe.md §4: alpha = 1, probability 0.5 per sample)."""

    sample_augmentation = "mixup"
