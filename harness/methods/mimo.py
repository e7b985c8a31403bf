"""MIMO: the encoded inputs summed with equal ratios (the base class's mixing)."""

from harness.methods import register_method
from harness.methods.base import Method


@register_method("mimo")
class MIMO(Method):
    """MIMO (Havasi et al. 2021): the encoded inputs are summed; lam = 1/M, so every loss weight is 1."""

    order, color, marker = 3, "#9467bd", "D"  # the report: tables' order, plots' colour and marker

    default_M = 2
    single_network = False
