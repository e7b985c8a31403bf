"""The sweep driver: a suite's trials on Ray Tune, resumable at any point, tracked in MLflow.

Idempotent by construction: a trial's folder (<storage>/<suite>/<trial_id>/) says whether it is
finished (metrics.json), partial (checkpoint.pt: resumed from there), corrupt (a file that cannot be
read: retrained from its last readable checkpoint) or not started. Running the same command again
runs only what is missing; Tune retries a failing trial, which resumes from its last end-of-epoch
checkpoint. One driver per suite: the suite lock (harness.lock) turns a second one away.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from ray import tune

from harness import catalog, logs, plugins, results, trial_index
from harness.cluster import check_resources, start_ray
from harness.config import TrialConfig
from harness.cost import trial_flops
from harness.data import DataError, check_data, check_same_data, with_fingerprints
from harness.evaluate import check_sets
from harness.exit_codes import ExitCode
from harness.gpu_sharing import GpuSharing
from harness.lock import SuiteLock
from harness.plan import duration, gpu_fraction, load_rates, plan_text
from harness.status import status_rows, status_table, status_view
from harness.storage import CACHE_ONLY, check_cluster_storage, check_writable
from harness.suite import Suite, expand
from harness.tracking import BackgroundTracker, Tracker, mlflow_hint

logger = logging.getLogger(__name__)
RAY_LOG = "ray.log"  # in the suite folder: Ray Tune's own messages during the sweep

# --- the trainable, run by Ray in a worker process
# in-epoch progress reports and the driver's progress lines: often enough for the view, rare enough to cost
# nothing ($HARNESS_PROGRESS_S for tests)
PROGRESS_EVERY_S = float(os.environ.get("HARNESS_PROGRESS_S", 10.0))


def run_trial(config: dict) -> None:
    """The Tune trainable: one trial through the launcher, its epochs and in-epoch progress reported to Tune."""
    import torch

    from harness.launch import train_trial

    logs.setup(logging.WARNING)  # a Ray worker: Tune shows the progress, the terminal only warnings
    cfg = catalog.in_worker(config["case"]["trial"], config.get("plugins"))
    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    metrics = train_trial(
        cfg,
        cpus_per_worker=config.get("cpus", 1),
        gpus_per_worker=config.get("gpus", 0),
        on_epoch=lambda row: tune.report({**row, "trial_id": cfg.trial_id}),
        on_step=_step_reporter(cfg.trial_id),
    )
    if config.get("eval_sets"):  # the suite's evaluation sets, as the trial finishes
        _evaluate_finished(cfg, config["eval_sets"])
    tune.report(
        {k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"trial_id": cfg.trial_id, "done": 1}
    )


def _evaluate_finished(cfg: TrialConfig, names: list[str]) -> None:
    """A failed evaluation does not fail the trained trial: the sweep's last pass tries again and says why."""
    from harness.data.eval_sets import parse_eval_set
    from harness.evaluate import evaluate_trial

    try:
        evaluate_trial(
            cfg,
            [parse_eval_set(n) for n in names],
            cfg.device,
            on_set=lambda spec: tune.report({"trial_id": cfg.trial_id, "evaluating": spec.name}),
        )
    except Exception as err:
        logger.warning(f"{cfg.trial_id}: evaluation sets not evaluated yet ({type(err).__name__}: {err})")


