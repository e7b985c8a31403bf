"""Where a training step's GPU time goes: torch.profiler over a few steps, the top kernels by CUDA time.

python3 benchmarks/profile_step.py [--set key=value ...] [--steps 5]
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from harness.core.config import load_trial_config
from harness.trial.trainer import Trainer


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    cfg = load_trial_config(
        None,
        [
            "dataset=synthetic",
            "synthetic_size=4096",
            "synthetic_classes=100",
            "progress=false",
            "method=cut_mixmo",
            "M=2",
            "b=4",
            *args.set,
        ],
    )
    trainer = Trainer(cfg)
    batches = iter(trainer.train_loader)
    for _ in range(10):
        trainer.step(*next(batches), lr=1e-3, progress=0.5)
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            trainer.step(*next(batches), lr=1e-3, progress=0.5)
        sync()
    print(
        f"{cfg.model}-{cfg.depth}-{cfg.width} {cfg.method} batch {cfg.batch_size} {cfg.precision} "
        f"compile={cfg.compile}: "
        f"{args.steps} steps"
    )
    print(
        prof.key_averages().table(
            sort_by="self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total",
            row_limit=args.rows,
            max_name_column_width=70,
        )
    )


if __name__ == "__main__":
    main()
