"""Ray Tune glue: the suite's trials as one Tune grid (resources per trial, retries, the callback that feeds the
progress view and the tracker); -> each failed trial's error."""

from __future__ import annotations

import os
import time

from ray import tune

from harness import logs, plugins, schema
from harness.cluster import check_resources, start_ray
from harness.config import TrialConfig
from harness.cost import trial_flops
from harness.gpu_sharing import GpuSharing
from harness.lock import SuiteLock
from harness.plan import gpu_fraction, load_rates
from harness.progress import Progress, TrialReport
from harness.storage import CACHE_ONLY, check_cluster_storage
from harness.suite import Suite
from harness.tracking import BackgroundTracker, Tracker
from harness.trainable import run_trial


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
        self.progress.end(_tid(trial), ok=True)
        self.tracking.update(self.progress.trials[_tid(trial)].trial_dir)
        self.progress.show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.end(_tid(trial), ok=False)
        self.progress.show(force=True)


def _tid(trial) -> str:
    return trial.config["case"]["trial_id"]


def cause(err: BaseException) -> BaseException:
    """The trial's own exception inside Ray's wrapper (RayTaskError.cause)."""
    return getattr(err, "cause", None) or err


def tune_trials(
    suite: Suite, todo: list[TrialConfig], address: str | None, tracker: Tracker | None, lock: SuiteLock
) -> dict[str, BaseException]:
    rates = load_rates(suite)[0] if suite.resources.pack is not None else []
    gpus = {t.trial_id: gpu_fraction(suite, t, rates) for t in todo}
    shared = any(0 < g < 1 for g in gpus.values())
    with GpuSharing(shared, local=address is None and not os.environ.get("RAY_ADDRESS")):
        return _tune_trials(suite, todo, address, tracker, lock, gpus)


def _tune_trials(
    suite: Suite,
    todo: list[TrialConfig],
    address: str | None,
    tracker: Tracker | None,
    lock: SuiteLock,
    gpus: dict[str, float],
) -> dict[str, BaseException]:
    """Run ``todo`` as Tune trials; -> the failed ones' errors. Ray's own messages (its tracebacks of failed
    trials among them) go to the suite's ray.log; each trial's error is in its error.txt."""
    local = start_ray(address)
    several = max(t.workers_per_trial for t in todo)
    check_resources({"CPU": suite.resources.cpus, "GPU": min(gpus.values())}, several, local)
    store = suite.store
    if not store:
        check_cluster_storage(suite.suite_dir)  # before any trial runs; an object store is shared by nature
    grid = [{"trial_id": t.trial_id, "trial": {**t.model_dump(mode="json"), "progress": False}} for t in todo]
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
            "plugins": plugins.shipped(),  # each worker runs the code the driver hashed (harness.plugins)
            "case": tune.grid_search(grid),
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=suite.concurrency,
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
