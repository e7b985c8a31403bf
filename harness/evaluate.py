"""`harness evaluate`: finished trials, from their checkpoints, on more evaluation sets, without retraining.

Per (trial, set): the network is rebuilt from checkpoint.pt (read weights-only), each part of the set
(a corruption, the OOD images) is predicted and its head logits saved in float16 under
<trial>/eval/<set>/, then the set's metrics are computed from the saved logits and written last
(eval/<set>/metrics.json). A saved part is never predicted again and a recorded set is skipped, so the
command resumes where it stopped and a second run recomputes nothing. Several trials run as Ray tasks on
a local Ray of the command's own (or the cluster --address names); one or two run in this process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from harness import catalog, logs, plugins, results, schema
from harness.config import ConfigError, TrialConfig
from harness.data.datasets import DATASETS
from harness.data.errors import DataError
from harness.data.eval_sets import EvalSet, TrialData, check_eval_set, expand_protocol
from harness.data.loader import EvalLoader
from harness.engines import Inference, place_model
from harness.engines.inference import predict
from harness.eval_kinds import kind_of, record_problem

if TYPE_CHECKING:
    from harness.suite import Suite

logger = logging.getLogger(__name__)
IN_PROCESS_UP_TO = 2  # more trials than this to evaluate: Ray tasks, in parallel


class Network:
    """A finished trial's network from its last checkpoint, predicting as its trainer did (same precision,
    memory format and batch size)."""

    def __init__(self, folder: results.TrialFolder, cfg: TrialConfig, device: torch.device):
        from harness.models import build_model

        state = folder.read_checkpoint(schema.CHECKPOINT)
        if state is None or state["epoch"] != cfg.epochs:
            got = "none" if state is None else f"epoch {state['epoch']}"
            raise results.CorruptFile(
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
    from harness.storage import working_copy
    from harness.trainer import resolve_device

    local = working_copy(cfg)
    folder = results.TrialFolder(local.cfg.trial_dir)
    state = folder.state()
    if state.state != "finished":
        raise results.CorruptFile(folder.path, f"not finished ({state.state}); `harness run` finishes it first")
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
        except results.CorruptFile as err:
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


# --- many trials
def finished_trials(target: Path, data_dir: str | None = None) -> tuple[Suite | None, list[TrialConfig]]:
    """(the suite, or None for a results folder; its finished trials). A results folder's trials are read from
    their config files (one written by an older recipe version is skipped, with a warning); a suite in an object
    store is first copied here without checkpoints (each evaluation fetches its own)."""
    from harness.storage import CACHE_ONLY

    suite = None
    if target.is_dir():
        from harness.status import trials_in_folder

        trials = []
        for cfg, path in trials_in_folder(target)[0]:
            cfg = cfg.model_copy(update={"output_dir": path.parent.parent, "name": path.parent.name, "store": None})
            if cfg.trial_id != path.name:
                logger.warning("%s: written by an older recipe version; skipped", path.name)
                continue
            if data_dir:
                cfg = cfg.model_copy(update={"data_dir": Path(data_dir).resolve()})
            missing = catalog.plugins_missing(cfg)
            if missing:
                raise ConfigError(missing)
            trials.append(cfg)
    else:
        from harness.suite import expand, load_suite

        suite = load_suite(target, data_dir=data_dir)
        trials = expand(suite, str(target))
        if suite.store:
            suite.store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    states = {t.trial_id: results.TrialFolder(t.trial_dir).state() for t in trials}
    finished = [t for t in trials if states[t.trial_id].state == "finished"]
    corrupt = [f"{tid}: {s.detail}" for tid, s in states.items() if s.state == "corrupt"]
    for line in corrupt:  # a finished trial whose checkpoint no longer reads is one of them
        logger.warning(f"{line}; skipped (`harness run` recomputes it)")
    if not finished:
        why = f"{len(corrupt)} corrupt, " if corrupt else ""
        raise ConfigError(f"{target}: no finished trial to evaluate ({why}run `harness run` first)")
    if len(finished) < len(trials):
        logger.warning("%d trial(s) not finished: skipped", len(trials) - len(finished))
    return suite, finished


def pending(trials: list[TrialConfig], sets: list[EvalSet], force: bool = False) -> list[TrialConfig]:
    """The finished trials with a set not yet evaluated (all finished ones with ``force``)."""
    out = []
    for cfg in trials:
        folder = results.TrialFolder(cfg.trial_dir)
        if not folder.is_finished():
            continue
        if force or any(_missing(folder, s) for s in sets):
            out.append(cfg)
    return out


def _missing(folder: results.TrialFolder, spec: EvalSet) -> bool:
    try:
        return folder.evaluation(spec.id, record_problem) is None
    except results.CorruptFile:
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


def evaluate_trials(
    trials: list[TrialConfig],
    sets: list[EvalSet],
    *,
    address: str | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    device: str = "auto",
    force: bool = False,
) -> tuple[dict[str, dict[str, dict]], dict[str, str]]:
    """Evaluate the trials that need it: -> (records by trial id, failures by trial id)."""
    todo = pending(trials, sets, force)
    done: dict[str, dict[str, dict]] = {}
    failed: dict[str, str] = {}
    for cfg in trials:
        folder = results.TrialFolder(cfg.trial_dir)
        if cfg not in todo and folder.is_finished():
            done[cfg.trial_id] = {s.id: folder.evaluation(s.id, record_problem) for s in sets}
    if not todo:
        return done, failed
    logger.info(f"evaluating {len(todo)} trial(s) on {', '.join(s.name for s in sets)}")
    if len(todo) <= IN_PROCESS_UP_TO:
        for i, cfg in enumerate(todo, 1):
            try:
                done[cfg.trial_id] = evaluate_trial(cfg, sets, device, force)
            except (results.CorruptFile, results.ResourceError, DataError, OSError, ValueError) as err:
                failed[cfg.trial_id] = str(err)
            logger.info(f"[{i}/{len(todo)}] {cfg.trial_id} {'failed' if cfg.trial_id in failed else 'evaluated'}")
        return done, failed
    import ray

    from harness.cluster import start_ray

    start_ray(address)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(_task)
    shipped = plugins.shipped()
    running = {
        task.remote(cfg.model_dump(mode="json"), shipped, [s.name for s in sets], device, force): cfg for cfg in todo
    }
    for i in range(1, len(todo) + 1):
        ready, _ = ray.wait(list(running), num_returns=1)
        cfg = running.pop(ready[0])
        try:
            done[cfg.trial_id] = ray.get(ready[0])
        except Exception as err:  # the task's own exception, wrapped by Ray: its last line says what went wrong
            failed[cfg.trial_id] = str(getattr(err, "cause", None) or err).strip().splitlines()[-1][:300]
        outcome = f"failed: {failed[cfg.trial_id]}" if cfg.trial_id in failed else "evaluated"
        logger.info(f"[{i}/{len(todo)}] {cfg.trial_id} {outcome}")
    return done, failed


def _task(config: dict, shipped: list[dict], names: list[str], device: str, force: bool) -> dict[str, dict]:
    from harness.data.eval_sets import parse_eval_set

    logs.setup()  # a Ray task: its lines reach the driver's terminal through Ray's log forwarding
    torch.set_num_threads(1)
    cfg = catalog.in_worker(config, shipped)
    return evaluate_trial(cfg, [parse_eval_set(n) for n in names], device, force)
