from harness.methods.base import Method


class Vanilla(Method):
    """A single network trained plainly (M = 1, one-hot targets)."""
