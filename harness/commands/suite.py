"""The suite commands: `harness run`, `status`, `sync`, `report` and `list`."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.commands.common import load_suite_arg, results_target, what_was_kept
from harness.core import schema
from harness.core.config import ConfigError
from harness.core.exit_codes import ExitCode, Interrupted

logger = logging.getLogger(__name__)


def cmd_run(args) -> int:
    from harness.execution.sweep import Analysis, run_sweep
    from harness.store import trial_index

    suite = load_suite_arg(args)
    # the grid as `harness status SUITE` will expand it (no --data-dir there): indexed for it
    index_key = None if args.data_dir else trial_index.key(Path(args.suite), None, getattr(args, "plugin", []))
    try:
        return run_sweep(
            suite,
            str(args.suite),
            index_key=index_key,
            command=getattr(args, "command_line", None),
            address=args.address,
            restart=args.restart,
            dry_run=args.dry_run,
            tracking_uri=args.tracking_uri,
            break_lock=args.break_lock,
            verbose=args.verbose,
            analysis=Analysis(summarize=_run_summary),
        )
    except KeyboardInterrupt:
        from harness.planning.suite import every_trial

        dirs = [t.trial_dir for t in every_trial(suite, str(args.suite))]
        raise Interrupted(what_was_kept(dirs, f"harness run {args.suite}")) from None


def _run_summary(suite, trials) -> str:
    """The table `harness run` prints once trials ran: the report's terminal summary of the finished ones."""
    from analysis.summary import terminal_summary

    return terminal_summary(
        suite.suite_dir,
        [(e.method, e.sizes) for e in suite.ensembles] or None,
        suite.ensemble_average,
        {t.trial_id: t.record() for t in trials},
    )


def cmd_status(args) -> int:
    from harness.execution.status import status_rows, status_view, trials_in_folder
    from harness.store import trial_index
    from harness.store.lock import describe, running_trials
    from harness.store.object_store import is_uri

    index_key = None
    if not Path(args.target).is_dir() and not is_uri(str(args.target)):
        index_key = trial_index.key(Path(args.target), None, getattr(args, "plugin", []))
    # a grid listed before: no registry, no validation (harness.store.trial_index)
    indexed = trial_index.read(index_key)
    if indexed is not None:
        (suite_dir, trials), store, suite = indexed, None, None
        name = suite_dir.name
    else:
        suite_dir, store, name, suite = results_target(args.target)
    driver, running = running_trials(suite_dir, store, name)
    corrupt = {}
    if indexed is None and suite is None:
        trials, corrupt = trials_in_folder(suite_dir)
        if not trials and not corrupt:
            raise ConfigError(
                f"{args.target}: no trial folders in {suite_dir.resolve()} (expected <trial_id>/{schema.CONFIG} inside)"
            )
    elif indexed is None:
        from harness.planning.suite import every_trial

        trials = every_trial(suite, str(args.target))
        trial_index.write(index_key, suite_dir, trials)
    print(status_view(status_rows(trials, running, corrupt), args.verbose))
    if driver is not None:
        print(f"driver: {describe(driver)}")
    from harness.execution.slurm import jobs_summary

    if jobs := jobs_summary(suite_dir):
        print(jobs)
    return ExitCode.DONE


def cmd_sync(args) -> int:
    from harness.planning.suite import every_trial
    from harness.store.lock import SuiteLock
    from harness.store.trial_folder import TrialFolder
    from harness.tracker.tracking import Tracker

    _, store, _, suite = results_target(str(args.suite))
    if suite is None:
        raise ConfigError(f"{args.suite}: `harness sync` needs the suite's YAML file, not a results folder")
    trials = every_trial(suite, str(args.suite))
    tracker = Tracker.for_suite(suite, args.tracking_uri)
    with SuiteLock(suite.suite_dir, store, suite.name, f"harness sync {args.suite}"):
        failed = {t.trial_id for t in trials if TrialFolder(t.trial_dir).state().state == "failed"}
        pending = tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()], failed=failed)
    if pending:
        return ExitCode.FAILED
    print(f"{tracker.uri}: {sum(t.trial_dir.exists() for t in trials)} trial folder(s) checked")
    return ExitCode.DONE


def _check_plugins_loaded(suite_dir: Path) -> None:
    """A results folder whose trials were trained with plugins (config.yaml's `plugin_code`, metrics.json's
    `metric_code`) is reported only with them loaded: one line naming the files otherwise (their labels and metric
    columns would vanish without a word)."""
    import json

    from harness.core.plugins import registries
    from harness.store.errors import CorruptFile
    from harness.store.trial_folder import TrialFolder

    by_kind = registries()
    needed: dict[str, set[str]] = {}
    for config_file in sorted(suite_dir.glob("*/" + schema.CONFIG)):
        folder = TrialFolder(config_file.parent)
        try:
            cfg = folder.config()
            metrics = folder.metrics() if (folder.path / schema.METRICS).exists() else {}
        except (CorruptFile, json.JSONDecodeError):
            continue  # the report lists it as corrupt
        for entry in cfg.get("plugin_code") or {}:
            kind, _, entry_name = entry.partition(" ")
            if entry_name not in by_kind[kind]:
                needed.setdefault(f"{kind} {entry_name}", set()).update(cfg.get("plugins") or [])
        for metric, code in (metrics.get("metric_code") or {}).items():
            if metric not in by_kind["metric"]:
                needed.setdefault(f"metric {metric}", set()).add(code.get("plugin", "?"))
    if needed:
        files = sorted({f for fs in needed.values() for f in fs})
        raise ConfigError(
            f"{suite_dir}: its trials were trained with plugins not loaded here ({', '.join(sorted(needed))}): pass "
            + " ".join(f"--plugin {f}" for f in files)
            + " (or report the suite file, whose `plugins:` load them)"
        )


