"""Networks that hold M members in one network without MixMo's multi-input scheme (docs/recipe.md §8): a core
(harness.models.wrn) built from another method's layers, with its stem and classifier. Every network takes
(B, C, H, W), (B, 1, C, H, W) (one image for all members) or (B, M, C, H, W) (an image per member) and returns
head logits (B, M, K), like MultiIONet; models know members and masks, not methods.

A network family is one builder registered with ``@register_network`` (here, or in a plugin's file); a model
(harness.models.MODELS) builds its core with it."""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import torch
from torch import nn

from harness.models import register_network
from harness.models.ensemble_layers import (
    BatchEnsembleConv2d,
    BatchEnsembleLinear,
    GroupedLinear,
    Masks,
    MCDropout,
    packed_conv,
    reset_fast_weights,
)
from harness.models.layers import BN_MOMENTUM, Layers, plain_conv
from harness.models.multi_io import init_weights

CoreFactory = Callable[[Layers], nn.Module]  # layers -> a core with .out_features (nominal-channel input)


def _follow_layout(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    weight = next(p for p in module.parameters() if p.dim() == 4)
    if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)  # follow the weights' layout (NHWC on GPUs)
    return x


class MemberNet(nn.Module):
    """Members as rows of one batch (BatchEnsemble, Masksembles, MC-Dropout): the images, repeated or one per
    member, go through stem, core and head member-major. ``train_members``: how many members a training batch
    feeds (MC-Dropout trains one network: 1)."""

    def __init__(self, stem: nn.Module, core: nn.Module, head: nn.Module, members: int, train_members: int):
        super().__init__()
        self.stem, self.core, self.head = stem, core, head
        self.members, self.train_members = members, train_members

    def mix_size(self, input_size: int) -> int:
        return 1  # nothing is mixed

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        m = self.train_members if self.training else self.members
        if x.dim() == 4:
            x = x.unsqueeze(1)
        if x.shape[1] == 1 and m > 1:
            x = x.expand(-1, m, *x.shape[2:])
        if x.shape[1] != m:
            raise ValueError(f"{x.shape[1]} images per row for a network of {m} members")
        b = x.shape[0]
        x = _follow_layout(x.transpose(0, 1).flatten(0, 1), self.stem)  # member-major
        return self.head(self.core(self.stem(x))).view(m, b, -1).transpose(0, 1)


class PackedNet(nn.Module):
    """Packed-Ensembles: one pass of one image through the grouped network; member i is channel group i."""

    def __init__(self, stem: nn.Module, core: nn.Module, head: GroupedLinear):
        super().__init__()
        self.stem, self.core, self.head = stem, core, head
        self.members = head.groups

    def mix_size(self, input_size: int) -> int:
        return 1

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 5:  # (B, 1, C, H, W): the members share the image
            x = x[:, 0]
        return self.head(self.core(self.stem(_follow_layout(x, self.stem))))


def _norm(channels: Callable[[int], int]) -> Callable[[int], nn.Module]:
    return lambda c: nn.BatchNorm2d(channels(c), momentum=BN_MOMENTUM)


@register_network("batch_ensemble")
def batch_ensemble(core: CoreFactory, stem_channels: int, num_classes: int, members: int) -> nn.Module:
    """Every convolution and the classifier BatchEnsemble layers; batch norms shared (uncertainty-baselines'
    wide_resnet_batchensemble.py)."""

    def conv(in_ch, out_ch, kernel, stride, padding):
        return BatchEnsembleConv2d(members, in_ch, out_ch, kernel, stride, padding)

    body = core(Layers(conv=conv))
    net = MemberNet(conv(3, stem_channels, 3, 1, 1), body, BatchEnsembleLinear(members, body.out_features, num_classes),
                    members, members)  # fmt: skip
    init_weights(net)
    for layer in net.modules():
        if isinstance(layer, (BatchEnsembleConv2d, BatchEnsembleLinear)):
            reset_fast_weights(layer)
    return net


@register_network("packed_ensemble")
def packed_ensemble(
    core: CoreFactory, stem_channels: int, num_classes: int, members: int, alpha: float, gamma: int
) -> nn.Module:
    """Grouped convolutions of alpha times the channels, M * gamma groups; the first layer reads the image whole,
    the classifier gives each member its group (torch-uncertainty's packed WRN-28-10)."""

    def width(c: int) -> int:
        return int(c * alpha)

    def conv(in_ch, out_ch, kernel, stride, padding):
        return packed_conv(in_ch, out_ch, kernel, stride, padding, alpha, members, gamma)

    body = core(Layers(conv=conv, norm=_norm(width), channels=width))
    stem = packed_conv(3, stem_channels, 3, 1, 1, alpha, members, gamma, first=True)
    net = PackedNet(stem, body, GroupedLinear(body.out_features, num_classes, members))
    init_weights(net)  # GroupedLinear keeps its own He draw
    return net


@register_network("masksembles")
def masksembles(
    core: CoreFactory, stem_channels: int, num_classes: int, members: int, scale: float, seed: int
) -> nn.Module:
    """Masks before every convolution of the core and before the classifier; the stem reads the image unmasked
    (torch-uncertainty's masked WRN-28-10). The masks are drawn once from ``seed`` and saved with the weights."""
    rng = np.random.default_rng(seed)

    def conv(in_ch, out_ch, kernel, stride, padding):
        return nn.Sequential(Masks(in_ch, members, scale, rng), plain_conv(in_ch, out_ch, kernel, stride, padding))

    body = core(Layers(conv=conv))
    head = nn.Sequential(Masks(body.out_features, members, scale, rng), nn.Linear(body.out_features, num_classes))
    net = MemberNet(plain_conv(3, stem_channels, 3, 1, 1), body, head, members, members)
    init_weights(net)
    return net


@register_network("mc_dropout")
def mc_dropout(core: CoreFactory, stem_channels: int, num_classes: int, members: int, p: float, seed: int) -> nn.Module:
    """One network with dropout after the first convolution of every block (uncertainty-baselines'
    wide_resnet_dropout.py, residual_dropout); at test time its M = T stochastic passes are the members."""
    seeds = itertools.count(seed * 1000)
    body = core(Layers(after_conv1=lambda: MCDropout(p, next(seeds))))
    net = MemberNet(plain_conv(3, stem_channels, 3, 1, 1), body, nn.Linear(body.out_features, num_classes),
                    members, train_members=1)  # fmt: skip
    init_weights(net)
    return net
