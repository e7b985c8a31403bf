"""The sweep driver: a suite's trials on Ray Tune, resumable at any point, tracked in MLflow.

Idempotent by construction: a trial's folder (<storage>/<suite>/<trial_id>/) says whether it is
finished (metrics.json), partial (checkpoint.pt: resumed from there) or not started. Running the
same command again runs only what is missing; Tune retries a failing trial, which resumes from
its last end-of-epoch checkpoint.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ray import tune

from harness import results
from harness.config import TrialConfig
from harness.data import check_available
from harness.cost import REFERENCE_TFLOPS, format_flops, trial_flops
from harness.storage import CACHE_ONLY, check_cluster_storage, working_copy
from harness.suite import Suite, expand, resolve_data_dir
from harness.tracking import PARENT_STATE, BackgroundTracker, Tracker


def state_detail(trial_dir: Path) -> tuple[str, str]:
    """A trial's state and a short detail for the status table."""
    state, error = results.trial_state(trial_dir)
    epochs = results.completed_epochs(trial_dir)
    if state == "finished":
        return state, f"top1 {100 * results.read_json(trial_dir / results.METRICS)['top1']:.2f}%"
    if state == "failed":
        return state, f"after epoch {epochs}: {error[:80]}"
    return state, f"epoch {epochs}" if epochs else ""


def trials_in_folder(suite_dir: Path) -> list[TrialConfig]:
    """The trials whose folders exist under a results/<suite> folder."""
    import yaml

    trials = []
    for config_file in sorted(Path(suite_dir).glob("*/" + results.CONFIG)):
        raw = yaml.safe_load(config_file.read_text())
        derived = ("trial_id", "lr")  # written beside the config, not part of it
        trials.append(TrialConfig.model_validate({k: v for k, v in raw.items() if k not in derived}))
    return trials


def status_table(trials: list[TrialConfig]) -> str:
    rows = [("trial", "method", "width", "M", "b", "seed", "epochs", "state", "detail")]
    counts: dict[str, int] = {}
    for cfg in trials:
        state, detail = state_detail(cfg.trial_dir)
        counts[state] = counts.get(state, 0) + 1
        rows.append((cfg.trial_id, cfg.method, str(cfg.width), str(cfg.num_inputs), str(cfg.b), str(cfg.seed),
                     str(cfg.epochs), state, detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def plan_text(suite: Suite, trials: list[TrialConfig]) -> str:
    flops = [trial_flops(t) for t in trials]
    todo = [f for t, f in zip(trials, flops) if not results.is_finished(t.trial_dir)]
    seconds = sum(todo) / (REFERENCE_TFLOPS * 1e12)
    done = len(trials) - len(todo)
    return (f"suite {suite.name}: {len(trials)} trials ({done} finished, {len(todo)} to run), "
            f"results in {suite.suite_dir.resolve()}\n"
            f"cost: {format_flops(sum(flops))} of training in all, {format_flops(sum(todo))} to run "
            f"(~{seconds / 3600:.2f} GPU-hours = {_duration(seconds)} at {REFERENCE_TFLOPS:.0f} TFLOP/s, "
            f"an H100 running WRN-28-10 in bf16 with CUDA graphs)")


# --- the trainable, run by Ray in a worker process
def run_trial(config: dict) -> None:
    trial = TrialConfig.model_validate(config["case"]["trial"])
    several = trial.workers_per_trial > 1
    # one worker trains here, on this node's copy; several workers each mirror a copy of their own,
    # and this process only needs their results
    copy = working_copy(trial, skip=CACHE_ONLY if several else frozenset())
    cfg = copy.cfg
    import torch

    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    try:
        if several:
            from harness.distributed import run_on_workers

            # the workers report each epoch to Tune themselves (TuneReportCallback)
            run_on_workers(cfg, cpus_per_worker=config.get("cpus", 1), gpus_per_worker=config.get("gpus", 0))
            copy.pull()
            metrics = results.read_json(cfg.trial_dir / results.METRICS)
        else:
            from harness.trainer import Trainer

            def on_epoch(row: dict) -> None:
                copy.push()  # the checkpoint reaches the object store before Tune hears of the epoch
                tune.report({**row, "trial_id": cfg.trial_id})

            trainer = Trainer(cfg, log=lambda s: None)
            metrics = trainer.run(on_epoch=on_epoch)
            copy.push()
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))} | {"trial_id": cfg.trial_id, "done": 1})
    except Exception:  # not SystemExit: Tune ends finished trials that way
        results.write_text(cfg.trial_dir / results.ERROR, traceback.format_exc())
        try:
            copy.push()
        except Exception as upload:  # the trial's own error is the one to raise
            print(f"{cfg.trial_id}: could not upload {results.ERROR} to {cfg.store}: {upload}", file=sys.stderr)
        raise


