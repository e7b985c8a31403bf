"""WideResNet-d-w with pre-activation basic blocks, as in the MixMo authors' code (docs/recipe.md §2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.models.multi_io import MultiIONet

BN_MOMENTUM = 0.1


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3. The stride sits on the second conv, TF-"SAME" style
    (pad right/bottom by one, no padding); the 1x1 projection shortcut reads the raw input."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=BN_MOMENTUM)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1 if stride == 1 else 0, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else nn.Identity()
        )

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = F.relu(self.bn2(out))
        if self.stride != 1:
            out = F.pad(out, (0, 1, 0, 1))
        return self.conv2(out) + self.shortcut(x)


class WideResNetCore(nn.Sequential):
    def __init__(self, depth: int, width: int, stem_channels: int = 16):
        n = (depth - 4) // 6
        layers, in_planes = [], stem_channels
        for planes, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            for i in range(n):
                layers.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        layers += [
            nn.BatchNorm2d(in_planes, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
        super().__init__(*layers)
        self.out_features = in_planes


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

    @staticmethod
    def build(depth: int, width: int, num_classes: int, num_inputs: int) -> MultiIONet:
        core = WideResNetCore(depth, width)
        return MultiIONet(core, core.out_features, num_classes, num_inputs, encoder_channels=16, encoder_stride=1)
