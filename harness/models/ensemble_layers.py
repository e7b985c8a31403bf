"""The layers of the other ensembling-for-free methods (docs/recipe.md §8). Member-major batches: a batch of
M * n rows holds member 0's n rows, then member 1's, and so on.

- BatchEnsemble (Wen et al. 2020): one shared weight W per layer; member i uses W * (s_i r_i^T), computed as
  ((x * r_i) conv W) * s_i + b_i.
- Packed-Ensembles (Laurent et al. 2023): each layer a grouped convolution of alpha times the channels, M * gamma
  groups: the members are disjoint channel groups of one wide network.
- Masksembles (Durasov et al. 2021): fixed binary channel masks, one per member, before each masked layer.
- MC-Dropout (Gal & Ghahramani 2016): dropout that stays on at test time; its draws are seeded in evaluation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.models.multi_io import TRUNCATED_STD


def _per_member(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(M, C) factors -> broadcastable over a member-major batch x (M * n, C, ...) viewed as (M, n, C, ...)."""
    return v.view(v.shape[0], 1, v.shape[1], *([1] * (x.dim() - 2)))


class BatchEnsembleConv2d(nn.Module):
    """A convolution whose M members share W and differ by rank-1 fast weights r_i (input channels) and s_i
    (output channels); r and s start at N(1, 0.5) (uncertainty-baselines' random_sign_init = -0.5)."""

    def __init__(self, members: int, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.members = members
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
        self.r = nn.Parameter(torch.empty(members, in_ch))
        self.s = nn.Parameter(torch.empty(members, out_ch))
        reset_fast_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.members
        x = (x.unflatten(0, (m, -1)) * _per_member(self.r, x)).flatten(0, 1)
        y = self.conv(x)
        return (y.unflatten(0, (m, -1)) * _per_member(self.s, y)).flatten(0, 1)


class BatchEnsembleLinear(nn.Module):
    """The classifier of a BatchEnsemble: shared W, fast weights r_i, s_i and a bias b_i per member."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members = members
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.r = nn.Parameter(torch.empty(members, in_features))
        self.s = nn.Parameter(torch.empty(members, out_features))
        self.bias = nn.Parameter(torch.zeros(members, out_features))
        reset_fast_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.members
        y = self.linear(x.unflatten(0, (m, -1)) * self.r[:, None])
        return (y * self.s[:, None] + self.bias[:, None]).flatten(0, 1)


def reset_fast_weights(layer: nn.Module) -> None:
    nn.init.normal_(layer.r, mean=1.0, std=0.5)
    nn.init.normal_(layer.s, mean=1.0, std=0.5)


def is_fast_weight(name: str) -> bool:
    """BatchEnsemble's r and s (parameter names end in .r / .s): no L2, half the lr (uncertainty-baselines)."""
    return name.endswith((".r", ".s"))


def packed_groups(in_ch: int, alpha: float, members: int, gamma: int, first: bool = False) -> int:
    """Groups of a packed convolution: 1 for the first layer (it reads the image), else M * gamma, gamma lowered
    while a group would have fewer than 64 input channels (torch-uncertainty's PackedConv2d rule)."""
    if first:
        return 1
    extended = int(in_ch * alpha)
    groups = members * gamma
    while (extended % groups or extended // groups < 64) and groups // members > 1:
        gamma -= 1
        groups = members * gamma
    return groups


def packed_conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, alpha: float, members: int, gamma: int, first=False
) -> nn.Conv2d:
    """A Packed-Ensembles convolution: alpha times the channels (the image's 3 stay 3), grouped."""
    groups = packed_groups(in_ch, alpha, members, gamma, first)
    return nn.Conv2d(
        in_ch if first else int(in_ch * alpha),
        int(out_ch * alpha),
        kernel,
        stride=stride,
        padding=padding,
        bias=False,
        groups=groups,
    )


class GroupedLinear(nn.Module):
    """The Packed-Ensembles classifier: group i maps its share of the features to member i's K logits."""

    def __init__(self, in_features: int, out_per_group: int, groups: int):
        super().__init__()
        if in_features % groups:
            raise ValueError(f"{in_features} features do not split into {groups} members")
        self.groups = groups
        fan_in = in_features // groups
        std = math.sqrt(2.0 / fan_in) / TRUNCATED_STD  # He, as init_weights draws every other layer
        self.weight = nn.Parameter(torch.empty(groups, out_per_group, fan_in))
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        self.bias = nn.Parameter(torch.zeros(groups, out_per_group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in) -> (B, groups, out_per_group)."""
        x = x.unflatten(1, (self.groups, -1))
        return torch.einsum("bgi,goi->bgo", x, self.weight) + self.bias


def generate_masks(channels: int, members: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Masksembles' masks (M, channels) of 0/1, as the reference generates them (nikitadurasov/masksembles,
    torch-uncertainty's generation_wrapper): each mask keeps the same number of channels, every channel is kept
    by at least one mask, and ``scale`` sets the overlap (1: identical masks; larger: less overlap)."""
    if channels < 10:
        raise ValueError(f"Masksembles needs at least 10 channels per masked layer, got {channels}")
    if not 1 <= scale <= 6:
        raise ValueError(f"mask_scale must be in [1, 6] (the reference's range), got {scale}")

    def draw(ones: int, s: float) -> np.ndarray:
        total = int(ones * s)
        masks = np.zeros((members, total))
        for row in masks:
            row[rng.choice(total, ones, replace=False)] = 1
        return masks[:, ~np.all(masks == 0, axis=0)]

    def sized(ones: int, s: float) -> np.ndarray:
        expected = int(ones * s * (1 - (1 - 1 / s) ** members))
        masks = draw(ones, s)
        while masks.shape[1] != expected:
            masks = draw(ones, s)
        return masks

    ones = int(channels / (scale * (1 - (1 - 1 / scale) ** members)))
    masks = sized(ones, scale)
    up, down = 4 * scale, max(0.2 * scale, 1.0)
    s = (down + up) / 2
    while masks.shape[1] != channels:  # bisect the scale until the masks span exactly `channels`
        masks = sized(ones, s)
        if masks.shape[1] < channels:
            down = s
        elif masks.shape[1] > channels:
            up = s
        s = (down + up) / 2
    return masks


class Masks(nn.Module):
    """M fixed binary channel masks (a buffer: saved with the checkpoint), member i's on its rows."""

    def __init__(self, channels: int, members: int, scale: float, rng: np.random.Generator):
        super().__init__()
        self.members = members
        masks = generate_masks(channels, members, scale, rng)
        self.register_buffer("masks", torch.tensor(masks, dtype=torch.float32))  # on the default device (meta, too)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unflatten(0, (self.members, -1)) * _per_member(self.masks, x).to(x.dtype)).flatten(0, 1)


class MCDropout(nn.Module):
    """Dropout on in training and at test time. In evaluation its masks come from a generator re-seeded at every
    call, so the same images give the same T samples (evaluation is reproducible)."""

    def __init__(self, p: float, seed: int):
        """``seed``: this layer's own (the network gives each layer another), so layers draw independently."""
        super().__init__()
        self.p, self.seed = p, seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.dropout(x, self.p, training=True)
        if x.device.type == "meta":  # shapes only (FLOP counts)
            return x
        gen = self._generators.setdefault(x.device, torch.Generator(device=x.device))
        gen.manual_seed(self.seed)
        keep = torch.rand(x.shape, generator=gen, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)