def trial_resources(suite: Suite):
    """Per-trial resource request. ``resources`` are per worker: a one-worker trial holds them itself; a
    trial of N workers only drives its Ray Train workers, which reserve N x resources of their own."""
    from ray.tune import PlacementGroupFactory

    per_worker = {"CPU": suite.resources.cpus, "GPU": suite.resources.gpus}

    def request(config: dict) -> PlacementGroupFactory:
        if config["case"]["trial"].get("workers_per_trial", 1) > 1:
            return PlacementGroupFactory([{"memory": 1}])  # a token: Ray refuses an all-zero bundle, any CPU would be missed
        return PlacementGroupFactory([per_worker])

    return request


@dataclass
class Progress:
    """A readable view of a sweep: counts by state, running trials' epoch and metric, an ETA."""

    trials: dict[str, TrialConfig]
    finished: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    running: dict[str, dict] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    epoch_times: list[float] = field(default_factory=list)
    concurrency: int = 1
    last_print: float = 0.0

    def line(self) -> str:
        pending = len(self.trials) - len(self.finished) - len(self.failed) - len(self.running)
        parts = [f"[{time.strftime('%H:%M:%S')}] {len(self.finished)} done, {len(self.running)} running, "
                 f"{pending} pending, {len(self.failed)} failed"]
        eta = self.eta()
        if eta is not None:
            parts[0] += f", ETA {_duration(eta)}"
        for tid, r in sorted(self.running.items()):
            epochs = self.trials[tid].epochs
            retry = f" (retry {self.retries[tid]})" if self.retries.get(tid) else ""
            if "epoch" not in r:
                parts.append(f"    {tid}: starting{retry}")
                continue
            metric = f" test {100 * r['test_top1']:.1f}%" if r.get("test_top1") is not None else ""
            parts.append(f"    {tid}: epoch {r['epoch']}/{epochs} loss {r['train_loss']:.3f}{metric}{retry}")
        return "\n".join(parts)

    def eta(self) -> float | None:
        if not self.epoch_times:
            return None
        per_epoch = sum(self.epoch_times[-20:]) / len(self.epoch_times[-20:])
        remaining = sum(cfg.epochs - self.running.get(tid, {}).get("epoch", 0)
                        for tid, cfg in self.trials.items() if tid not in self.finished and tid not in self.failed)
        return remaining * per_epoch / max(1, self.concurrency)

    def show(self, force: bool = False, every: float = 10.0) -> None:
        if force or time.time() - self.last_print >= every:
            print(self.line(), flush=True)
            self.last_print = time.time()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class SweepCallback(tune.Callback):
    """Feeds the progress view and the tracker from Tune's events (in the driver)."""

    def __init__(self, progress: Progress, tracking: BackgroundTracker):
        self.progress, self.tracking = progress, tracking

    def __getstate__(self):  # Tune pickles its config with the experiment state; this holds live objects
        return {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.progress.running.setdefault(_tid(trial), {})
        self.progress.show(force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        tid = _tid(trial)
        self.progress.retries[tid] = self.progress.retries.get(tid, 0) + 1
        print(f"trial {tid} failed; retrying from its last checkpoint (retry {self.progress.retries[tid]})", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch_time_s" in result and not result.get("done"):
            self.progress.epoch_times.append(result["epoch_time_s"])
            self.progress.running[_tid(trial)] = result
        self.tracking.update(self.progress.trials[_tid(trial)].trial_dir)
        self.progress.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.progress.running.pop(_tid(trial), None)
        self.progress.finished.add(_tid(trial))
        self.tracking.update(self.progress.trials[_tid(trial)].trial_dir)
        self.progress.show(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.running.pop(_tid(trial), None)
        self.progress.failed.add(_tid(trial))
        self.progress.show(force=True)


def _tid(trial) -> str:
    return trial.config["case"]["trial_id"]


def run_sweep(suite: Suite, source: str, address: str | None = None, restart: bool = False,
              dry_run: bool = False, tracking_uri: str | None = None) -> int:
    resolve_data_dir(suite)
    trials = expand(suite, source)
    store = suite.store
    if restart and not dry_run:
        for t in trials:
            shutil.rmtree(t.trial_dir, ignore_errors=True)
            if store:
                store.delete(f"{suite.name}/{t.trial_id}")
    if store:  # what earlier runs left in the object store: finished trials, the MLflow parent run
        store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    print(plan_text(suite, trials), flush=True)
    for cfg in {(t.dataset, str(t.data_dir), t.download): t for t in trials}.values():
        check_available(cfg)  # missing data fails here, with its message, not in every trial
    if dry_run:
        print(status_table(trials))
        return 0
    suite.suite_dir.mkdir(parents=True, exist_ok=True)
    tracker = None
    if suite.tracking.enabled:
        tracker = Tracker.for_suite(suite, tracking_uri)
        if restart:
            (suite.suite_dir / PARENT_STATE).unlink(missing_ok=True)  # a new parent run
        tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()])  # what an earlier run could not send
    todo = [t for t in trials if not results.is_finished(t.trial_dir)]
    failed: set[str] = set()
    if todo:
        failed = _tune(suite, todo, address, tracker)
        if store:
            store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    if tracker is not None:
        pending = tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()], failed=failed)
        if not pending:
            _finish_tracking(suite, trials, tracker, failed)
    ensembles = _compose_ensembles(suite, trials)
    if store:  # the suite's own files (parent run, status, ensembles) beside the trials
        store.push(suite.suite_dir, suite.name)
    print(status_table(trials))
    for line in ensembles:
        print(line)
    if failed:
        print(f"{len(failed)} trial(s) failed (errors in their error.txt): " + ", ".join(sorted(failed)), file=sys.stderr)
        return 1
    return 0


