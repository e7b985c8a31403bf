"""Ray Tune glue: the suite's trials as one Tune grid (resources per trial, retries, the callback that feeds the
progress view and the tracker); -> each failed trial's error."""

from __future__ import annotations

import os
import time

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from harness.core import logs, plugins, schema
from harness.core.config import TrialConfig
from harness.execution.cluster import check_resources, start_ray
from harness.execution.gpu_sharing import GpuSharing
from harness.execution.plan import gpu_fraction, load_rates
from harness.execution.progress import Progress, TrialReport
from harness.execution.trainable import run_trial
from harness.planning.suite import Suite
from harness.planning.tuning import Study, rung_metric, rung_scores
from harness.store.filesystems import check_cluster_storage
from harness.store.lock import SuiteLock
from harness.store.object_store import CACHE_ONLY
from harness.store.trial_folder import TrialFolder
from harness.tracker.tracking import BackgroundTracker, Tracker
from harness.trial import preemption
from harness.trial.cost import trial_flops


def trial_case(cfg: TrialConfig) -> dict:
    """A trial as one value of the Tune grid (``config["case"]``): its id and its config, without a progress bar (a
    Ray worker reports to the driver instead)."""
    return {"trial_id": cfg.trial_id, "trial": {**cfg.model_dump(mode="json"), "progress": False}}


def trial_resources(suite: Suite, gpus: dict[str, float]):
    """Per-trial resource request. ``resources`` are per worker: a one-worker trial holds them itself (its GPU
    share from ``gpus``, by trial id: a packed trial asks for a fraction); a trial of N workers only drives its
    Ray Train workers, which reserve N x resources of their own."""
    from ray.tune import PlacementGroupFactory

    def request(config: dict) -> PlacementGroupFactory:
        if config["case"]["trial"].get("workers_per_trial", 1) > 1:
            return PlacementGroupFactory(
                [{"memory": 1}]
            )  # a token: Ray refuses an all-zero bundle, any CPU would be missed
        return PlacementGroupFactory([{"CPU": suite.resources.cpus, "GPU": gpus[config["case"]["trial_id"]]}])

    return request


