"""One trial: train with the paper's recipe, checkpoint every epoch, evaluate, write the result folder.

Follow it top to bottom: ``Trainer.run`` -> ``train_epoch`` (loader batch -> method.prepare ->
model -> method.loss -> SGD step) -> ``evaluate``. A killed trial resumes from its last
end-of-epoch checkpoint (model, optimizer, RNG states) and ends with the same result.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np
import torch

from harness.core import schema
from harness.core.config import ConfigError, TrialConfig
from harness.core.parallel import all_reduce_sum, barrier, current_world, globalize_batch_norm, node_name, shard
from harness.core.schedule import learning_rate, training_progress
from harness.data import build_train_loader, check_same_data, data_fingerprint, load_dataset
from harness.data.loader import EvalLoader
from harness.engines import build_engine, place_model
from harness.engines.inference import INFERENCE_BATCH, measure_inference, predict
from harness.methods import METHODS
from harness.methods.base import Loop, Method
from harness.metrics import correct, epoch_metrics, final_metrics, metric_code
from harness.models import build_model, count_parameters
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder
from harness.trial.cost import inference_flops_per_image

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict], None]
StepCallback = Callable[[int, int, int], None]  # (epoch index, steps done in it, steps per epoch)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def check_batch(method: str, batch, logits: torch.Tensor) -> None:
    """A method's MixedBatch against the heads it trains: targets (B, heads, K) and labels (B, heads), the model's
    logits' shape; a mismatch would broadcast one head's targets to the others and train wrongly without a word."""
    rows, heads, classes = logits.shape
    expected = {"targets": (rows, heads, classes), "labels": (rows, heads)}
    for name, shape in expected.items():
        got = tuple(getattr(batch, name).shape)
        if got != shape:
            raise ConfigError(
                f"method {method!r}: MixedBatch.{name} has shape {got}, the model's {heads} head(s) need {shape} "
                f"(B rows, a {name[:-1]} per head{', K classes' if name == 'targets' else ''}); see help(MixedBatch)"
            )


class Trainer:
    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dir = cfg.trial_dir
        self.folder = TrialFolder(self.dir)
        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once per shape
        self.data = load_dataset(cfg)
        self.cfg = cfg = cfg.model_copy(update={"data_fingerprint": data_fingerprint(cfg)})  # what was read
        d = self.data
        self.world = current_world()
        model = build_model(cfg, d.num_classes).to(self.device)
        if self.world.size > 1:
            globalize_batch_norm(model)  # statistics over the global batch, as on one worker
        place_model(cfg, model, self.device)
        resolution = d.train.x.shape[1]
        self.train_loader = build_train_loader(cfg, d, self.device)
        self.method = METHODS.get(cfg.method)(cfg, d.num_classes, model.mix_size(resolution))
        if self.method.msda != "none" and cfg.msda_partner == "dataset":
            self.method.partners = self.train_loader.sample  # Mixup/CutMix partners: any training image
        self.engine = build_engine(cfg, model, self.device, self.world)
        self.model = self.engine.model
        self.loop = Loop(  # what the method's hooks see (Method.after_step, after_epoch, after_training)
            self.model,
            getattr(self.engine, "optimizer", None),
            cfg.epochs,
            len(self.train_loader),
            lambda: (images for images, _ in self.train_loader),
        )
        self.trained_out = False  # Method.after_training has run (and was checkpointed)
        self._checked = False  # the first step's batch against the model's heads (check_batch)
        self.eval_loaders: dict[str, EvalLoader] = {}
        self.history: list[dict] = []
        self.epochs_done = 0
        self.elapsed = 0.0
        if self.world.is_main:
            logger.info(
                f"{cfg.trial_id}: {len(d.train)} train / {len(d.test)} test images from {d.source}; "
                f"{len(self.train_loader)} steps/epoch on {self.device}"
            )

    # --- state
    def state(self) -> dict:
        """Collective under DeepSpeed (every rank writes its part of the engine's state)."""
        state = {
            "model": self.model.state_dict(),
            "engine": self.engine.save(self.dir, self.epochs_done),
            "epoch": self.epochs_done,
            "history": self.history,
            "elapsed": self.elapsed,
            "rng_cpu": torch.get_rng_state(),
            "method": self.method.state_dict(),
            "trained_out": self.trained_out,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.engine.load(self.dir, state["engine"])
        self.epochs_done, self.history, self.elapsed = state["epoch"], state["history"], state["elapsed"]
        self.method.load_state_dict(state.get("method", {}))
        self.trained_out = state.get("trained_out", False)
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    # --- training
    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, progress: float):
        """One optimizer step on a loader batch; no host sync. Every worker prepares the same global batch
        and trains on its slice, in grad_accum_steps micro-batches. -> this worker's (summed loss, correct
        head predictions, entries)."""
        cfg = self.cfg
        loss_sum = torch.zeros((), device=self.device)
        right = torch.zeros((), device=self.device)
        batch = self.method.prepare(x, y, progress=progress)
        pieces = self.world.size * cfg.grad_accum_steps
        rows = len(batch.labels)  # a row per image (per M images where each member gets its own: masksembles)
        n = rows - rows % pieces  # a short last batch loses the few entries that do not split evenly
        if n == 0:  # a short last batch (drop_last: false) with fewer rows than micro-batches: nothing to train on
            return loss_sum, right, 0
        self.engine.set_lr(lr)
        parts = shard(n, self.world, cfg.grad_accum_steps)
        for i, part in enumerate(parts):
            micro = batch.select(part)
            logits = self.engine.forward(micro.inputs, micro.mix)
            if not self._checked:
                check_batch(cfg.method, micro, logits)
                self._checked = True
            loss = self.method.loss(logits, micro)
            self.engine.backward(loss, boundary=i == len(parts) - 1)  # averaged over micro-batches and workers
            loss_sum += loss.detach() * len(micro.labels)
            right += correct(logits.detach(), micro.labels).float().mean(1).sum()
        return loss_sum, right, n // self.world.size

    def train_epoch(self, epoch: int, progress_bar=None, on_step: StepCallback | None = None) -> dict:
        cfg = self.cfg
        self.model.train()
        steps = len(self.train_loader)
        totals = torch.zeros(3, device=self.device)  # loss sum, correct, entries: on the device, one sync per epoch
        for step, (x, y) in enumerate(self.train_loader):
            lr = self.method.schedule(learning_rate(cfg, epoch, step, steps), epoch, step, steps)
            loss_sum, correct, count = self.step(x, y, lr, progress=training_progress(cfg, epoch, step, steps))
            self.loop.epoch, self.loop.step, self.loop.lr = epoch, step + 1, lr
            self.method.after_step(self.loop)
            totals[0] += loss_sum
            totals[1] += correct
            totals[2] += count
            if on_step is not None:
                on_step(epoch, step + 1, steps)
            if progress_bar is not None:
                progress_bar.update(1)
                if step % 50 == 0:
                    progress_bar.set_postfix(loss=f"{(loss_sum / max(count, 1)).item():.3f}", lr=f"{lr:.4f}")
        loss_sum, correct, seen = all_reduce_sum(totals).tolist()  # over the workers
        return {"lr": lr, "train_loss": loss_sum / seen, "train_top1": correct / seen}

    def predict(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Head logits (N, M, K) of the "test" or "val" split in float32 on the CPU, and labels. Each split is
        uploaded to the device once."""
        if split not in self.eval_loaders:
            d = self.data
            self.eval_loaders[split] = EvalLoader(
                getattr(d, split), self.cfg.eval_batch_size, d.mean, d.std, self.device
            )
        return predict(self.engine.infer, self.eval_loaders[split])

    def resume(self) -> bool:
        """Load the newest checkpoint that reads (weights-only; DeepSpeed's files checked first), setting
        unreadable ones aside; False when none does (the trial starts from scratch)."""
        for name in schema.CHECKPOINTS:
            try:
                state = self.folder.read_checkpoint(name)
                if state is None:
                    continue
                self.engine.verify(self.dir, state["engine"])
            except CorruptFile as err:
                aside = self.folder.set_aside(name) if self.world.is_main else None
                logger.warning(f"{err}; {'kept as ' + aside.name if aside else 'skipped'}, trying an older checkpoint")
                continue
            self.load_state(state)
            return True
        return False

    def run(
        self, on_epoch: EpochCallback | None = None, restart: bool = False, on_step: StepCallback | None = None
    ) -> dict:
        """Train the remaining epochs and evaluate. With several workers every rank runs this; rank 0
        alone writes the result folder and evaluates. ``on_step(epoch, step, steps)`` is called after
        every optimizer step (no host sync), ``on_epoch(row)`` after every checkpoint."""
        cfg, main, folder = self.cfg, self.world.is_main, self.folder
        if not restart and (self.dir / schema.CONFIG).exists():
            check_same_data(cfg, folder.config())  # never resume, nor return, results of other data
        if not restart and folder.state(thorough=True).state == "finished":  # damaged logits are recomputed
            logger.info(f"{self.dir}: already finished")
            return folder.metrics()
        if not restart and self.resume():
            if main:
                logger.info(f"resuming {cfg.trial_id} after epoch {self.epochs_done}/{cfg.epochs}")
                for stale in (schema.METRICS, schema.LOGITS, schema.ERROR, schema.STOPPED):  # unreadable, a failure's
                    (self.dir / stale).unlink(missing_ok=True)
        elif main:
            folder.clear()
        node = node_name()
        if main:
            folder.begin(
                cfg.record(),
                node,
                self.epochs_done,
                self.engine.config_files(),
            )
        barrier()
        bar = _progress_bar(cfg, len(self.train_loader), self.epochs_done) if main else None
        for epoch in range(self.epochs_done, cfg.epochs):
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, **self.train_epoch(epoch, bar, on_step), "node": node}
            self.method.after_epoch(self.loop)  # before the evaluation and the checkpoint: what it keeps resumes
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(
                    f"{cfg.trial_id}: the training loss is {row['train_loss']} after epoch "
                    f"{epoch + 1} (lr {cfg.learning_rate:g}): training diverged; lower base_lr "
                    f"or check the schedule"
                )
            if main and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                logits, labels = self.predict(schema.TEST)
                row.update(epoch_metrics(logits, labels, cfg.ensemble_average))
                if self.data.val is not None:  # what a study's ASHA ranks configurations by (harness.planning.tuning)
                    logits, labels = self.predict(schema.VAL)
                    row.update(epoch_metrics(logits, labels, cfg.ensemble_average, split=schema.VAL))
            row["epoch_time_s"] = time.perf_counter() - t0
            self.elapsed += row["epoch_time_s"]
            row["elapsed_s"] = self.elapsed
            self.history.append(row)
            self.epochs_done = epoch + 1
            state = self.state()  # every rank: DeepSpeed writes its partitions
            if main:
                folder.save_epoch(state, self.history)
                if bar is not None:
                    bar.set_description(_epoch_summary(row, cfg.epochs))
                else:
                    logger.info(_epoch_summary(row, cfg.epochs))
            if on_epoch is not None:
                on_epoch(row)
        if bar is not None:
            bar.close()
        if not self.trained_out and type(self.method).after_training is not Method.after_training:
            # once, checkpointed: a trial resumed after it evaluates what it saved
            t0 = time.perf_counter()
            self.method.after_training(self.loop)
            self.elapsed += time.perf_counter() - t0  # training time (SWAG: a batch-norm pass per sample)
            self.trained_out = True
            state = self.state()
            if main:
                folder.save_epoch(state, self.history)
        if main:
            folder.finish(*self.evaluate())
        barrier()
        return folder.metrics() if main else {}  # other ranks may work elsewhere

    def evaluate(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Final metrics and the trial's facts (metrics.json), and the logits to save beside them."""
        cfg, resolution = self.cfg, self.data.train.x.shape[1]
        t0 = time.perf_counter()
        logits, labels = self.predict(schema.TEST)
        eval_time = time.perf_counter() - t0
        arrays = {schema.TEST_LOGITS: logits.half().numpy(), schema.TEST_LABELS: labels.numpy().astype(np.int64)}
        val_logits = val_labels = None
        if self.data.val is not None:
            val_logits, val_labels = self.predict(schema.VAL)
            arrays[schema.VAL_LOGITS] = val_logits.half().numpy()
            arrays[schema.VAL_LABELS] = val_labels.numpy().astype(np.int64)
        metrics = final_metrics(logits, labels, val_logits, val_labels, average=cfg.ensemble_average)
        facts = schema.TrialFacts(
            trial_id=cfg.trial_id,
            epochs=cfg.epochs,
            test_images=len(labels),
            train_images=len(self.data.train),
            device=str(self.device),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            data_source=self.data.source,
            engine=cfg.engine,
            workers=self.world.size,
            nodes=self.folder.nodes(),
            inference_batch=INFERENCE_BATCH,
            ensemble_average=cfg.ensemble_average,
        )
        # the cost, the point of ensembling "for free": parameters, time, FLOPs and measured speed, all members
        cost = {
            "num_params": count_parameters(self.model),
            "train_time_s": self.elapsed,
            "eval_time_s": eval_time,
            **({"metric_code": code} if (code := metric_code()) else {}),
            "inference_gflops": inference_flops_per_image(cfg, self.data.num_classes, resolution) / 1e9,
            **measure_inference(self.engine.infer, resolution, self.device),
        }
        return {**metrics, **cost, **facts.record()}, arrays


def _epoch_summary(row: dict, epochs: int) -> str:
    text = f"epoch {row['epoch']}/{epochs} loss {row['train_loss']:.3f} train {100 * row['train_top1']:.1f}%"
    if "test_top1" in row:
        text += f" test {100 * row['test_top1']:.2f}%"
    return text


def _progress_bar(cfg: TrialConfig, steps_per_epoch: int, epochs_done: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    total = steps_per_epoch * cfg.epochs
    return tqdm(
        total=total,
        initial=steps_per_epoch * epochs_done,
        unit="step",
        dynamic_ncols=True,
        desc=f"{cfg.trial_id}",
        mininterval=1.0,
    )
