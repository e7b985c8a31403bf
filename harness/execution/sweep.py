"""The sweep driver: a suite's trials on Ray Tune, resumable at any point, tracked in MLflow.

Idempotent by construction: a trial's folder (<storage>/<suite>/<trial_id>/) says whether it is
finished (metrics.json), partial (checkpoint.pt: resumed from there), corrupt (a file that cannot be
read: retrained from its last readable checkpoint) or not started. Running the same command again
runs only what is missing; Tune retries a failing trial, which resumes from its last end-of-epoch
checkpoint. One driver per suite: the suite lock (harness.store.lock) turns a second one away.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass
from typing import Callable

import psutil

from harness.core import schema
from harness.core.config import TrialConfig
from harness.core.exit_codes import ExitCode
from harness.data import DataError, check_data, check_same_data, with_fingerprints
from harness.evaluation.evaluate import check_sets
from harness.execution.plan import plan_text
from harness.execution.status import status_rows, status_table, status_view
from harness.execution.tune_run import cause, tune_trials
from harness.planning import tuning
from harness.planning.suite import Suite, expand
from harness.store import trial_index
from harness.store.errors import CorruptFile, ResourceError
from harness.store.files import write_text
from harness.store.filesystems import check_writable
from harness.store.lock import SuiteLock
from harness.store.object_store import CACHE_ONLY
from harness.store.trial_folder import TrialFolder, TrialState
from harness.store.verified import Verified
from harness.tracker.store import mlflow_hint
from harness.tracker.tracking import Tracker
from harness.trial import preemption


@dataclass(frozen=True)
class Analysis:
    """What the sweep asks of analysis/, handed in by the command layer: below it the harness never imports
    analysis (docs/architecture.md's layers)."""

    summarize: Callable[[Suite, list[TrialConfig]], str]  # the finished trials' table, printed when trials ran


logger = logging.getLogger(__name__)


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
    analysis: Analysis | None = None,
    command: str | None = None,
) -> int:
    """`harness run` (``index_key``: where the expanded grid is indexed for `harness status`,
    harness.store.trial_index; ``analysis``: the summary and deep ensembles, without which a sweep only trains;
    ``command``: the command line, as `harness status` shows the driver)."""
    trials = expand(suite, source)
    trial_index.write(index_key, suite.suite_dir, trials)
    store = suite.store
    storage = f"{source}: storage" if not store else "the local copy of the object store"
    if dry_run:
        print(plan_text(suite, trials, address), flush=True)
        if suite.tune is not None:
            print(_study_plan(suite, source), flush=True)
        check_writable(suite.suite_dir, storage, create=False)
        trials = _check_inputs(suite, trials)
        print(status_view(status_rows(trials), verbose))
        return ExitCode.DONE
    check_writable(suite.suite_dir, storage)
    tracker = Tracker.for_suite(suite, tracking_uri) if suite.tracking.enabled else None  # a bad URI stops here
    if tracker is not None:
        tracker.connect()  # a full disk stops here; two drivers on fresh storage create the store one at a time
    with (
        SuiteLock(suite.suite_dir, store, suite.name, command or f"harness run {source}", break_lock) as lock,
        preemption.drain_on_sigusr1(suite.suite_dir),
    ):
        preemption.clear(suite.suite_dir, before=psutil.Process().create_time())  # a request to an earlier driver
        return _run_locked(suite, trials, source, address, restart, tracker, lock, verbose, analysis, index_key)


def _check_inputs(suite: Suite, trials: list[TrialConfig]) -> list[TrialConfig]:
    """Missing or broken data and evaluation sets fail here, with their message, not in every trial; so do trials
    whose folders hold results of other data than they would read now. -> the trials with their data's
    fingerprint."""
    check_data(trials)  # what `harness train` would refuse, refused for the grid before anything runs
    check_sets(trials, suite.evaluation_sets())
    trials = with_fingerprints(trials)
    stale, unchecked = [], 0
    for t in trials:
        if not (t.trial_dir / schema.CONFIG).exists():
            continue
        try:
            recorded = TrialFolder(t.trial_dir).config()
            check_same_data(t, recorded)
        except DataError as err:
            stale.append(str(err))
        except CorruptFile:
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


