"""Members that are weight states of one network (ensembles in time: Snapshot, FGE, SWAG): the network being
trained and S - 1 frozen copies of its weights, kept by the method's hooks (harness.methods.base.Method)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightMembers(nn.Module):
    """S weight states of one network, evaluated as S members.

    Training runs the live network alone (``live``); ``keep(i)`` copies its weights into frozen member i
    (``frozen[i]``, i < S - 1), whose parameters get no gradient. Evaluation runs the frozen members kept so far
    and the live network, and puts their heads side by side: (B, kept x M + M, K), members in the order kept,
    the live network last; the ensemble's prediction averages them like any other heads. Everything is in
    ``state_dict``: a checkpoint resumes the members exactly, and parameter and FLOP counts include every member.
    """

    def __init__(self, network: nn.Module, count: int):
        super().__init__()
        if count < 2:
            raise ValueError(f"WeightMembers needs at least 2 members, got {count}")
        self.live = network
        self.frozen = nn.ModuleList(copy.deepcopy(network) for _ in range(count - 1))
        self.register_buffer("kept", torch.zeros((), dtype=torch.long))  # frozen members holding a state

    @property
    def count(self) -> int:
        return len(self.frozen) + 1

    def mix_size(self, input_size: int) -> int:
        return self.live.mix_size(input_size)

    @torch.no_grad()
    def keep(self, index: int) -> None:
        """Frozen member ``index`` takes the live network's weights (and batch-norm statistics)."""
        self.frozen[index].load_state_dict(self.live.state_dict())
        self.kept.fill_(max(int(self.kept), index + 1))

    def members(self) -> list[nn.Module]:
        """The members evaluated now: the frozen ones kept so far, then the live network."""
        kept = self.count - 1 if self.kept.is_meta else int(self.kept)  # the meta device (FLOP count): all of them
        return [*self.frozen[:kept], self.live]

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            return self.live(x, mix)
        return torch.cat([member(x, mix) for member in self.members()], dim=1)


@torch.no_grad()
def recompute_batch_norm(network: nn.Module, batches) -> None:
    """Batch-norm running statistics recomputed as plain averages over one pass of ``batches`` (images), as
    torch.optim.swa_utils.update_bn does: what SWA's averaged and SWAG's sampled weights need."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    was_training = network.training
    network.train()
    for images in batches():
        network(images)
    for m in norms:
        m.momentum = momenta[m]
    network.train(was_training)
