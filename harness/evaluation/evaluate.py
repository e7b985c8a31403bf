"""A finished trial, from its checkpoint, on more evaluation sets, without retraining (`harness evaluate` and
the sweep's evaluation sets run it over many trials: harness.execution.evaluation).

Per (trial, set): the network is rebuilt from checkpoint.pt (read weights-only), each part of the set
(a corruption, the OOD images) is predicted and its head logits saved in float16 under
<trial>/eval/<set>/, then the set's metrics are computed from the saved logits and written last
(eval/<set>/metrics.json). A saved part is never predicted again and a recorded set is skipped, so the
command resumes where it stopped and a second run recomputes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from harness.core import schema
from harness.core.config import TrialConfig
from harness.data.datasets import DATASETS
from harness.data.errors import DataError
from harness.data.eval_sets import EvalSet, TrialData
from harness.data.loader import EvalLoader
from harness.engines import Inference, place_model
from harness.engines.inference import predict
from harness.evaluation.kinds import check_eval_set, expand_protocol, kind_of, record_problem
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder

logger = logging.getLogger(__name__)


class Network:
    """A finished trial's network from its last checkpoint, predicting as its trainer did (same precision,
    memory format and batch size)."""

    def __init__(self, folder: TrialFolder, cfg: TrialConfig, device: torch.device):
        from harness.models import build_model

        state = folder.read_checkpoint(schema.CHECKPOINT)
        if state is None or state["epoch"] != cfg.epochs:
            got = "none" if state is None else f"epoch {state['epoch']}"
            raise CorruptFile(
                folder / schema.CHECKPOINT, f"the final network (epoch {cfg.epochs}) is needed, found {got}"
            )
        num_classes = cfg.class_subset or DATASETS.get(cfg.dataset).shape(cfg.synthetic_classes)[0]
        model = build_model(cfg, num_classes)
        model.load_state_dict(state["model"])
        self.infer = Inference(cfg, place_model(cfg, model, device).eval(), device)
        self.cfg, self.device = cfg, device
        spec = DATASETS.get(cfg.dataset)  # evaluation sets are normalised as the trial's training data
        self.mean, self.std = spec.mean, spec.std

    def predict(self, arrays) -> torch.Tensor:
        """Head logits (N, M, K) in float32 on the CPU (harness.engines.inference.predict, as in training)."""
        return predict(self.infer, EvalLoader(arrays, self.cfg.eval_batch_size, self.mean, self.std, self.device))[0]


def evaluate_trial(
    cfg: TrialConfig,
    sets: list[EvalSet],
    device: str = "auto",
    force: bool = False,
    on_set: Callable[[EvalSet], None] | None = None,
) -> dict[str, dict]:
    """Evaluate one finished trial on ``sets``; returns every set's record (evaluated now or before).
    ``on_set(set)`` is called before a set is evaluated. With an object store, the trial's folder is copied
    here (checkpoint included) and the results sent back."""
    from harness.store.object_store import working_copy
    from harness.trial.trainer import resolve_device

    local = working_copy(cfg)
    folder = TrialFolder(local.cfg.trial_dir)
    state = folder.state()
    if state.state != "finished":
        raise CorruptFile(folder.path, f"not finished ({state.state}); `harness run` finishes it first")
    records, network = {}, None
    try:
        sets = expand_protocol(sets, cfg.dataset)  # ood:near / ood:far: OpenOOD's sets for the trial's dataset
    except ValueError as err:
        raise DataError(str(err)) from None
    for spec in sets:
        kind = kind_of(spec)
        if force:
            folder.set_eval_aside(spec.id)  # the old record comes back unless the new one completes
        else:
            folder.settle_eval(spec.id)  # a forced run that stopped: its complete record, new or old
        fingerprint = kind.fingerprint(spec, local.cfg)
        try:
            record = folder.evaluation(spec.id, record_problem)
        except CorruptFile as err:
            logger.warning(f"{err}; evaluated again")
            record = None
        if record is not None and record.get("fingerprint") != fingerprint:
            logger.warning(
                f"{cfg.trial_id}: {spec.name}: recorded on other images (fingerprint "
                f"{record.get('fingerprint') or 'not recorded'}, now {fingerprint}); evaluated again"
            )
            folder.set_eval_aside(spec.id)
            record = None
        if record is None:
            if on_set is not None:
                on_set(spec)
            t0 = time.perf_counter()
            try:
                folder.begin_eval(spec.id, fingerprint)
                if network is None:
                    network = Network(folder, local.cfg, resolve_device(device))
                record = kind.evaluate(folder, local.cfg, spec, network)
            finally:
                if record is None:  # failed or interrupted: a forced run's old record back
                    folder.settle_eval(spec.id)
            record.update(
                set=spec.name,
                id=spec.id,
                kind=spec.kind,
                fingerprint=fingerprint,
                trial_id=cfg.trial_id,
                eval_time_s=time.perf_counter() - t0,
                device_name=torch.cuda.get_device_name(network.device) if network.device.type == "cuda" else "cpu",
            )
            folder.finish_eval(spec.id, record)
            folder.settle_eval(spec.id)
            local.push()
            logger.info(f"{cfg.trial_id}: {spec.name}: {headline(record)} ({record['eval_time_s']:.0f} s)")
        records[spec.id] = record
    return records


def headline(record: dict) -> str:
    """One line of a set's record, for the terminal."""
    return kind_of(record).headline(record)


def pending(trials: list[TrialConfig], sets: list[EvalSet], force: bool = False) -> list[TrialConfig]:
    """The finished trials with a set not yet evaluated (all finished ones with ``force``)."""
    out = []
    for cfg in trials:
        folder = TrialFolder(cfg.trial_dir)
        if not folder.is_finished():
            continue
        if force or any(_missing(folder, s) for s in sets):
            out.append(cfg)
    return out


def _missing(folder: TrialFolder, spec: EvalSet) -> bool:
    try:
        return folder.evaluation(spec.id, record_problem) is None
    except CorruptFile:
        return True


def check_sets(trials: list[TrialConfig], sets: list[EvalSet]) -> None:
    """Every set readable for every kind of trial, before anything runs (DataError says what is missing)."""
    for trial in {TrialData.of(cfg) for cfg in trials}:
        try:
            expanded = expand_protocol(sets, trial.dataset)
        except ValueError as err:
            raise DataError(str(err)) from None
        for spec in expanded:
            check_eval_set(spec, trial)