def _tune(suite: Suite, todo: list[TrialConfig], address: str | None, tracker: Tracker | None) -> set[str]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True,
             include_dashboard=False, log_to_driver=False, configure_logging=False)
    store = suite.store
    if not store:
        check_cluster_storage(suite.suite_dir)  # before any trial runs; an object store is shared by nature
    grid = [{"trial_id": t.trial_id, "trial": {**t.model_dump(mode="json"), "progress": False}} for t in todo]
    progress = Progress({t.trial_id: t for t in todo}, concurrency=suite.concurrency or len(todo))
    tracking = BackgroundTracker(tracker, fetch=store and (lambda d: store.pull(f"{suite.name}/{d.name}", d, skip=CACHE_ONLY)))
    tuner = tune.Tuner(
        tune.with_resources(run_trial, trial_resources(suite)),
        param_space={"cpus": suite.resources.cpus, "gpus": suite.resources.gpus, "case": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(max_concurrent_trials=suite.concurrency, reuse_actors=True,
                                    trial_dirname_creator=_tid, trial_name_creator=_tid),
        run_config=tune.RunConfig(
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(suite.suite_dir.resolve() / ".tune"),
            failure_config=tune.FailureConfig(max_failures=suite.max_retries),
            callbacks=[SweepCallback(progress, tracking)],
            verbose=0,
        ),
    )
    try:
        grid_results = tuner.fit()
    finally:
        tracking.close()
    progress.show(force=True)
    return {r.config["case"]["trial_id"] for r in grid_results if r.error is not None}


def _finish_tracking(suite: Suite, trials, tracker: Tracker, failed: set[str]) -> None:
    from harness.tracking import warn

    try:
        summary = suite.suite_dir / "status.txt"
        results.write_text(summary, status_table(trials) + "\n")
        artifacts = [summary, suite.suite_dir / "ensembles.json"]
        done = all(results.is_finished(t.trial_dir) for t in trials)
        tracker.finish_parent(artifacts, "FINISHED" if done else "FAILED")
    except Exception as err:
        warn(f"tracking: could not close the sweep's parent run ({type(err).__name__}: {err})")


def _compose_ensembles(suite: Suite, trials: list[TrialConfig]) -> list[str]:
    from analysis.ensembles import ensembles_for

    if not suite.ensembles:
        return []
    rows = ensembles_for([t.trial_dir for t in trials if results.is_finished(t.trial_dir)],
                         [(spec.method, spec.sizes) for spec in suite.ensembles])
    results.write_json(suite.suite_dir / "ensembles.json", rows)
    return [f"deep ensemble {r['method']} {r['model']}-{r['depth']}-{r['width']} x{r['members']} "
            f"(seeds {r['seeds']}): top1 {100 * r['top1']:.2f}%" for r in rows]
