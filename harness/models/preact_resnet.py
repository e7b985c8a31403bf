"""PreActResNet-18-w for Tiny ImageNet (docs/recipe.md §2): a 3x3 stride-2 stem to 64 channels,
no max-pool, four stages of two pre-activation blocks with 64w, 128w, 256w, 512w channels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from harness.models import register_model
from harness.models.multi_io import MultiIONet


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False) if stride != 1 or in_planes != planes else None
        )

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class PreActResNetCore(nn.Sequential):
    def __init__(self, width: int, stem_channels: int = 64, blocks=(2, 2, 2, 2)):
        layers, in_planes = [], stem_channels
        for stage, n in enumerate(blocks):
            planes = 64 * width * 2**stage
            for i in range(n):
                layers.append(PreActBlock(in_planes, planes, 2 if stage > 0 and i == 0 else 1))
                in_planes = planes
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # the authors' network: no BN-ReLU before the pooling
        super().__init__(*layers)
        self.out_features = in_planes


@register_model("preact_resnet")
class PreActResNet18:
    @staticmethod
    def check_shape(depth: int, width: int) -> None:
        if depth != 18:
            raise ValueError(f"preact_resnet has depth 18 only, got depth {depth}")
        if width < 1:
            raise ValueError(f"preact_resnet width must be an integer >= 1, got {width}")

    networks = ("multi_io",)

    @staticmethod
    def build(depth: int, width: int, num_classes: int, num_inputs: int, network: str = "multi_io") -> MultiIONet:
        core = PreActResNetCore(width)
        return MultiIONet(
            core, core.out_features, num_classes, num_inputs, encoder_channels=64, encoder_stride=2, head_std=0.01
        )
