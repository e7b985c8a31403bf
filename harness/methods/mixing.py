"""Mixing primitives shared by the methods: ratios, box masks, loss weights, the patch schedule."""

from __future__ import annotations

import numpy as np
import torch


def sample_beta(alpha: float, n: int, device) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) (from torch's global RNG)."""
    a = torch.full((n,), float(alpha), device=device)
    return torch.distributions.Beta(a, a, validate_args=False).sample()  # validation would sync with the host


def sample_dirichlet(alpha: float, m: int, n: int, device) -> torch.Tensor:
    """(n, m) ratios ~ Dirichlet(alpha, ..., alpha), one row per sample."""
    concentration = torch.full((n, m), float(alpha), device=device)
    return torch.distributions.Dirichlet(concentration, validate_args=False).sample()


def box_masks(area: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Binary (n, 1, H, W) masks, 1 inside a box of sides floor(W sqrt(area)) x floor(H sqrt(area))
    centred uniformly over the map and clipped at its borders (the CutMix box)."""
    n, dev = area.shape[0], area.device
    side = area.clamp(0, 1).sqrt()
    cut_w, cut_h = (width * side).floor().long(), (height * side).floor().long()
    cx = torch.randint(0, width, (n,), device=dev)
    cy = torch.randint(0, height, (n,), device=dev)
    x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    cols = torch.arange(width, device=dev)
    rows = torch.arange(height, device=dev)
    in_x = (cols >= x1[:, None]) & (cols < x2[:, None])
    in_y = (rows >= y1[:, None]) & (rows < y2[:, None])
    return (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1).float()


def loss_weights(lams: torch.Tensor, r: float) -> torch.Tensor:
    """w_i = M lam_i^(1/r) / sum_j lam_j^(1/r) over the last dim: r = 1 is proportional to lam,
    larger r flattens the weights towards 1 (docs/recipe.md §1)."""
    powered = lams.clamp_min(0) ** (1.0 / r)
    return lams.shape[-1] * powered / powered.sum(-1, keepdim=True).clamp_min(1e-12)


def patch_probability(p: float, progress: float, decay_start: float) -> float:
    """Probability of the patch (cut) mix at training progress t in [0, 1]: p until decay_start,
    then linear to 0 at the end (docs/recipe.md §1: p(t) = 0.5 (1 - t) / (1/12) for t >= 11/12)."""
    if progress < decay_start or decay_start >= 1:
        return p
    return max(0.0, p * (1 - progress) / (1 - decay_start))


def box(area: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The CutMix box as the authors draw it: sides floor(W sqrt(area)) x floor(H sqrt(area)), centre
    uniform, clipped at the borders -> float mask (H, W)."""
    side = np.sqrt(np.clip(area, 0, 1))
    cut_w, cut_h = int(width * side), int(height * side)
    cx, cy = rng.integers(width), rng.integers(height)
    x1, x2 = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
    y1, y2 = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
    mask = np.zeros((height, width), np.float32)
    mask[y1:y2, x1:x2] = 1
    return mask