def _recovery(cfg: TrialConfig, state: TrialState) -> str:
    """What `harness run` will do with a corrupt trial: the trainer resumes from the newest checkpoint that reads."""
    folder = TrialFolder(cfg.trial_dir)
    damaged = state.detail.split(":", 1)[0]
    try:
        final = damaged not in schema.CHECKPOINTS and (folder / schema.CHECKPOINT).exists()
        final = final and len(folder.history()) == cfg.epochs
    except CorruptFile:
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
    analysis: Analysis | None = None,
    index_key: str | None = None,
) -> int:
    store = suite.store
    trials, states = _prepare(suite, trials, source, address, restart, tracker)
    todo = [t for t in trials if _to_run(suite, states[t.trial_id].state)]
    failures: dict[str, BaseException] = {}
    if todo:
        failures = tune_trials(suite, todo, address, tracker, lock, _scheduler(suite, source))
        if store:
            store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    if preemption.requested(suite.suite_dir):
        return _drained(suite, trials, tracker, source, verbose)
    study_tags: dict[str, dict[str, str]] = {}  # MLflow tags of a study's trials: phase, selected
    while suite.tune is not None:  # a study's next round: Optuna's next asks, the selected configurations' seeds
        resolved, new = _study_round(suite, trials, source)
        trials += new
        trial_index.write(index_key, suite.suite_dir, trials)
        study_tags = resolved.run_tags()
        attempted = {t.trial_id for t in todo}
        more = [
            t
            for t in resolved.trials
            if t.trial_id not in attempted and _to_run(suite, TrialFolder(t.trial_dir).state().state)
        ]
        if not more:  # everything ran, or failed in this run (the next `harness run` tries a failed one again)
            print(tuning.selection_text(resolved.study, resolved.selections), flush=True)
            break
        failures |= tune_trials(suite, more, address, tracker, lock, _scheduler(suite, source, resolved.study))
        if store:
            store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
        if preemption.requested(suite.suite_dir):
            return _drained(suite, trials, tracker, source, verbose)
        todo += more
    failed = set(failures)
    eval_failed = _evaluate(suite, trials, address) if suite.eval_sets else set()
    ensembles = []
    if suite.ensembles:  # before the parent run closes: ensembles.json goes with it
        from harness.evaluation.ensembles import compose_suite_ensembles

        finished = [t.trial_dir for t in trials if TrialFolder(t.trial_dir).is_finished()]
        specs = [(spec.method, spec.sizes) for spec in suite.ensembles]
        ensembles = compose_suite_ensembles(suite.suite_dir, finished, specs, suite.ensemble_average)
    if tracker is not None:
        pending = tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()], failed=failed)
        if not pending:
            _finish_tracking(suite, trials, tracker, failed, study_tags)
    if store:  # the suite's own files (parent run, status, ensembles) beside the trials
        store.push(suite.suite_dir, suite.name)
    return _outcome(suite, trials, source, todo, failures, eval_failed, ensembles, tracker, verbose, analysis)


def _prepare(suite: Suite, trials: list[TrialConfig], source: str, address, restart: bool, tracker: Tracker | None):
    """Before anything trains: --restart's clean slate, the object store's copy, the plan, the inputs checked, each
    trial's state read (corrupt ones named), what an earlier run could not send to MLflow. -> (trials, states)."""
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
    if suite.tune is not None:
        print(_study_plan(suite, source), flush=True)
    trials = _check_inputs(suite, trials)
    verified = Verified(suite.suite_dir)  # logits read whole once, not at every rerun
    states = {t.trial_id: TrialFolder(t.trial_dir).state(thorough=True, verified=verified) for t in trials}
    verified.save()
    for t in trials:
        if states[t.trial_id].state == "corrupt":
            logger.warning(f"{t.trial_id}: {states[t.trial_id].detail}; {_recovery(t, states[t.trial_id])}")
    if tracker is not None:
        tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()])  # what an earlier run could not send
    return trials, states


def _outcome(
    suite: Suite,
    trials: list[TrialConfig],
    source: str,
    todo: list[TrialConfig],
    failures: dict[str, BaseException],
    eval_failed: set[str],
    ensembles: list[str],
    tracker: Tracker | None,
    verbose: bool,
    analysis: Analysis | None,
) -> int:
    """What the sweep did, on the terminal (the status table, the deep ensembles, the summary, where to look next,
    the failures) -> its exit code."""
    failed = set(failures)
    print(status_view(status_rows(trials), verbose))
    for line in ensembles:
        print(line)
    if todo and analysis is not None:  # something new to read: a rerun with nothing to do analyses nothing
        summary = analysis.summarize(suite, trials)
        if summary:
            print("\n" + summary + "\n")
    else:
        stopped = sum(TrialFolder(t.trial_dir).state().state == "stopped" for t in trials)
        ended = f"finished ({stopped} of them stopped early by the study's ASHA)" if stopped else "finished"
        print(f"nothing to run: all {len(trials)} trials are {ended}")
    if tracker is not None:
        print(mlflow_hint(suite, tracker.uri))
    print(f"figures and tables: harness report {source}")
    ran_out = [str(e) for e in map(cause, failures.values()) if isinstance(e, ResourceError)]
    if ran_out:  # the machine, not the trials: one line, the documented exit code (harness.core.exit_codes)
        raise ResourceError(
            f"{len(ran_out)} trial(s) stopped: {ran_out[0]} (Ray's messages: {suite.suite_dir / schema.RAY_LOG})"
        )
    if failed:
        print(f"{len(failed)} trial(s) failed:", file=sys.stderr)
        for tid in sorted(failed):
            state = TrialFolder(suite.suite_dir / tid).state()
            print(f"  {tid}: {state.detail} (full error in {suite.suite_dir / tid / schema.ERROR})", file=sys.stderr)
        print(f"Ray's own messages: {suite.suite_dir / schema.RAY_LOG}", file=sys.stderr)
    return ExitCode.FAILED if failed or eval_failed else ExitCode.DONE


