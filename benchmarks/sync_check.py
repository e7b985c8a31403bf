"""Check on a GPU that a training step never waits for the host: loader, mixing, model, loss and SGD
run under ``torch.cuda.set_sync_debug_mode("error")``, which raises at the first synchronising call.

    python3 benchmarks/sync_check.py [method ...]
"""

import sys

import torch

from harness.core.config import TrialConfig
from harness.trial.trainer import Trainer


def check(method: str, steps: int = 30) -> str:
    extra = {"M": 2, "b": 2} if method in ("mimo", "linear_mixmo", "cut_mixmo") else {}
    cfg = TrialConfig(
        dataset="synthetic",
        synthetic_size=1024,
        depth=16,
        width=1,
        method=method,
        progress=False,
        device="cuda",
        precision="bf16",
        msda="cutmix" if method == "cut_mixmo" else "none",
        **extra,
    )
    trainer = Trainer(cfg)
    batches = (batch for _ in range(steps + 1) for batch in trainer.train_loader)
    trainer.step(*next(batches), lr=0.01, progress=0.0)  # first step: cuDNN/cuBLAS set-up may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(steps):
            trainer.step(*next(batches), lr=0.01, progress=i / steps)
    except RuntimeError as err:
        return f"{method}: host sync in a step: {err}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return f"{method}: {steps} steps, no host synchronisation"


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("sync_check needs a CUDA device")
    methods = sys.argv[1:] or ["vanilla", "cutmix", "mixup", "mimo", "linear_mixmo", "cut_mixmo"]
    print("\n".join(check(m) for m in methods))
