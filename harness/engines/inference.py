"""The network's placement and prediction as its engine runs them: one path for training's evaluations and for
`harness evaluate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from harness.core import environment
from harness.engines.registry import ENGINES

if TYPE_CHECKING:
    from harness.core.config import TrialConfig


def _engine(cfg: TrialConfig):
    return ENGINES.get(cfg.engine)


def weight_dtype(cfg: TrialConfig) -> torch.dtype:
    """The dtype of the network's weights, as the trial's engine trains them (its ``weight_dtype``)."""
    return _engine(cfg).weight_dtype(cfg)


def place_model(cfg: TrialConfig, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The network on ``device`` in the dtype and memory format its engine trains and predicts with: channels_last
    (NHWC feeds the tensor cores) by default on CUDA, where the engine takes it (its ``channels_last``)."""
    model.to(device=device, dtype=weight_dtype(cfg))
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    if channels_last and _engine(cfg).channels_last:
        model.to(memory_format=torch.channels_last)
    return model


class Inference:
    """Prediction as the trial's engine computes it (training's evaluations and `harness evaluate` alike): the
    images cast to the weights' dtype, under bf16 autocast where the engine trains so (its ``autocast_bf16``); the
    eager module (a compiled training module is not used for prediction)."""

    def __init__(self, cfg: TrialConfig, model: torch.nn.Module, device: torch.device):
        self.model, self.device_type = model, device.type
        self.dtype = weight_dtype(cfg)
        self.autocast = _engine(cfg).autocast_bf16(cfg)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(x.to(self.dtype))


@torch.no_grad()
def predict(infer: Inference, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The one prediction loop (training's evaluations, `harness evaluate`): head logits (N, M, K) in float32 on the
    CPU and the labels of every (images, labels) batch; the same image goes to every encoder."""
    infer.model.eval()
    outs, labels = [], []
    for x, y in batches:
        outs.append(infer(x).float().cpu())
        labels.append(y.cpu())
    if not outs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(labels)


INFERENCE_BATCH = 256  # the batch of the inference-cost measurement (every method, every trial)


@torch.no_grad()
def measure_inference(infer: Inference, resolution: int, device: torch.device) -> dict:
    """Test images per second through the network (all its members) at batch 256 in the trial's precision, and
    the peak memory of that inference (CUDA only: None on the CPU, where torch keeps no such count). Two warm-up
    batches, then batches until $HARNESS_INFERENCE_S seconds (default 1) have passed, at least 3; with 0 seconds one
    timed batch and no warm-up (a figure for the record only: the tests' setting)."""
    import time

    min_seconds = environment.seconds("HARNESS_INFERENCE_S")
    infer.model.eval()
    x = torch.randn(INFERENCE_BATCH, 3, resolution, resolution, device=device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda *a: None)
    warm_up, least = (2, 3) if min_seconds > 0 else (0, 1)
    for _ in range(warm_up):
        infer(x)
    sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    batches, t0 = 0, time.perf_counter()
    while batches < least or time.perf_counter() - t0 < min_seconds:
        infer(x)
        batches += 1
        sync(device)
    seconds = time.perf_counter() - t0
    return {
        "inference_images_per_s": batches * INFERENCE_BATCH / seconds,
        "inference_peak_memory_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else None,
    }
