"""Cut-MixMo (docs/recipe.md §1): the encoded inputs mixed by a binary box mask with probability p(t), else linearly."""

import numpy as np
import torch

from harness.methods import register_method
from harness.methods.linear_mixmo import LinearMixMo
from harness.methods.mixing import box, box_masks, patch_probability


@register_method("cut_mixmo")
class CutMixMo(LinearMixMo):
    """Cut-MixMo: per batch, with probability p(t), a binary box mask of area lam_k gives input k's
    features and its complement the others' (a linear mix of them when M > 2); otherwise the batch
    is mixed linearly. The boxed input k is drawn per batch (role shuffling). Branch-free, so
    no host synchronisation per step."""

    order, color, marker = 5, "#d62728", "*"  # the report: tables' order, plots' colour and marker

    def mixing(self, n, progress, device):
        linear_masks, lams = self.linear(n, device)
        boxed = torch.nn.functional.one_hot(torch.randint(0, self.M, (1,), device=device), self.M).float()
        s = self.mix_size
        box = box_masks((lams * boxed).sum(1), s, s).unsqueeze(1)  # (n, 1, 1, s, s)
        others = lams * (1 - boxed)
        others = others / others.sum(1, keepdim=True).clamp_min(1e-12)
        cut_masks = box * boxed.view(1, self.M, 1, 1, 1) + (1 - box) * others.view(n, self.M, 1, 1, 1)
        p = patch_probability(self.cfg.p, progress, self.cfg.p_decay_start)
        use_cut = torch.rand((), device=device) < p
        masks = torch.where(use_cut, cut_masks, linear_masks.expand_as(cut_masks))
        return masks, masks.mean((2, 3, 4))  # lam reset to each mask's actual mean

    @classmethod
    def reference_masks(cls, cfg, M, size, progress, rng):
        """Drawn per sample (cut or linear, which input gets the box): the same marginal law as ``mixing``."""
        lams = rng.dirichlet([cfg.alpha] * M).astype(np.float32)
        masks = np.broadcast_to(lams.reshape(M, 1, 1, 1), (M, 1, size, size)).copy()
        if rng.random() < patch_probability(cfg.p, progress, cfg.p_decay_start):
            k = rng.integers(M)
            cut = box(lams[k], size, size, rng)
            others = np.delete(lams, k)
            others = others / max(others.sum(), 1e-12)
            masks[np.arange(M) != k] = (1 - cut) * others.reshape(-1, 1, 1, 1)
            masks[k, 0] = cut
        return masks, masks.mean((1, 2, 3))