def _step_reporter(trial_id: str):
    """An on_step callback that reports in-epoch progress to Tune every PROGRESS_EVERY_S."""
    clock = {"last": time.monotonic(), "epoch": -1, "t0": 0.0}

    def on_step(epoch: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if epoch != clock["epoch"]:
            clock.update(epoch=epoch, t0=now, first=step)
        if now - clock["last"] >= PROGRESS_EVERY_S and step > clock["first"]:
            clock["last"] = now
            rate = (step - clock["first"]) / (now - clock["t0"])  # steps/s in this epoch so far
            tune.report(
                {"trial_id": trial_id, "in_epoch": epoch + 1, "step": step, "steps": steps, "steps_per_s": rate}
            )

    return on_step


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


@dataclass
class Progress:
    """A readable view of a sweep: elapsed time, counts by state, each running trial's epoch and step,
    and an ETA from the FLOPs left and the rates the running trials measure (so a trial of M = 2, b = 2
    counts for its doubled steps)."""

    trials: dict[str, TrialConfig]
    flops: dict[str, float]  # training FLOPs of each trial
    finished: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    running: dict[str, dict] = field(default_factory=dict)  # trial id -> its last report
    done_fraction: dict[str, float] = field(default_factory=dict)  # of started trials
    rates: dict[str, float] = field(default_factory=dict)  # FLOP/s of each trial, last measured
    last_epoch: dict[str, dict] = field(default_factory=dict)  # trial id -> its last epoch's row
    retries: dict[str, int] = field(default_factory=dict)
    concurrency: int = 1  # trials at once
    started: float = field(default_factory=time.time)
    last_print: float = 0.0
    on_change: object = None  # called with the running view (the suite lock's heartbeat record)
    freed: list[float] = field(default_factory=list)  # when trial slots came free, not yet taken again
    gaps: list[float] = field(default_factory=list)  # per trial started in a freed slot: how long the slot idled
    spans: dict[str, list[float]] = field(default_factory=dict)  # trial id -> [start, end] as the driver saw them

    def update(self, tid: str, result: dict) -> None:
        cfg, flops = self.trials[tid], self.flops[tid]
        if "in_epoch" in result:
            self.done_fraction[tid] = (result["in_epoch"] - 1 + result["step"] / result["steps"]) / cfg.epochs
            self.rates[tid] = result["steps_per_s"] * flops / (result["steps"] * cfg.epochs)
        elif "epoch_time_s" in result:
            self.done_fraction[tid] = result["epoch"] / cfg.epochs
            self.rates[tid] = flops / cfg.epochs / max(result["epoch_time_s"], 1e-9)
            self.last_epoch[tid] = result
        self.running[tid] = result
        self._changed()

    def start(self, tid: str) -> None:
        now = time.monotonic()
        if self.freed:  # a slot a finished trial left: the time it idled is the driver's (and Tune's) own
            self.gaps.append(now - self.freed.pop(0))
        self.spans[tid] = [now, now]
        self.running.setdefault(tid, {})
        self._changed()

    def end(self, tid: str, ok: bool) -> None:
        now = time.monotonic()
        if len(self.finished) + len(self.failed) + len(self.running) < len(self.trials):  # others still wait
            self.freed.append(now)
        self.spans.setdefault(tid, [now, now])[1] = now
        self.running.pop(tid, None)
        (self.finished if ok else self.failed).add(tid)
        self.done_fraction[tid] = 1.0
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(
                {
                    t: {k: r[k] for k in ("epoch", "in_epoch", "step", "steps") if k in r}
                    for t, r in self.running.items()
                }
            )

    def overhead(self) -> str:
        """One line: the sweep's own time per trial (a freed slot idling until Tune starts the next trial: scheduling,
        actor reuse, the driver's callbacks), beside the trials' time in their workers."""
        if not self.gaps:
            return ""
        spans = [end - start for start, end in self.spans.values() if end > start]
        return (
            f"driver overhead: {sum(self.gaps) / len(self.gaps):.2f} s per trial between one trial's end and the next "
            f"start in its slot (mean of {len(self.gaps)}; trials took {sum(spans) / max(len(spans), 1):.1f} s each "
            f"in their workers)"
        )

    def eta(self) -> float | None:
        """Seconds left: the FLOPs still to train over the rate of the trial slots. A slot trains at the mean
        FLOP rate of the running trials (of every trial measured so far while none runs); there are as many
        slots as the concurrency allows, at most the trials left."""
        measured = [self.rates[t] for t in self.running if t in self.rates] or list(self.rates.values())
        left_trials = [t for t in self.trials if t not in self.finished and t not in self.failed]
        if not measured or not left_trials:
            return None if not measured else 0.0
        left = sum(self.flops[t] * (1 - self.done_fraction.get(t, 0.0)) for t in left_trials)
        slots = min(self.concurrency, len(left_trials))
        return left / (sum(measured) / len(measured) * slots)

    def line(self) -> str:
        pending = len(self.trials) - len(self.finished) - len(self.failed) - len(self.running)
        head = (
            f"[{time.strftime('%H:%M:%S')}] elapsed {duration(time.time() - self.started)}: "
            f"{len(self.finished)} done, {len(self.running)} running, {pending} pending, {len(self.failed)} failed"
        )
        eta = self.eta()
        head += f", ETA {duration(eta)}" if eta is not None else ", ETA after the first measurements"
        parts = [head]
        for tid, r in sorted(self.running.items()):
            epochs = self.trials[tid].epochs
            retry = f" (retry {self.retries[tid]})" if self.retries.get(tid) else ""
            if "evaluating" in r:
                parts.append(f"    {tid}: trained; evaluating {r['evaluating']}{retry}")
            elif "in_epoch" in r:
                prev = self.last_epoch.get(tid)
                metric = f", last epoch loss {prev['train_loss']:.3f}" if prev else ""
                parts.append(
                    f"    {tid}: epoch {r['in_epoch']}/{epochs}, step {r['step']}/{r['steps']} "
                    f"({100 * r['step'] / r['steps']:.0f}%){metric}{retry}"
                )
            elif "epoch" in r:
                metric = f" test {100 * r['test_top1']:.1f}%" if r.get("test_top1") is not None else ""
                parts.append(f"    {tid}: epoch {r['epoch']}/{epochs} loss {r['train_loss']:.3f}{metric}{retry}")
            else:
                parts.append(f"    {tid}: starting (loading data, building the model){retry}")
        return "\n".join(parts)

    def show(self, force: bool = False) -> None:
        if force or time.time() - self.last_print >= PROGRESS_EVERY_S:
            print(self.line(), flush=True)
            self.last_print = time.time()


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
        tid = _tid(trial)
        if result.get("done"):
            return
        if "in_epoch" in result or "epoch_time_s" in result:
            self.progress.update(tid, result)
        if "epoch_time_s" in result:  # an epoch's row: the trial folder has something new for MLflow
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


def run_sweep(
    suite: Suite,
    source: str,
    address: str | None = None,
    restart: bool = False,
    dry_run: bool = False,
    tracking_uri: str | None = None,
    break_lock: bool = False,
    verbose: bool = False,
    index_key: str | None = None,
) -> int:
    """`harness run` (``index_key``: where the expanded grid is indexed for `harness status`, harness.trial_index)."""
    trials = expand(suite, source)
    trial_index.write(index_key, suite.suite_dir, trials)
    store = suite.store
    storage = f"{source}: storage" if not store else "the local copy of the object store"
    if dry_run:
        print(plan_text(suite, trials, address), flush=True)
        check_writable(suite.suite_dir, storage, create=False)
        trials = _check_inputs(suite, trials)
        print(status_view(status_rows(trials), verbose))
        return ExitCode.DONE
    check_writable(suite.suite_dir, storage)
    tracker = Tracker.for_suite(suite, tracking_uri) if suite.tracking.enabled else None  # a bad URI stops here
    if tracker is not None:
        tracker.connect()  # a full disk stops here; two drivers on fresh storage create the store one at a time
    with SuiteLock(suite.suite_dir, store, suite.name, f"harness run {source}", break_lock) as lock:
        return _run_locked(suite, trials, source, address, restart, tracker, lock, verbose)


def _check_inputs(suite: Suite, trials: list[TrialConfig]) -> list[TrialConfig]:
    """Missing or broken data and evaluation sets fail here, with their message, not in every trial; so do trials
    whose folders hold results of other data than they would read now. -> the trials with their data's
    fingerprint."""
    check_data(trials)  # what `harness train` would refuse, refused for the grid before anything runs
    check_sets(trials, suite.evaluation_sets())
    trials = with_fingerprints(trials)
    stale, unchecked = [], 0
    for t in trials:
        if not (t.trial_dir / results.CONFIG).exists():
            continue
        try:
            recorded = results.TrialFolder(t.trial_dir).config()
            check_same_data(t, recorded)
        except DataError as err:
            stale.append(str(err))
        except results.CorruptFile:
            continue  # reported as corrupt, and retrained, by the run
        else:
            unchecked += t.data_fingerprint is not None and not recorded.get("data_fingerprint")
    if unchecked:
        logger.warning(
            f"{unchecked} trial folder(s) predate data fingerprints: whether they were trained on this data cannot "
            f"be checked (--restart trains them again)"
        )
    if stale:
        raise DataError(
            f"{len(stale)} trial(s) hold results of other data than they would read now; nothing was run:\n  "
            + "\n  ".join(stale[:5])
            + (f"\n  and {len(stale) - 5} more" if len(stale) > 5 else "")
        )
    return trials


def _recovery(cfg: TrialConfig, state: results.TrialState) -> str:
    """What `harness run` will do with a corrupt trial: the trainer resumes from the newest checkpoint that reads."""
    folder = results.TrialFolder(cfg.trial_dir)
    damaged = state.detail.split(":", 1)[0]
    try:
        final = damaged not in results.CHECKPOINTS and (folder / results.CHECKPOINT).exists()
        final = final and len(folder.history()) == cfg.epochs
    except results.CorruptFile:
        final = False
    if final:
        return "it is recomputed from its final checkpoint (the evaluation reruns, no training)"
    return "it is retrained from its last readable checkpoint"


def _run_locked(
    suite: Suite,
    trials: list[TrialConfig],
    source: str,
    address: str | None,
    restart: bool,
    tracker: Tracker | None,
    lock: SuiteLock,
    verbose: bool = False,
) -> int:
    store = suite.store
    if restart:
        for t in trials:
            shutil.rmtree(t.trial_dir, ignore_errors=True)
            if store:
                store.delete(f"{suite.name}/{t.trial_id}")
        if tracker is not None:
            _forget_runs(tracker, [t.trial_id for t in trials])
    if store:  # what earlier runs left in the object store: finished trials, the MLflow parent run
        store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    print(plan_text(suite, trials, address), flush=True)
    trials = _check_inputs(suite, trials)
    verified = results.Verified(suite.suite_dir)  # logits read whole once, not at every rerun
    states = {t.trial_id: results.TrialFolder(t.trial_dir).state(thorough=True, verified=verified) for t in trials}
    verified.save()
    for t in trials:
        if states[t.trial_id].state == "corrupt":
            logger.warning(f"{t.trial_id}: {states[t.trial_id].detail}; {_recovery(t, states[t.trial_id])}")
    if tracker is not None:
        tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()])  # what an earlier run could not send
    todo = [t for t in trials if states[t.trial_id].state != "finished"]
    failures: dict[str, BaseException] = {}
    if todo:
        failures = _tune(suite, todo, address, tracker, lock)
        if store:
            store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    failed = set(failures)
    eval_failed = _evaluate(suite, trials, address) if suite.eval_sets else set()
    from analysis.ensembles import compose_suite_ensembles

    ensembles = compose_suite_ensembles(  # before the parent run closes: ensembles.json goes with it
        suite.suite_dir,
        [t.trial_dir for t in trials if results.TrialFolder(t.trial_dir).is_finished()],
        [(spec.method, spec.sizes) for spec in suite.ensembles],
    )
    if tracker is not None:
        pending = tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()], failed=failed)
        if not pending:
            _finish_tracking(suite, trials, tracker, failed)
    if store:  # the suite's own files (parent run, status, ensembles) beside the trials
        store.push(suite.suite_dir, suite.name)
    print(status_view(status_rows(trials), verbose))
    for line in ensembles:
        print(line)
    if todo:  # something new to read: a rerun with nothing to do analyses nothing (`harness report` does)
        from analysis.report import terminal_summary

        summary = terminal_summary(
            suite.suite_dir,
            [(e.method, e.sizes) for e in suite.ensembles] or None,
            suite.ensemble_average,
            {t.trial_id: t.record() for t in trials},
        )
        if summary:
            print("\n" + summary + "\n")
    else:
        print(f"nothing to run: all {len(trials)} trials are finished")
    if tracker is not None:
        print(mlflow_hint(suite, tracker.uri))
    print(f"figures and tables: harness report {source}")
    ran_out = [str(e) for e in map(_cause, failures.values()) if isinstance(e, results.ResourceError)]
    if ran_out:  # the machine, not the trials: one line, the documented exit code
        print(
            f"error: {len(ran_out)} trial(s) stopped: {ran_out[0]} (Ray's messages: {suite.suite_dir / RAY_LOG})",
            file=sys.stderr,
        )
        return ExitCode.OUT_OF_RESOURCES
    if failed:
        print(f"{len(failed)} trial(s) failed:", file=sys.stderr)
        for tid in sorted(failed):
            state = results.TrialFolder(suite.suite_dir / tid).state()
            print(f"  {tid}: {state.detail} (full error in {suite.suite_dir / tid / results.ERROR})", file=sys.stderr)
        print(f"Ray's own messages: {suite.suite_dir / RAY_LOG}", file=sys.stderr)
    return ExitCode.FAILED if failed or eval_failed else ExitCode.DONE


