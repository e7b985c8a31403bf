from harness.methods.base import Method


class CutMix(Method):
    """A single network with CutMix on its inputs (spec: alpha = 1, probability 0.5 per sample)."""

    sample_augmentation = "cutmix"
