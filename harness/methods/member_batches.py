"""Training batches of the ensembling-for-free methods that feed their members directly (no mixing): every
member sees every image (BatchEnsemble, Packed-Ensembles), or each member its own share (Masksembles). Their
references average the loss over the members (docs/recipe.md §8): the targets carry 1/M."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.methods.base import MixedBatch


def shared_images(x: torch.Tensor, y: torch.Tensor, members: int, num_classes: int) -> MixedBatch:
    """Each image to all M members: inputs (n, 1, C, H, W), the network repeats them (uncertainty-baselines tiles
    the batch M times)."""
    n = len(y)
    targets = F.one_hot(y, num_classes).float().unsqueeze(1).expand(n, members, num_classes) / members
    return MixedBatch(x.unsqueeze(1), None, targets, y.unsqueeze(1).expand(n, members))


def split_images(x: torch.Tensor, y: torch.Tensor, members: int, num_classes: int) -> MixedBatch:
    """The batch shared out: member i gets images i, M + i, 2M + i, ... (n / M rows of M images)."""
    n = len(y) - len(y) % members
    inputs, labels = x[:n].unflatten(0, (-1, members)), y[:n].view(-1, members)
    return MixedBatch(inputs, None, F.one_hot(labels, num_classes).float() / members, labels)