def _cause(err: BaseException) -> BaseException:
    """The trial's own exception inside Ray's wrapper (RayTaskError.cause)."""
    return getattr(err, "cause", None) or err


def _tune(
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
            storage_path=str(suite.suite_dir.resolve() / ".tune"),
            failure_config=tune.FailureConfig(max_failures=suite.max_retries),
            callbacks=[SweepCallback(progress, tracking)],
            verbose=0,
        ),
    )
    # Ctrl-C stops the sweep at once with exit 130 and what was kept (cli.Interrupted); Tune's own
    # handler would finish "successfully" and advise Tuner.restore, which harness users never call.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        with logs.to_file("ray", suite.suite_dir / RAY_LOG):
            grid_results = tuner.fit()
    finally:
        tracking.close()
    progress.show(force=True)
    overhead = progress.overhead()
    if overhead:
        print(overhead, flush=True)
    return {r.config["case"]["trial_id"]: r.error for r in grid_results if r.error is not None}


def _evaluate(suite: Suite, trials: list[TrialConfig], address: str | None) -> set[str]:
    """The suite's evaluation sets on every finished trial that lacks one; -> the trials that failed."""
    from harness.evaluate import evaluate_trials

    _, failed = evaluate_trials(
        trials,
        suite.evaluation_sets(),
        address=address,
        cpus=suite.resources.cpus,
        gpus=suite.resources.gpus,
    )
    for tid, why in failed.items():
        logger.warning(f"{tid}: evaluation failed: {why}")
    return set(failed)


def _forget_runs(tracker: Tracker, trial_ids: list[str]) -> None:
    from harness.tracking import warn

    try:
        tracker.forget(trial_ids)
    except Exception as err:  # an outage: the old runs stay, the new ones are sent beside them later
        warn(f"tracking: could not delete the restarted trials' runs ({type(err).__name__}: {str(err)[:200]})")


def _finish_tracking(suite: Suite, trials, tracker: Tracker, failed: set[str]) -> None:
    from harness.tracking import warn

    try:
        summary = suite.suite_dir / "status.txt"
        results.write_text(summary, status_table(status_rows(trials)) + "\n")
        artifacts = [summary, suite.suite_dir / "ensembles.json"]
        done = all(results.TrialFolder(t.trial_dir).is_finished() for t in trials)
        tracker.finish_parent(artifacts, "FINISHED" if done else "FAILED")
    except Exception as err:
        warn(f"tracking: could not close the sweep's parent run ({type(err).__name__}: {err})")
