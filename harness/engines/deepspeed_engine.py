"""The DeepSpeed engine: its configuration is built from the recipe (precision, ZeRO stage, gradient
accumulation; the same SGD, lr schedule and L2 term as the torch engine) and written to the trial
folder; raw settings under ``deepspeed:`` are merged over it. The optimizer is torch's SGD handed to
DeepSpeed, so no DeepSpeed op needs compiling for it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.core import schema
from harness.core.parallel import ensure_process_group
from harness.engines import register_engine
from harness.engines.deepspeed_config import deepspeed_config
from harness.engines.inference import Inference
from harness.engines.torch_engine import set_lr, sgd
from harness.store.errors import CorruptFile, refusal

if TYPE_CHECKING:
    from harness.core.config import TrialConfig

CHECKPOINT_DIR = schema.DEEPSPEED_DIR  # inside the trial folder: one tag per epoch, the last two kept


def _safe_globals() -> list:
    """The only classes DeepSpeed's checkpoints pickle besides tensors and containers (ZeRO 0-2, fp32/bf16)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def load_weights_only(path, map_location=None):
    """What DeepSpeed's own loader does with torch.load(weights_only=False), minus code execution: a
    pickle that names any other callable is refused."""
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


@register_engine("deepspeed")
class DeepSpeedEngine:
    """DeepSpeed: ZeRO stage 1 or 2 partitions the optimizer state (and gradients), bf16 weights."""

    channels_last = False  # DeepSpeed needs dense parameters

    @staticmethod
    def weight_dtype(cfg: TrialConfig) -> torch.dtype:
        """bf16 where DeepSpeed's config (raw settings merged) enables it: the weights themselves are cast."""
        return torch.bfloat16 if deepspeed_config(cfg, 1)["bf16"]["enabled"] else torch.float32

    @staticmethod
    def autocast_bf16(cfg: TrialConfig) -> bool:
        return False  # the weights are in their training dtype already

    def __init__(self, cfg: TrialConfig, model: torch.nn.Module, device: torch.device, world):
        import deepspeed

        from harness.engines.compiled_ops import prepare

        prepare()  # a build lock left by a killed process would block deepspeed.initialize forever

        ensure_process_group(device)
        self.config = deepspeed_config(cfg, world.size)
        self.dtype = self.weight_dtype(cfg)  # the model arrives in it (place_model): DeepSpeed casts parameters only
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=sgd(cfg, model), config=self.config)
        self.engine.checkpoint_engine.load = load_weights_only  # every file DeepSpeed reads back goes through it
        self.model = self.engine.module
        self.infer = Inference(cfg, self.model, device)

    def set_lr(self, lr: float) -> None:
        set_lr(self.engine.optimizer, lr)

    def forward(self, inputs: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
        return self.engine(inputs.to(self.dtype), None if mix is None else mix.to(self.dtype))

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        """DeepSpeed scales by 1 / gradient_accumulation_steps itself and steps (zeroing the gradients)
        only at the boundary, which the trainer states rather than DeepSpeed counting micro-steps."""
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss)
        self.engine.step()

    # --- checkpoints: DeepSpeed's own (optimizer partitions, fp32 master weights), every rank writes its part
    def save(self, trial_dir: Path, epoch: int) -> dict:
        folder = Path(trial_dir) / CHECKPOINT_DIR
        tag = f"epoch{epoch}"
        self.engine.save_checkpoint(str(folder), tag=tag)
        # the previous tag stays until the next save: checkpoint.pt still points at it until it is rewritten;
        # every rank prunes (its folder may be its own working copy)
        for old in folder.glob("epoch*"):
            if old.name[5:].isdigit() and int(old.name[5:]) < epoch - 1:
                shutil.rmtree(old, ignore_errors=True)
        return {"deepspeed_tag": tag}

    def verify(self, trial_dir: Path, state: dict) -> None:
        """Every file of the checkpoint's tag reads weights-only (before any of it is loaded), else CorruptFile."""
        import pickle

        folder = Path(trial_dir) / CHECKPOINT_DIR / state["deepspeed_tag"]
        files = sorted(folder.glob("*.pt"))
        if not files:
            raise CorruptFile(folder, "missing: the DeepSpeed state this checkpoint points at")
        for path in files:
            try:
                load_weights_only(path, map_location="cpu")
            except pickle.UnpicklingError as err:
                raise CorruptFile(path, refusal(err)) from None
            except (RuntimeError, EOFError, ValueError, OSError) as err:
                raise CorruptFile(path, f"unreadable ({str(err).splitlines()[0][:200]})") from None

    def load(self, trial_dir: Path, state: dict) -> None:
        self.engine.load_checkpoint(
            str(Path(trial_dir) / CHECKPOINT_DIR),
            tag=state["deepspeed_tag"],
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )

    def config_files(self) -> dict:
        return {schema.DEEPSPEED_CONFIG: self.config}