def _drained(suite: Suite, trials: list[TrialConfig], tracker: Tracker | None, source: str, verbose: bool) -> int:
    """The sweep stopped at its trials' checkpoints as asked (harness.trial.preemption): what it kept, in MLflow too."""
    if tracker is not None:
        tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()])
    print(status_view(status_rows(trials), verbose))
    unfinished = sum(not TrialFolder(t.trial_dir).is_finished() for t in trials)
    print(
        f"drained: stopped at the trials' checkpoints as asked ({suite.suite_dir / schema.DRAIN}); {unfinished} "
        f"trial(s) resume where they stopped: harness run {source}",
        flush=True,
    )
    return ExitCode.PREEMPTED


def _study_plan(suite: Suite, source: str) -> str:
    """The study's two phases; the second's cost, that of its trials' shapes (the recipe's at the final seeds:
    the searched keys change no shape) until the selection is known; a Bayesian search's first phase too (the plan
    above holds only the configurations asked so far)."""
    from harness.planning.suite import build_trial, study

    plan = study(suite, source)
    final = [
        build_trial(suite, point, {"seed": s, **tuning.final_keys(suite.tune)}, source)
        for point in plan.points.values()
        for s in suite.tune.final_seeds
    ]
    lines = tuning.plan_lines(plan)
    if suite.tune.search == "optuna":
        shapes = [build_trial(suite, point, {}, source) for point in plan.points.values()] * suite.tune.trials
        lines += _phase_cost(suite, shapes, "phase 1", f"at most: {suite.tune.trials} configurations per setting")
    lines += _phase_cost(
        suite, final, "phase 2", "at most: a selected configuration at the search seed is its own trial"
    )
    return "\n".join(lines)


def _phase_cost(suite: Suite, shapes: list[TrialConfig], phase: str, what: str) -> list[str]:
    """A phase's cost lines, from its trials' shapes (the plan's cost and GPU-hour lines, renamed)."""
    lines = plan_text(suite, shapes).splitlines()
    cost = [line.replace("cost: ", f"{phase} cost ({what}; from its shapes): ") for line in lines if "cost: " in line]
    return cost + [f"{phase} {line.strip()}" for line in lines if line.strip().startswith("total")]


def _to_run(suite: Suite, state: str) -> bool:
    """Whether a trial in this state trains: all but finished ones, and those a study's ASHA stopped (resumed when
    the suite no longer asks for ASHA)."""
    return state != "finished" and not (state == "stopped" and suite.tune is not None and suite.tune.scheduler)


def _scheduler(suite: Suite, source: str, study=None):
    """A study's ASHA over its search trials (harness.execution.tune_run.StudyScheduler), or None."""
    if suite.tune is None or suite.tune.scheduler != "asha":
        return None
    from harness.execution.tune_run import StudyScheduler
    from harness.planning.suite import study as suite_study

    return StudyScheduler(study or suite_study(suite, source))


def _study_round(suite: Suite, trials: list[TrialConfig], source: str):
    """The study as its folders stand (harness.planning.tuning.resolve: the selection on validation data only, Optuna's
    next asks); -> it, and its trials not in ``trials`` yet, with their data's fingerprint."""
    from harness.planning.suite import resolved_study

    resolved = resolved_study(suite, source)
    known = {t.trial_id for t in trials}
    new = [t for t in resolved.trials if t.trial_id not in known]
    return resolved, _check_inputs(suite, new) if new else []


def _evaluate(suite: Suite, trials: list[TrialConfig], address: str | None) -> set[str]:
    """The suite's evaluation sets on every finished trial that lacks one; -> the trials that failed."""
    from harness.execution.evaluation import evaluate_trials

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
    from harness.tracker.tracking import warn

    try:
        tracker.forget(trial_ids)
    except Exception as err:  # an outage: the old runs stay, the new ones are sent beside them later
        warn(f"tracking: could not delete the restarted trials' runs ({type(err).__name__}: {str(err)[:200]})")


def _finish_tracking(
    suite: Suite, trials, tracker: Tracker, failed: set[str], study_tags: dict[str, dict[str, str]]
) -> None:
    from harness.tracker.tracking import warn

    try:
        summary = suite.suite_dir / schema.STATUS
        write_text(summary, status_table(status_rows(trials)) + "\n")
        # the SLURM jobs that ran the sweep (harness.execution.slurm), as their record stood when this driver ended
        artifacts = [
            summary,
            suite.suite_dir / schema.ENSEMBLES,
            suite.suite_dir / schema.SLURM_DIR / schema.SLURM_JOBS,
        ]
        done = all(TrialFolder(t.trial_dir).is_finished() for t in trials)
        tracker.tag_trials(study_tags)
        tracker.finish_parent(artifacts, "FINISHED" if done else "FAILED")
    except Exception as err:
        warn(f"tracking: could not close the sweep's parent run ({type(err).__name__}: {err})")
