"""Linear-MixMo (docs/recipe.md §1): the encoded inputs mixed linearly with Dirichlet ratios."""

import numpy as np
import torch

from harness.methods import register_method
from harness.methods.base import Method
from harness.methods.mixing import sample_dirichlet


@register_method("linear_mixmo")
class LinearMixMo(Method):
    """Linear-MixMo: M * sum_i lam_i l_i with lam ~ Dirichlet(alpha) per sample."""

    order, color, marker = 4, "#2ca02c", "P"  # the report: tables' order, plots' colour and marker

    default_M = 2
    single_network = False

    def linear(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        lams = sample_dirichlet(self.cfg.alpha, self.M, n, device)
        return lams.view(n, self.M, 1, 1, 1), lams

    def mixing(self, n, progress, device):
        return self.linear(n, device)

    @classmethod
    def reference_masks(cls, cfg, M, size, progress, rng):
        lams = rng.dirichlet([cfg.alpha] * M).astype(np.float32)
        return lams.reshape(M, 1, 1, 1), lams