class SweepCallback(tune.Callback):
    """Feeds the progress view and the tracker from Tune's events (in the driver)."""

    def __init__(self, progress: Progress, tracking: BackgroundTracker):
        self.progress, self.tracking = progress, tracking

    def __getstate__(self):  # Tune pickles its config with the experiment state; this holds live objects
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.progress.start(_tid(trial))
        self.progress.show(force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        tid = _tid(trial)
        self.progress.retries[tid] = self.progress.retries.get(tid, 0) + 1
        print(f"trial {tid} failed; retrying from its last checkpoint (retry {self.progress.retries[tid]})", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid, report = _tid(trial), TrialReport.from_tune(result)
        if report.done:
            return
        self.progress.update(tid, report)
        if report.is_epoch_end:  # an epoch's row: the trial folder has something new for MLflow
            self.tracking.update(self.progress.trials[tid].trial_dir)
        self.progress.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        trial_dir = self.progress.trials[_tid(trial)].trial_dir
        drained = preemption.requested(trial_dir.parent) and not TrialFolder(trial_dir).is_finished()
        self.progress.end(_tid(trial), ok=None if drained else True)  # drained: pending again, resumed later
        self.tracking.update(trial_dir)
        self.progress.show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.end(_tid(trial), ok=False)
        self.progress.show(force=True)


def _tid(trial) -> str:
    return trial.config["case"]["trial_id"]


class _Named:
    """What ASHA reads of a trial: its id (here the harness's, the same across runs of the suite)."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


class StudyScheduler(FIFOScheduler):
    """A study's early stopping: Ray Tune's ASHAScheduler, one per setting, so a configuration is only ever compared
    with its own method's; trials outside the search (the final phase, the recipe) always go on. Each ASHA is first
    replayed the epochs the setting's trials recorded in earlier runs (a resumed study decides with what it knew);
    a stopped trial gets stopped.json, which keeps the next run from resuming it."""

    def __init__(self, study: Study):
        super().__init__()
        tune_cfg = study.tune
        self.rung = rung_metric(tune_cfg.select)
        self.stopped: dict[str, float] = {}
        self._setting: dict[str, tuple[ASHAScheduler, TrialConfig]] = {}
        for trials in study.search.values():
            epochs = max(t.epochs for t in trials)
            asha = ASHAScheduler(
                time_attr="epoch",
                metric=self.rung,
                mode="max" if self.rung.endswith("top1") else "min",
                max_t=epochs,
                grace_period=min(tune_cfg.grace_epochs, epochs),
                reduction_factor=tune_cfg.reduction_factor,
                stop_last_trials=False,  # the last epoch's report comes before the trial's evaluation: never stop it
            )
            history = {t.trial_id: rung_scores(t.trial_dir) for t in trials}
            for t in trials:
                self._setting[t.trial_id] = (asha, t)
                asha.on_trial_add(None, _Named(t.trial_id))
            for epoch in sorted({e for rows in history.values() for e in rows}):  # epoch by epoch, as they ran
                for tid, rows in history.items():
                    if self.rung in rows.get(epoch, {}):
                        asha.on_trial_result(None, _Named(tid), {"epoch": epoch, self.rung: rows[epoch][self.rung]})

    def on_trial_add(self, tune_controller, trial) -> None:
        pass  # every search trial was added to its ASHA at construction

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        tid = _tid(trial)
        if tid not in self._setting:
            return TrialScheduler.CONTINUE
        asha, cfg = self._setting[tid]
        if result.get("epoch", 0) >= cfg.epochs:  # trained to the end: its evaluation comes after this report
            return TrialScheduler.CONTINUE
        action = asha.on_trial_result(tune_controller, _Named(tid), result)
        if action == TrialScheduler.STOP:
            TrialFolder(cfg.trial_dir).stop(
                {"by": "asha", "epoch": int(result["epoch"]), "metric": self.rung, "value": result[self.rung]}
            )
            self.stopped[tid] = result[self.rung]
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        pass  # ASHA keeps a finished trial's rungs; its own bookkeeping ends with the sweep

    def on_trial_remove(self, tune_controller, trial) -> None:
        pass


def cause(err: BaseException) -> BaseException:
    """The trial's own exception inside Ray's wrapper (RayTaskError.cause)."""
    return getattr(err, "cause", None) or err


def tune_trials(
    suite: Suite,
    todo: list[TrialConfig],
    address: str | None,
    tracker: Tracker | None,
    lock: SuiteLock,
    scheduler: StudyScheduler | None = None,
) -> dict[str, BaseException]:
    rates = load_rates(suite)[0] if suite.resources.pack is not None else []
    gpus = {t.trial_id: gpu_fraction(suite, t, rates) for t in todo}
    shared = any(0 < g < 1 for g in gpus.values())
    with GpuSharing(shared, local=address is None and not os.environ.get("RAY_ADDRESS")):
        return _tune_trials(suite, todo, address, tracker, lock, gpus, scheduler)


def _tune_trials(
    suite: Suite,
    todo: list[TrialConfig],
    address: str | None,
    tracker: Tracker | None,
    lock: SuiteLock,
    gpus: dict[str, float],
    scheduler: StudyScheduler | None,
) -> dict[str, BaseException]:
    """Run ``todo`` as Tune trials; -> the failed ones' errors. Ray's own messages (its tracebacks of failed
    trials among them) go to the suite's ray.log; each trial's error is in its error.txt."""
    local = start_ray(address)
    several = max(t.workers_per_trial for t in todo)
    check_resources({"CPU": suite.resources.cpus, "GPU": min(gpus.values())}, several, local)
    store = suite.store
    if not store:
        check_cluster_storage(suite.suite_dir)  # before any trial runs; an object store is shared by nature
    grid = [trial_case(t) for t in todo]
    progress = Progress(
        {t.trial_id: t for t in todo},
        {t.trial_id: trial_flops(t) for t in todo},
        concurrency=suite.concurrency or len(todo),
        on_change=lock.set_running,
    )
    tracking = BackgroundTracker(
        tracker, fetch=store and (lambda d: store.pull(f"{suite.name}/{d.name}", d, skip=CACHE_ONLY))
    )
    # The trial folders are the results: Tune's own CSV/JSON/TensorBoard loggers would write every report again
    # per trial, and grow the driver with the grid (~300 KB a trial, ray-project/ray#64231).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    tuner = tune.Tuner(
        tune.with_resources(run_trial, trial_resources(suite, gpus)),
        param_space={
            "cpus": suite.resources.cpus,
            "gpus": suite.resources.gpus,
            "eval_sets": suite.eval_sets,
            "plugins": plugins.shipped(),  # each worker runs the code the driver hashed (harness.core.plugins)
            "case": tune.grid_search(grid),
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=suite.concurrency,
            scheduler=scheduler,
            reuse_actors=True,
            trial_dirname_creator=_tid,
            trial_name_creator=_tid,
        ),
        run_config=tune.RunConfig(
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(suite.suite_dir.resolve() / schema.TUNE_DIR),
            failure_config=tune.FailureConfig(max_failures=suite.max_retries),
            callbacks=[SweepCallback(progress, tracking)],
            verbose=0,
        ),
    )
    # Ctrl-C stops the sweep at once with exit 130 and what was kept (cli.Interrupted); Tune's own
    # handler would finish "successfully" and advise Tuner.restore, which harness users never call.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        with logs.to_file("ray", suite.suite_dir / schema.RAY_LOG):
            grid_results = tuner.fit()
    finally:
        tracking.close()
    progress.show(force=True)
    overhead = progress.overhead()
    if overhead:
        print(overhead, flush=True)
    return {r.config["case"]["trial_id"]: r.error for r in grid_results if r.error is not None}
