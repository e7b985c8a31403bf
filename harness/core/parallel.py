"""Data parallelism at the torch level: the worker's place in the process group, collectives that are
no-ops for one worker, and batch norm over the global batch. A leaf: it imports nothing of the harness
(the Ray Train launch of N workers is in harness.trial.launch).

Every worker builds the same global batch (same seed, same draws: loader, pairing, masks), keeps
its slice of it and averages gradients with the others; batch-norm statistics are summed across
workers. So N workers compute what one worker computes on the whole batch, up to float rounding.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def node_name() -> str:
    """The machine this process runs on: host name, plus the Ray node id inside a Ray cluster (several Ray
    nodes can share a host)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    return socket.gethostname()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_process_group(device: torch.device) -> None:
    """A process group of one when none exists (DeepSpeed needs one even for a single worker; without
    RANK/WORLD_SIZE/... it reaches for MPI). It lives as long as the process: DeepSpeed keeps a handle
    to the first group it saw, so a later trial in the same process reuses it."""
    if dist.is_initialized():
        return
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    atexit.register(dist.destroy_process_group)


def _several_workers() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _several_workers():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if _several_workers():
        dist.all_reduce(values)
    return values


class _AllReduceSum(torch.autograd.Function):
    """Sum over the workers, with the gradient summed back (every worker's loss depends on every input)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics cover the global batch: per-channel sums are all-reduced
    (through autograd, so gradients flow across workers). Runs with gloo on the CPU, where torch's
    SyncBatchNorm does not; identical to BatchNorm2d in a world of one and in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _several_workers()):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() / c, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        scale = torch.rsqrt(var + self.eps) * self.weight
        y = (xf - mean.view(1, c, 1, 1)) * scale.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def globalize_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a GlobalBatchNorm2d holding the same parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(child.weight.device))
        else:
            globalize_batch_norm(child)
    return module


def shard(n: int, world: World, parts: int = 1) -> list[slice]:
    """This worker's ``parts`` micro-batches of a global batch of n entries (n a multiple of world.size * parts)."""
    size = n // (world.size * parts)
    start = world.rank * parts * size
    return [slice(start + i * size, start + (i + 1) * size) for i in range(parts)]
