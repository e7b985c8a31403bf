import torch

from harness.methods.base import Method
from harness.methods.mixing import sample_dirichlet


class LinearMixMo(Method):
    """Linear-MixMo: M * sum_i lam_i l_i with lam ~ Dirichlet(alpha) per sample."""

    default_M = 2
    single_network = False

    def linear(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        lams = sample_dirichlet(self.cfg.alpha, self.M, n, device)
        return lams.view(n, self.M, 1, 1, 1), lams

    def mixing(self, n, progress, device):
        return self.linear(n, device)
