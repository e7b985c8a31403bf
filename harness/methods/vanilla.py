"""Vanilla: a single network trained plainly, the baseline every method is compared with."""

from harness.methods import register_method
from harness.methods.base import Method


@register_method("vanilla")
class Vanilla(Method):
    """A single network trained plainly (M = 1, one-hot targets)."""

    order, color, marker = 0, "#555555", "o"  # the report: tables' order, plots' colour and marker
