"""The one way a trial is trained in a process: one worker here, or N data-parallel workers through Ray
Train; under Ray Tune (a sweep's trial, `harness run`) or alone (`harness train`).

``train_trial`` is the entry point. With an object store the trial works in a node-local copy that it
mirrors after every epoch (harness.store.object_store); a failure leaves its traceback in ``error.txt``.
"""

from __future__ import annotations

import logging
import traceback

import torch

from harness.core import logs, plugins, schema
from harness.core.config import TrialConfig
from harness.core.parallel import barrier, current_world
from harness.store.errors import ResourceError, out_of_memory
from harness.store.object_store import CACHE_ONLY, working_copy
from harness.store.trial_folder import TrialFolder
from harness.trial import catalog
from harness.trial.preemption import Drained, stop_at_checkpoint
from harness.trial.trainer import EpochCallback, StepCallback, Trainer

logger = logging.getLogger(__name__)


def train_trial(
    cfg: TrialConfig,
    *,
    restart: bool = False,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    on_epoch: EpochCallback | None = None,
    on_step: StepCallback | None = None,
) -> dict:
    """Train ``cfg`` to the end (resuming from its checkpoint) and return its metrics. ``on_epoch(row)``
    runs after each epoch's checkpoint has reached the storage; ``on_step`` (one worker only) after each
    step. Several workers run under Ray, which must be up (harness.execution.cluster.start_ray)."""
    several = cfg.workers_per_trial > 1
    # one worker trains here, on this node's copy; several workers each mirror a copy of their own,
    # and this process only needs their results
    local = working_copy(cfg, skip=CACHE_ONLY if several else frozenset())
    folder = TrialFolder(local.cfg.trial_dir)
    try:
        if several:
            run_on_workers(local.cfg, cpus_per_worker, gpus_per_worker, restart, on_epoch)
            local.pull()
            return folder.metrics()

        def epoch_done(row: dict) -> None:
            local.push()  # the checkpoint reaches the object store before anyone hears of the epoch
            if on_epoch is not None:
                on_epoch(row)
            stop_at_checkpoint(cfg.trial_dir, row["epoch"], cfg.epochs)  # the sweep drains: stop here

        metrics = Trainer(local.cfg).run(on_epoch=epoch_done, restart=restart, on_step=on_step)
        local.push()
        return metrics
    except Drained:
        raise
    except Exception as err:  # not SystemExit: Tune ends finished trials that way
        folder.fail(traceback.format_exc() + _plain_reason(err))
        try:
            local.push()
        except Exception as upload:  # the trial's own error is the one to raise
            logger.warning(f"{cfg.trial_id}: could not upload its {schema.ERROR} to {cfg.store}: {upload}")
        raise


def _plain_reason(err: Exception) -> str:
    """A last line for error.txt (what `harness status` shows) that says what ran out."""
    if out_of_memory(err):
        return "\nout of memory: lower batch_size or the width, or give each trial more memory (resources)\n"
    if isinstance(err, ResourceError):
        return f"\n{err}\n"
    return ""


# --- N workers through Ray Train
def _worker_loop(config: dict) -> None:
    """One rank of a trial of several workers (run by Ray Train in its own process)."""
    import ray.train

    world = current_world()
    local = working_copy(catalog.in_worker(config["trial"], config.get("plugins")), rank=world.rank)
    cfg = local.cfg
    torch.set_num_threads(max(1, int(config.get("threads", 1))))

    def on_epoch(row: dict) -> None:
        if local.store:  # rank 0's checkpoint.pt goes up after every rank's part of it
            if not world.is_main:
                local.push()
            barrier()
            if world.is_main:
                local.push()
        ray.train.report({**row, "trial_id": cfg.trial_id})

    logs.setup(logging.WARNING)  # a Ray Train worker: the driver shows what it reports, and warnings
    Trainer(cfg).run(on_epoch=on_epoch, restart=config.get("restart", False))
    local.push()  # rank 0: the metrics and logits


def run_on_workers(
    cfg: TrialConfig,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    restart: bool = False,
    on_epoch: EpochCallback | None = None,
) -> None:
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
        callbacks.append(_epoch_callback(on_epoch))
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "trial": cfg.model_dump(mode="json"),
            "plugins": plugins.shipped(),
            "threads": max(1, int(cpus_per_worker)),
            "restart": restart,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers_per_trial, use_gpu=use_gpu, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=cfg.trial_id,
            storage_path=str((cfg.trial_dir / schema.RAY_TRAIN_DIR).resolve()),
            failure_config=ray.train.FailureConfig(
                max_failures=0
            ),  # retries are Tune's: they resume from checkpoint.pt
            callbacks=callbacks,
        ),
    )
    trainer.fit()


def _epoch_callback(on_epoch: EpochCallback):
    """A Ray Train callback that hands each reported epoch row to ``on_epoch`` (built here: Ray is imported late)."""
    from ray.train.v2.api.callback import UserCallback

    class EpochCallback(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            on_epoch(metrics[0])

    return EpochCallback()
