"""The multi-input multi-output wrapper: M encoders, a mixing block, a shared core, M heads.

Models know mixing weights, not methods: ``mix`` is a (B, M, 1, h, w) tensor (h = w = 1 for a
linear mix) that scales each encoded input before the sum; ``None`` is the plain sum, used at
test time, where the same image goes to every encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# std of a unit normal truncated at +-2 (TensorFlow's variance-scaling initialiser divides by it, and so do
# the authors: the truncated draw then has exactly He's std sqrt(2 / fan_in))
TRUNCATED_STD = 0.87962566103423978


def init_weights(module: nn.Module, head_std: float | None = None) -> None:
    """Conv and linear weights ~ normal truncated at 2 std, scaled so that their std is exactly He's
    sqrt(2 / fan_in); ``head_std``: the heads from N(0, head_std) instead; zero biases; BN at identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(2.0 / fan_in) / TRUNCATED_STD
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MultiIONet(nn.Module):
    """MixMo's network (Rame et al. 2021, §3): M encoders (one convolution over the M inputs' channels, grouped),
    the mixing block (the encoded inputs weighted by ``mix`` and summed), one shared core (any module mapping the
    mixed features to a feature vector: the WRN or PreActResNet body) and M linear heads.

    ``forward(x, mix)``: x (B, M, C, H, W), M images per row (training), or (B, C, H, W), the same image to every
    encoder (evaluation); mix (B, M, 1, h, w) or None -> logits (B, M, K), head i predicting input i. In training
    the heads are the members being trained; in evaluation they are the ensemble's members, averaged by the
    suite's rule. ``mix_size(resolution)``: h = w, the side of the encoded feature map the masks apply to."""

    def __init__(
        self,
        core: nn.Module,
        core_features: int,
        num_classes: int,
        num_inputs: int,
        encoder_channels: int,
        encoder_stride: int,
        in_channels: int = 3,
        head_std: float | None = None,
    ):
        super().__init__()
        self.num_inputs, self.num_classes = num_inputs, num_classes
        self.encoder_stride = encoder_stride
        # M encoders as one grouped conv: group i sees input i only (same parameters as M convs).
        self.encoders = nn.Conv2d(
            in_channels * num_inputs,
            encoder_channels * num_inputs,
            3,
            stride=encoder_stride,
            padding=1,
            bias=False,
            groups=num_inputs,
        )
        self.core = core
        # M heads as one linear layer: rows [i*K, (i+1)*K) are head i.
        self.heads = nn.Linear(core_features, num_classes * num_inputs)
        init_weights(self)
        if head_std is not None:  # PreActResNet: the authors draw its linear head(s) from N(0, 0.01)
            nn.init.normal_(self.heads.weight, std=head_std)

    def mix_size(self, input_size: int) -> int:
        """Side of the encoded feature map on which masks are applied."""
        return (input_size - 1) // self.encoder_stride + 1

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, M, C, H, W) or (B, C, H, W) (the same image to all encoders) -> logits (B, M, K)."""
        m = self.num_inputs
        if x.dim() == 4:
            x = x.unsqueeze(1).expand(-1, m, -1, -1, -1)
        b, _, c, h, w = x.shape
        x = x.reshape(b, m * c, h, w)
        if self.encoders.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # follow the weights' layout (NHWC on GPUs)
        encoded = self.encoders(x)
        if m > 1:
            encoded = encoded.view(b, m, -1, *encoded.shape[-2:])
            encoded = (encoded if mix is None else encoded * mix).sum(1)
        elif mix is not None:
            encoded = encoded * mix[:, 0]
        return self.heads(self.core(encoded)).view(b, m, self.num_classes)