def cmd_report(args) -> int:
    from analysis.report import build_report

    suite_dir, store, name, suite = results_target(args.target)
    specs, expected, grid, study = None, {}, None, None
    if suite is not None:
        from harness.planning.suite import expand

        if suite.tune is not None:  # every configuration tried, and the final phase the selection implies
            study = study_for_report(suite, str(args.target))
            grid = {t.trial_id: t for t in study["resolved"].trials}
        else:
            grid = {t.trial_id: t for t in expand(suite, str(args.target))}
        expected = {tid: f"{t.method}, width {t.width}, seed {t.seed}" for tid, t in grid.items()}
        specs = [(e.method, e.sizes) for e in suite.ensembles] or None
    if suite is None and suite_dir.is_dir():
        _check_plugins_loaded(suite_dir)
    if not suite_dir.is_dir():
        where = f"{store.uri}/{name}" if store else f"{suite_dir.resolve()}"
        relative = (
            ""
            if store or Path(suite.storage if suite else suite_dir).is_absolute()
            else (
                " (a suite without `storage:` keeps its results in ./results of the folder `harness` runs in; run "
                "it where you ran `harness run`, or give the results folder)"
            )
        )
        raise ConfigError(f"no results yet in {where}{relative}: run `harness run` first")
    if suite is not None and suite.tracking.enabled:  # an unusable store stops here, before anything is written
        from harness.tracker.store import check_store, suite_tracking_uri

        check_store(suite_tracking_uri(suite, args.tracking_uri))
    average = args.ensemble_average or (suite.ensemble_average if suite is not None else None)
    records = {tid: t.record() for tid, t in grid.items()} if grid is not None else None
    report = build_report(
        suite_dir,
        specs,
        expected,
        source=str(args.target),
        average=average,
        grid=records,
        study=study,
        verify=args.verify,
        figures=not args.no_figures,
    )
    if store is not None:
        store.push(report["dir"], f"{name}/{schema.REPORT_DIR}")
    _print_report(report, suite_dir)
    if suite is not None and suite.tracking.enabled:
        from harness.tracker.store import mlflow_hint
        from harness.tracker.tracking import log_report

        log_report(suite, report["dir"], args.tracking_uri, report.get("summary_frame"))
        print(mlflow_hint(suite, args.tracking_uri))
    if args.verify:
        wrong = report.get("disagreements", {})
        print(
            f"verify: every value recomputed from the saved logits; {len(wrong)} trial(s) whose {schema.METRICS} "
            "disagrees" + (":" if wrong else " (none)")
        )
        for tid, lines in wrong.items():
            print(f"  {tid}: " + "; ".join(lines))
        if wrong:
            return ExitCode.FAILED
    return ExitCode.DONE


def _print_report(report: dict, suite_dir: Path) -> None:
    """What `harness report` says on the terminal: folders left out, the compact table, the page, recomputed
    metrics and missing trials."""
    if report["not_in_suite"]:
        logger.warning(
            f"{len(report['not_in_suite'])} folder(s) under {suite_dir} are not this suite's trials and were left "
            f"out (the page lists them with the reason)"
        )
    for tid, why in report["corrupt"].items():
        logger.warning(f"{tid} left out of the report: {why}")
    if report.get("summary"):
        print(report["summary"] + "\n")
    print(
        f"report: {(report['dir'] / schema.REPORT_PAGE).resolve().as_uri()} ({len(report['tables'])} table files, "
        f"{len(report['figures'])} figure files)"
    )
    recomputed = sorted({name for names in report.get("recomputed", {}).values() for name in names})
    if recomputed:
        print(
            f"{', '.join(recomputed)} recomputed from the saved logits for {len(report['recomputed'])} trial(s): the "
            f"metric's code changed since they were trained (their {schema.METRICS} keeps the old value)"
        )
    if report["missing"]:
        print(f"{len(report['missing'])} trial(s) missing from the report:")
        for tid, why in report["missing"].items():
            print(f"  {tid}: {why}")


def study_for_report(suite, source: str) -> dict:
    """A tuned suite's study for its report: the selection as the folders stand, each searched key's recipe value,
    the validation split's size."""
    from harness.planning.suite import build_trial, resolved_study

    resolved = resolved_study(suite, source)
    recipe = {}
    for setting, point in resolved.study.points.items():
        record = build_trial(suite, point, {}, source).record()
        recipe[setting] = {k: record.get(k, "-") for k in resolved.study.drawn[setting][0]}
    return {"resolved": resolved, "recipe": recipe, "val_size": int(suite.base.get("val_size", 0))}


def cmd_list(args) -> int:
    from harness.evaluation.kinds import allowed_names
    from harness.trial.listing import listing

    if args.suite is not None:  # its plugins load with it
        from harness.planning.suite import load_suite

        load_suite(args.suite)
    print(listing(markdown=args.markdown, keys=args.keys, eval_sets=allowed_names()))
    return ExitCode.DONE
