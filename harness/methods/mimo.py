from harness.methods.base import Method


class MIMO(Method):
    """MIMO (Havasi et al. 2021): the encoded inputs are summed; lam = 1/M, so every loss weight is 1."""

    default_M = 2
    single_network = False
