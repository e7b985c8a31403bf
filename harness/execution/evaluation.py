"""`harness evaluate` and a sweep's evaluation sets over many trials: the finished trials of a suite or results
folder, each evaluated (harness.evaluation.evaluate) in this process when they are one or two, else as Ray tasks on
a local Ray of the command's own (or the cluster --address names)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from harness.core import logs, plugins
from harness.core.config import ConfigError, TrialConfig
from harness.data.errors import DataError
from harness.data.eval_sets import EvalSet
from harness.evaluation.evaluate import evaluate_trial, pending
from harness.evaluation.kinds import record_problem
from harness.store.errors import CorruptFile, ResourceError
from harness.store.trial_folder import TrialFolder
from harness.trial import catalog

if TYPE_CHECKING:
    from harness.planning.suite import Suite

logger = logging.getLogger(__name__)

IN_PROCESS_UP_TO = 2  # more trials than this to evaluate: Ray tasks, in parallel


def finished_trials(target: Path, data_dir: str | None = None) -> tuple[Suite | None, list[TrialConfig]]:
    """(the suite, or None for a results folder; its finished trials). A results folder's trials are read from
    their config files (one written by an older recipe version is skipped, with a warning); a suite in an object
    store is first copied here without checkpoints (each evaluation fetches its own)."""
    from harness.store.object_store import CACHE_ONLY

    suite = None
    if target.is_dir():
        from harness.execution.status import trials_in_folder

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
        from harness.planning.suite import expand, load_suite

        suite = load_suite(target, data_dir=data_dir)
        trials = expand(suite, str(target))
        if suite.store:
            suite.store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    states = {t.trial_id: TrialFolder(t.trial_dir).state() for t in trials}
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
        folder = TrialFolder(cfg.trial_dir)
        if cfg not in todo and folder.is_finished():
            done[cfg.trial_id] = {s.id: folder.evaluation(s.id, record_problem) for s in sets}
    if not todo:
        return done, failed
    logger.info(f"evaluating {len(todo)} trial(s) on {', '.join(s.name for s in sets)}")
    if len(todo) <= IN_PROCESS_UP_TO:
        for i, cfg in enumerate(todo, 1):
            try:
                done[cfg.trial_id] = evaluate_trial(cfg, sets, device, force)
            except (CorruptFile, ResourceError, DataError, OSError, ValueError) as err:
                failed[cfg.trial_id] = str(err)
            logger.info(f"[{i}/{len(todo)}] {cfg.trial_id} {'failed' if cfg.trial_id in failed else 'evaluated'}")
        return done, failed
    import ray

    from harness.execution.cluster import start_ray

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
    from harness.evaluation.kinds import parse_eval_set

    logs.setup()  # a Ray task: its lines reach the driver's terminal through Ray's log forwarding
    torch.set_num_threads(1)
    cfg = catalog.in_worker(config, shipped)
    return evaluate_trial(cfg, [parse_eval_set(n) for n in names], device, force)
