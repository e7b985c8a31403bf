"""WideResNet-d-w with pre-activation basic blocks, as in the MixMo authors' code (docs/recipe.md §2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.models import NETWORKS, register_model
from harness.models.layers import Layers
from harness.models.multi_io import MultiIONet


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3. The stride sits on the second conv, TF-"SAME" style
    (pad right/bottom by one, no padding); the 1x1 projection shortcut reads the raw input. ``layers`` builds
    the convolutions and norms (another method's layers: harness.models.ensembles) and what sits after the
    first convolution (MC-Dropout's dropout, as in the original WRN and uncertainty-baselines)."""

    def __init__(self, in_planes: int, planes: int, stride: int, layers: Layers | None = None):
        super().__init__()
        kit = layers or Layers()
        self.stride = stride
        self.bn1 = kit.norm(in_planes)
        self.conv1 = kit.conv(in_planes, planes, 3, 1, 1)
        self.after_conv1 = kit.after_conv1() if kit.after_conv1 else nn.Identity()
        self.bn2 = kit.norm(planes)
        self.conv2 = kit.conv(planes, planes, 3, stride, 1 if stride == 1 else 0)
        projection = stride != 1 or in_planes != planes
        self.shortcut = kit.conv(in_planes, planes, 1, stride, 0) if projection else nn.Identity()

    def forward(self, x):
        out = self.after_conv1(self.conv1(F.relu(self.bn1(x))))
        out = F.relu(self.bn2(out))
        if self.stride != 1:
            out = F.pad(out, (0, 1, 0, 1))
        return self.conv2(out) + self.shortcut(x)


class _Families:
    """MultiIONet's "multi_io" and every registered network family: a WRN core is built from any Layers kit."""

    def __iter__(self):
        return iter(["multi_io", *NETWORKS.names()])

    def __contains__(self, name: str) -> bool:
        return name == "multi_io" or name in NETWORKS


class WideResNetCore(nn.Sequential):
    def __init__(self, depth: int, width: int, stem_channels: int = 16, layers: Layers | None = None):
        kit = layers or Layers()
        n = (depth - 4) // 6
        blocks, in_planes = [], stem_channels
        for planes, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            for i in range(n):
                blocks.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1, kit))
                in_planes = planes
        blocks += [kit.norm(in_planes), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        super().__init__(*blocks)
        self.out_features = kit.channels(in_planes)


@register_model("wrn")
class WideResNet:
    """WRN-d-w: depth d = 6n + 4 (n blocks in each of 3 groups), width multiplier w."""

    @staticmethod
    def check_shape(depth: int, width: int) -> None:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(
                f"WideResNet depth {depth} does not fit the rule depth = 6n + 4 with n >= 1 "
                f"(allowed: 10, 16, 22, 28, 34, 40, ...)"
            )
        if width < 1:
            raise ValueError(f"WideResNet width must be an integer >= 1, got {width}")

    networks = _Families()

    @staticmethod
    def build(depth: int, width: int, num_classes: int, num_inputs: int, network: str = "multi_io", **options):
        """MultiIONet (M encoders and heads around one core), or another family's network (NETWORKS) of
        ``num_inputs`` members with its ``options``."""
        if network != "multi_io":
            return NETWORKS.get(network)(
                lambda layers: WideResNetCore(depth, width, 16, layers), 16, num_classes, num_inputs, **options
            )
        core = WideResNetCore(depth, width)
        return MultiIONet(core, core.out_features, num_classes, num_inputs, encoder_channels=16, encoder_stride=1)
