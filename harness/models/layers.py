"""How a network's cores build their layers: plain convolutions and batch norms by default; another method's
layers (BatchEnsemble, Packed-Ensembles, Masksembles, MC-Dropout; harness.models.ensembles) by another kit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

BN_MOMENTUM = 0.1


def plain_conv(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Module:
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)


def batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


@dataclass(frozen=True)
class Layers:
    """``conv(in, out, kernel, stride, padding)`` and ``norm(channels)`` take the architecture's nominal channel
    counts; ``channels`` maps one to the tensor's (Packed-Ensembles: alpha times); ``after_conv1`` makes the module
    a residual block puts after its first convolution (None: nothing)."""

    conv: Callable[[int, int, int, int, int], nn.Module] = plain_conv
    norm: Callable[[int], nn.Module] = batch_norm
    channels: Callable[[int], int] = lambda c: c
    after_conv1: Callable[[], nn.Module] | None = None
