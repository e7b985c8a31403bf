"""Data parallelism: the worker's place in the process group, batch norm over the global batch, and
the launch of a trial's N workers through Ray Train.

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
from typing import Callable

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
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
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
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
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


# --- Ray Train: a trial as N workers

def _worker_loop(config: dict) -> None:
    import ray.train

    from harness.config import TrialConfig
    from harness.storage import working_copy
    from harness.trainer import Trainer

    world = current_world()
    copy = working_copy(TrialConfig.model_validate(config["trial"]), rank=world.rank)
    cfg = copy.cfg
    torch.set_num_threads(max(1, int(config.get("threads", 1))))

    def on_epoch(row: dict) -> None:
        if copy.store:  # rank 0's checkpoint.pt goes up after every rank's part of it
            if not world.is_main:
                copy.push()
            barrier()
            if world.is_main:
                copy.push()
        ray.train.report({**row, "trial_id": cfg.trial_id})

    Trainer(cfg, log=lambda s: None).run(on_epoch=on_epoch, restart=config.get("restart", False))
    copy.push()  # rank 0: the metrics and logits


def run_on_workers(cfg, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, restart: bool = False,
                   on_epoch: Callable[[dict], None] | None = None) -> None:
    """Run the trial as ``cfg.workers_per_trial`` data-parallel workers (Ray Train's TorchTrainer: gloo on
    CPUs, NCCL on GPUs). Inside a Tune trial, the workers' per-epoch rows reach Tune. Call with Ray up."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    callbacks = []
    if _in_tune_session():
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    elif on_epoch is not None:
        callbacks.append(_EpochCallback(on_epoch))
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"trial": cfg.model_dump(mode="json"), "threads": max(1, int(cpus_per_worker)), "restart": restart},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers_per_trial, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=cfg.trial_id, storage_path=str((cfg.trial_dir / ".ray_train").resolve()),
            failure_config=ray.train.FailureConfig(max_failures=0),  # retries are Tune's: they resume from checkpoint.pt
            callbacks=callbacks,
        ),
    )
    trainer.fit()


def _epoch_callback_class():
    from ray.train.v2.api.callback import UserCallback

    class EpochCallback(UserCallback):
        def __init__(self, on_epoch):
            self.on_epoch = on_epoch

        def after_report(self, run_context, metrics, checkpoint):
            self.on_epoch(metrics[0])

    return EpochCallback


def _EpochCallback(on_epoch):  # noqa: N802 - a class built on first use, so importing this module needs no Ray
    return _epoch_callback_class()(on_epoch)
