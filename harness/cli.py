"""The ``harness`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from harness import logs, schema
from harness.catalog import build_config, load_trial_config
from harness.config import ConfigError, TrialConfig, parse_overrides
from harness.exit_codes import ExitCode, exception_codes
from harness.results import out_of_memory, out_of_space

logger = logging.getLogger(__name__)


def _trial_config(args):
    """The trial config of `train` and `bench`: the YAML file, then --set overrides, then --data-dir."""
    overrides = list(args.set or [])
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    return load_trial_config(args.config, overrides)


def cmd_train(args) -> int:
    from harness.data import with_fingerprints
    from harness.launch import train_trial

    cfg = with_fingerprints([_trial_config(args)])[0]
    cpus, gpus = 1.0, 0.0
    if cfg.workers_per_trial > 1:  # N workers through Ray Train: $RAY_ADDRESS, else a local Ray of its own
        from harness.cluster import start_ray
        from harness.data import check_available
        from harness.trainer import resolve_device

        check_available(cfg)
        start_ray()
        gpus = 1.0 if resolve_device(cfg.device).type == "cuda" else 0.0
        cpus = max(1.0, (os.cpu_count() or 1) // cfg.workers_per_trial) if not gpus else 1.0
        print(
            f"{cfg.trial_id}: {cfg.workers_per_trial} workers ({'GPU' if gpus else f'{cpus:g} CPUs'} each), "
            f"engine {cfg.engine}",
            flush=True,
        )
    try:
        metrics = train_trial(
            cfg,
            restart=args.restart,
            cpus_per_worker=cpus,
            gpus_per_worker=gpus,
            on_epoch=lambda row: (
                print(f"epoch {row['epoch']}/{cfg.epochs} loss {row['train_loss']:.3f}", flush=True)
                if cfg.workers_per_trial > 1
                else None
            ),
        )
    except KeyboardInterrupt:
        raise Interrupted(_interrupted([cfg.trial_dir], "harness train")) from None
    print(format_summary(cfg, metrics))
    return ExitCode.DONE


class Interrupted(Exception):
    """Ctrl-C, with what was kept."""


def _interrupted(trial_dirs: list[Path], command: str) -> str:
    """What Ctrl-C kept: only trials with an end-of-epoch checkpoint resume where they stopped."""
    from harness.results import TrialFolder

    partial = [(d, state) for d in trial_dirs if (state := TrialFolder(d).state()).state == "partial"]
    if not partial:
        return f"interrupted before any epoch ended: nothing to resume from; `{command}` starts again from scratch"
    epochs = ", ".join(f"{d.name} after epoch {state.epochs}" for d, state in partial[:5])
    more = f" and {len(partial) - 5} more" if len(partial) > 5 else ""
    return (
        f"interrupted; run `{command}` again to resume from the last end-of-epoch checkpoints ({epochs}{more}); "
        f"epochs in progress are lost"
    )


def format_summary(cfg: TrialConfig, metrics: dict) -> str:
    """The one-screen summary printed after a trial."""

    def pct(key: str) -> str:
        return f"{100 * metrics[key]:.2f}%" if key in metrics else "-"

    heads = " / ".join(
        f"{100 * metrics[f'head{i}_top1']:.2f}" for i in range(cfg.num_inputs) if f"head{i}_top1" in metrics
    )
    lines = [
        f"trial      {cfg.trial_id}",
        f"setup      {cfg.method} on {cfg.dataset}, {cfg.model}-{cfg.depth}-{cfg.width}, "
        f"M={cfg.num_inputs}, b={cfg.b}, "
        f"{cfg.epochs} epochs, seed {cfg.seed}",
        f"params     {metrics.get('num_params', 0):,}",
        f"top-1      {pct('top1')}   top-5 {pct('top5')}   heads {heads}",
        f"NLL        {metrics['nll']:.4f}   ECE {metrics['ece']:.4f}   Brier {metrics['brier']:.4f}",
        f"calibrated NLL {metrics['cal_nll']:.4f}   ECE {metrics['cal_ece']:.4f}   T = {metrics['temperature']:.3f}",
        f"           ({metrics['calibration_protocol']})",
    ]
    if "ratio_error" in metrics:
        lines.append(
            f"diversity  ratio-error {metrics['ratio_error']:.3f}   disagreement {metrics['disagreement']:.3f}"
        )
    if cfg.engine != "torch" or cfg.workers_per_trial > 1:
        zero = f", ZeRO {cfg.zero_stage}" if cfg.engine == "deepspeed" else ""
        lines.append(
            f"engine     {cfg.engine}{zero}, {cfg.precision}, {metrics.get('workers', 1)} worker(s), "
            f"{cfg.grad_accum_steps} micro-batch(es) per step"
        )
    lines.append(
        f"time       train {metrics['train_time_s']:.0f} s, test {metrics['eval_time_s']:.1f} s "
        f"on {metrics['device_name']}"
    )
    lines.append(f"results    {cfg.trial_dir}")
    return "\n".join(lines)


def _bool_or_mode(value: str):
    return {"true": True, "false": False}.get(value.lower(), value)


def cmd_bench_suite(args) -> int:
    """`harness bench --suite`: every shape of a suite, alone and k at once, into the card's rate table."""
    from harness.bench.packed import measure_shapes
    from harness.bench.rates import Shape, card_slug, plan_packing, rates_dir, write_rates
    from harness.suite import expand

    suite = _load_suite_arg(argparse.Namespace(suite=args.suite, data_dir=args.data_dir))
    overrides = parse_overrides(list(args.set or []))
    trials = [build_config({**t.model_dump(), **overrides}, "--set") for t in expand(suite, str(args.suite))]
    pack = sorted(set(args.pack or [1]))
    print(f"measuring {len({Shape.of(t) for t in trials})} shape(s) "
          f"of {args.suite}, {', '.join(map(str, pack))} at once, {args.seconds:g} s each", flush=True)  # fmt: skip
    rates = measure_shapes(trials, pack, args.seconds, args.warmup)
    path = write_rates(Path(args.rates_dir or rates_dir()) / f"{card_slug(rates[0].card)}.csv", rates)
    print(f"\n{path}: {len(rates)} row(s) for {rates[0].card}")
    for shape in dict.fromkeys(r.shape for r in rates):
        packing = plan_packing(rates, shape)
        gain = f", {packing.gain:.2f}x one trial alone" if packing.gain == packing.gain else ""
        print(f"  {shape}: {packing.reason}{gain}")
    return ExitCode.DONE


def cmd_bench(args) -> int:
    from harness.bench import run_bench, save
    from harness.bench.runner import default_reference_workers

    if args.suite is not None:
        return cmd_bench_suite(args)
    cfg = _trial_config(args)
    compiles = [_bool_or_mode(c) for c in args.compile] if args.compile else [cfg.compile]
    for bs in args.batch_size or []:  # bad values stop here with the key named, not inside a timed run
        build_config({**cfg.model_dump(), "batch_size": bs}, "--batch-size")
    for mode in compiles:
        build_config(
            {**cfg.model_dump(), "engine": "torch", "zero_stage": 0, "deepspeed": {}, "compile": mode}, "--compile"
        )
    for loader in args.loader or []:
        build_config({**cfg.model_dump(), "loader": loader}, "--loader")
    workers = args.reference_workers if args.reference_workers is not None else default_reference_workers()
    result = run_bench(
        cfg,
        args.batch_size or [cfg.batch_size],
        args.precision or [cfg.precision],
        compiles,
        args.loader or [cfg.loader],
        args.warmup,
        args.steps,
        args.loader_steps,
        workers,
        reference=not args.no_reference,
        engines=args.engine,
    )
    print()
    print(result.table())
    out = (
        args.json or Path("results") / "bench" / f"{cfg.method}-{cfg.model}{cfg.depth}x{cfg.width}-{result.device}.json"
    )
    print(f"\n{save(result, out)}")
    return ExitCode.DONE


def cmd_data_prepare(args) -> int:
    from harness.data import load_dataset
    from harness.data.ffcv_loader import beton_dir, beton_path, write_beton

    raw = {"dataset": args.dataset, **parse_overrides(list(args.set or []))}
    if args.data_dir:
        raw["data_dir"] = args.data_dir
    if args.out:
        raw["ffcv_dir"] = args.out
    cfg = build_config(raw, "harness data prepare")
    data = load_dataset(cfg)
    for split in ("train", "test"):
        arrays = getattr(data, split)
        path = write_beton(arrays, beton_path(beton_dir(cfg), cfg.dataset, split), workers=args.workers)
        print(f"{path}: {len(arrays)} images, {path.stat().st_size / 2**20:.1f} MiB")
    return ExitCode.DONE


def _load_suite_arg(args):
    from harness.suite import load_suite

    return load_suite(args.suite, data_dir=getattr(args, "data_dir", None))


def cmd_run(args) -> int:
    from harness import trial_index
    from harness.sweep import run_sweep

    suite = _load_suite_arg(args)
    # the grid as `harness status SUITE` will expand it (no --data-dir there): indexed for it
    index_key = None if args.data_dir else trial_index.key(Path(args.suite), None, getattr(args, "plugin", []))
    try:
        return run_sweep(
            suite,
            str(args.suite),
            index_key=index_key,
            address=args.address,
            restart=args.restart,
            dry_run=args.dry_run,
            tracking_uri=args.tracking_uri,
            break_lock=args.break_lock,
            verbose=args.verbose,
            summarize=_run_summary,
        )
    except KeyboardInterrupt:
        from harness.suite import expand

        dirs = [t.trial_dir for t in expand(suite, str(args.suite))]
        raise Interrupted(_interrupted(dirs, f"harness run {args.suite}")) from None


def _run_summary(suite, trials) -> str:
    """The table `harness run` prints once trials ran: the report's terminal summary of the finished ones."""
    from analysis.report import terminal_summary

    return terminal_summary(
        suite.suite_dir,
        [(e.method, e.sizes) for e in suite.ensembles] or None,
        suite.ensemble_average,
        {t.trial_id: t.record() for t in trials},
    )


def _results_target(target: str):
    """`status` / `report` TARGET -> (local suite folder, object store or None, suite name, suite or None).
    A suite or folder in an object store is first copied here (without checkpoints)."""
    from harness.storage import CACHE_ONLY, ObjectStore, driver_cache_dir, is_uri

    suite = None
    if is_uri(target):
        parent, name = target.rstrip("/").rsplit("/", 1)
        store, suite_dir = ObjectStore(parent), driver_cache_dir(parent) / name
    elif Path(target).is_dir():
        store, suite_dir, name = None, Path(target), Path(target).name
    else:
        suite = _load_suite_arg(argparse.Namespace(suite=Path(target)))
        store, suite_dir, name = suite.store, suite.suite_dir, suite.name
    if store is not None:
        store.pull(name, suite_dir, skip=CACHE_ONLY)
    return suite_dir, store, name, suite


def cmd_status(args) -> int:
    from harness import trial_index
    from harness.lock import describe, running_trials
    from harness.status import status_rows, status_view, trials_in_folder
    from harness.storage import is_uri

    index_key = None
    if not Path(args.target).is_dir() and not is_uri(str(args.target)):
        index_key = trial_index.key(Path(args.target), None, getattr(args, "plugin", []))
    indexed = trial_index.read(index_key)  # a grid listed before: no registry, no validation (harness.trial_index)
    if indexed is not None:
        (suite_dir, trials), store, suite = indexed, None, None
        name = suite_dir.name
    else:
        suite_dir, store, name, suite = _results_target(args.target)
    driver, running = running_trials(suite_dir, store, name)
    corrupt = {}
    if indexed is None and suite is None:
        trials, corrupt = trials_in_folder(suite_dir)
        if not trials and not corrupt:
            raise ConfigError(
                f"{args.target}: no trial folders in {suite_dir.resolve()} (expected <trial_id>/{schema.CONFIG} inside)"
            )
    elif indexed is None:
        from harness.suite import expand

        trials = expand(suite, str(args.target))
        trial_index.write(index_key, suite_dir, trials)
    print(status_view(status_rows(trials, running, corrupt), args.verbose))
    if driver is not None:
        print(f"driver: {describe(driver)}")
    return ExitCode.DONE


def cmd_sync(args) -> int:
    from harness.lock import SuiteLock
    from harness.results import TrialFolder
    from harness.suite import expand
    from harness.tracking import Tracker

    _, store, _, suite = _results_target(str(args.suite))
    if suite is None:
        raise ConfigError(f"{args.suite}: `harness sync` needs the suite's YAML file, not a results folder")
    trials = expand(suite, str(args.suite))
    tracker = Tracker.for_suite(suite, args.tracking_uri)
    with SuiteLock(suite.suite_dir, store, suite.name, f"harness sync {args.suite}"):
        failed = {t.trial_id for t in trials if TrialFolder(t.trial_dir).state().state == "failed"}
        pending = tracker.sync([t.trial_dir for t in trials if t.trial_dir.exists()], failed=failed)
    if pending:
        return ExitCode.FAILED
    print(f"{tracker.uri}: {sum(t.trial_dir.exists() for t in trials)} trial folder(s) checked")
    return ExitCode.DONE


def cmd_report(args) -> int:
    from analysis.report import build_report

    suite_dir, store, name, suite = _results_target(args.target)
    specs, expected, grid = None, {}, None
    if suite is not None:
        from harness.suite import expand

        grid = {t.trial_id: t for t in expand(suite, str(args.target))}
        expected = {tid: f"{t.method}, width {t.width}, seed {t.seed}" for tid, t in grid.items()}
        specs = [(e.method, e.sizes) for e in suite.ensembles] or None
    if not suite_dir.is_dir():
        where = f"{store.uri}/{name}" if store else f"{suite_dir.resolve()}"
        relative = (
            ""
            if store or Path(suite.storage if suite else suite_dir).is_absolute()
            else (
                " (`storage` is relative to the folder `harness` runs in; run it where you ran `harness run`, "
                "or give the results folder)"
            )
        )
        raise ConfigError(f"no results yet in {where}{relative}: run `harness run` first")
    if suite is not None and suite.tracking.enabled:  # an unusable store stops here, before anything is written
        from harness.tracking import check_store, suite_tracking_uri

        check_store(suite_tracking_uri(suite, args.tracking_uri))
    average = args.ensemble_average or (suite.ensemble_average if suite is not None else None)
    records = {tid: t.record() for tid, t in grid.items()} if grid is not None else None
    report = build_report(suite_dir, specs, expected, source=str(args.target), average=average, grid=records)
    if report["not_in_suite"]:
        logger.warning(
            f"{len(report['not_in_suite'])} folder(s) under {suite_dir} are not this suite's trials and were left "
            f"out (the page lists them with the reason)"
        )
    for tid, why in report["corrupt"].items():
        logger.warning(f"{tid} left out of the report: {why}")
    if store is not None:
        store.push(report["dir"], f"{name}/{schema.REPORT_DIR}")
    if report.get("summary"):
        print(report["summary"] + "\n")
    print(
        f"report: {(report['dir'] / schema.REPORT_PAGE).resolve().as_uri()} ({len(report['tables'])} table files, "
        f"{len(report['figures'])} figure files)"
    )
    if report["missing"]:
        print(f"{len(report['missing'])} trial(s) missing from the report:")
        for tid, why in report["missing"].items():
            print(f"  {tid}: {why}")
    if suite is not None and suite.tracking.enabled:
        from harness.tracking import log_report, mlflow_hint

        log_report(suite, report["dir"], args.tracking_uri, report.get("summary_frame"))
        print(mlflow_hint(suite, args.tracking_uri))
    return ExitCode.DONE


def cmd_evaluate(args) -> int:
    from harness.data.eval_sets import parse_eval_set, with_absolute_path
    from harness.evaluate import check_sets, evaluate_trials, finished_trials, headline
    from harness.storage import CACHE_ONLY, is_uri

    sets = []
    for name in args.on:
        try:
            sets.append(parse_eval_set(with_absolute_path(name)))
        except ValueError as err:
            raise ConfigError(f"--on {err}") from None
    if is_uri(args.target):
        raise ConfigError(f"{args.target}: give the suite's YAML file (it names the object store), not its URI")
    from harness.config import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, args.device):
        raise ConfigError(f"--device {args.device!r}: expected auto, cpu, cuda or cuda:N")
    suite, finished = finished_trials(Path(args.target), args.data_dir)
    resources = suite.resources if suite else None
    check_sets(finished, sets)  # a missing set stops here, before any network is loaded
    from harness.lock import SuiteLock

    where = (suite.suite_dir, suite.store, suite.name) if suite else (Path(args.target), None, None)
    with SuiteLock(*where, f"harness evaluate {args.target}"):  # never beside a run writing the same trials
        records, failed = evaluate_trials(
            finished,
            sets,
            address=args.address,
            cpus=resources.cpus if resources else 1.0,
            gpus=resources.gpus if resources else 0.0,
            device=args.device,
            force=args.force,
        )
        if suite is not None and suite.store:  # the evaluations, for the tracker and the report
            suite.store.pull(suite.name, suite.suite_dir, skip=CACHE_ONLY)
    width = max(len(t) for t in records) if records else 0
    for tid in sorted(records):
        for record in records[tid].values():
            print(f"{tid:<{width}}  {record['set']:<22} {headline(record)}")
    if suite is not None and suite.tracking.enabled:
        from harness.tracking import Tracker, mlflow_hint

        tracker = Tracker.for_suite(suite, args.tracking_uri)
        if not tracker.sync([t.trial_dir for t in finished]):
            print(mlflow_hint(suite, args.tracking_uri))
    for tid, why in failed.items():
        print(f"error: {tid}: {why}", file=sys.stderr)
    print(f"robustness, OOD and selective-prediction sections: harness report {args.target}")
    return ExitCode.FAILED if failed else ExitCode.DONE


def cmd_data_corrupt(args) -> int:
    from harness.data import load_dataset
    from harness.data.corrupt import write_generated_set
    from harness.data.datasets import default_data_dir
    from harness.data.eval_sets import CORRUPTION_SETS, CORRUPTIONS

    if f"{args.dataset}-c" not in CORRUPTION_SETS or args.dataset == "tinyimagenet":
        raise ConfigError(f"{args.dataset}: `harness data corrupt` writes the CIFAR-C layout: cifar10 or cifar100")
    unknown = sorted(set(args.corruptions or []) - set(CORRUPTIONS))
    if unknown:
        raise ConfigError(f"--corruptions: unknown {', '.join(unknown)}; allowed: {', '.join(CORRUPTIONS)}")
    raw = {"dataset": args.dataset, **({"data_dir": args.data_dir} if args.data_dir else {})}
    if args.images:
        raw["test_subset"] = args.images
    cfg = build_config(raw, "harness data corrupt")
    data = load_dataset(cfg)
    folder = CORRUPTION_SETS[f"{args.dataset}-c-generated"][1][0]
    out = Path(args.out) if args.out else default_data_dir(cfg.data_dir) / folder
    print(f"writing a generated stand-in (not the official {args.dataset}-C) of {len(data.test)} test images to {out}")
    write_generated_set(
        data.test.x,
        data.test.y,
        out,
        args.dataset,
        data.source + (f", a random subset of {args.images} test images" if args.images else ""),
        seed=args.seed,
        corruptions=tuple(args.corruptions or CORRUPTIONS),
        force=args.force,
    )
    name = f"{args.dataset}-c-generated" + ("" if not args.out else f"={out}")
    print(f"{out}: done; evaluate on it with `harness evaluate SUITE --on {name}`")
    return ExitCode.DONE


def cmd_list(args) -> int:
    from harness.catalog import listing

    if args.suite is not None:  # its plugins load with it
        from harness.suite import load_suite

        load_suite(args.suite)
    print(listing(markdown=args.markdown, keys=args.keys))
    return ExitCode.DONE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Benchmarking harness for MixMo and its baselines.")
    sub = parser.add_subparsers(dest="command", required=True)
    # what registers your own methods, models, datasets, metrics: Python, run as such (README, "Benchmark your own")
    with_plugins = argparse.ArgumentParser(add_help=False)
    with_plugins.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE|MODULE",
        help="a plugin file or importable module to load first (repeatable; a suite's `plugins:` load too)",
    )

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[with_plugins], **kw)

    listing = command("list", help="methods (with their keys), models, datasets, metrics, evaluation sets")
    listing.add_argument("suite", type=Path, nargs="?", help="a suite file: what its plugins add too")
    listing.add_argument("--markdown", action="store_true", help="the README's table of methods and their keys")
    listing.add_argument(
        "--keys", action="store_true", help="the harness's own trial keys too (with --markdown: alone)"
    )
    listing.set_defaults(func=cmd_list)

    train = command("train", help="run one trial locally (no Ray)")
    train.add_argument("config", type=Path, nargs="?", help="trial YAML file (defaults: the paper's CIFAR-100 recipe)")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key (repeatable; `harness list --keys` lists them)",
    )
    train.add_argument("--data-dir", help="dataset folder (else the config's data_dir, else $HARNESS_DATA_DIR)")
    train.add_argument("--restart", action="store_true", help="discard an existing checkpoint and results")
    train.set_defaults(func=cmd_train)

    run = command("run", help="run a suite's grid of trials on Ray Tune, tracked in MLflow (resumable)")
    run.add_argument("suite", type=Path, help="suite YAML file")
    run.add_argument("--address", default=None, help="Ray cluster address (else $RAY_ADDRESS, else a local Ray)")
    run.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (else the suite's, else $MLFLOW_TRACKING_URI, else sqlite:///<storage>/mlflow.db)",
    )
    run.add_argument("--data-dir", help="dataset folder (else the suite's data_dir, else $HARNESS_DATA_DIR)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    run.add_argument("--verbose", action="store_true", help="list every trial (a large grid is summarised)")
    run.add_argument("--restart", action="store_true", help="delete this suite's trial folders and start clean")
    run.add_argument(
        "--break-lock",
        action="store_true",
        help="take the suite over from a driver that holds its "
        "lock but is gone (a lock whose holder died on this host, or went silent, is taken over anyway)",
    )
    run.set_defaults(func=cmd_run)

    status = command("status", help="a table of a suite's trials and their states")
    status.add_argument(
        "target", help="suite YAML file, a results/<suite> folder, or its object-store URI (s3://.../<suite>)"
    )
    status.add_argument("--verbose", action="store_true", help="list every trial (a large grid is summarised)")
    status.set_defaults(func=cmd_status)

    report = command("report", help="tables, width plots and calibration plots of a sweep (HTML page)")
    report.add_argument(
        "target", help="suite YAML file, a results/<suite> folder, or its object-store URI (s3://.../<suite>)"
    )
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to log the report to (as for run)")
    report.add_argument(
        "--ensemble-average",
        choices=["probabilities", "logits"],
        help="read the same saved logits under this aggregation rule (default: the suite's `ensemble_average`)",
    )
    report.set_defaults(func=cmd_report)

    bench = command("bench", help="samples/s of the loader and the training step against the authors' pipeline")
    bench.add_argument("config", type=Path, nargs="?", help="trial YAML file: dataset, model, method, M, b, ...")
    bench.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key (repeatable; `harness list --keys` lists them)",
    )
    bench.add_argument("--data-dir", help="dataset folder (else the config's data_dir, else $HARNESS_DATA_DIR)")
    bench.add_argument("--batch-size", type=int, nargs="+", help="batch sizes of the step (default: the config's)")
    bench.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], help="precisions of the step")
    bench.add_argument(
        "--compile", nargs="+", help="false, true or a torch.compile mode (reduce-overhead, max-autotune)"
    )
    bench.add_argument("--loader", nargs="+", help="device and/or ffcv (default: the config's)")
    bench.add_argument(
        "--engine", nargs="+", choices=["torch", "deepspeed"], help="engines of the step (default: the config's)"
    )
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, worker start-up)")
    bench.add_argument("--steps", type=int, default=20, help="timed training steps per row")
    bench.add_argument("--loader-steps", type=int, default=200, help="timed batches per loader row")
    bench.add_argument(
        "--reference-workers", type=int, default=None, help="reference DataLoader workers (default: min(10, CPUs))"
    )
    bench.add_argument("--no-reference", action="store_true", help="skip the reference pipeline")
    bench.add_argument("--json", type=Path, help="where to write the results (default results/bench/...json)")
    bench.add_argument(
        "--suite", type=Path, help="measure every shape of this suite into benchmarks/rates/<card>.csv instead"
    )
    bench.add_argument("--pack", type=int, nargs="+", help="with --suite: k trials at once (default 1), e.g. 1 2 4 8")
    bench.add_argument("--seconds", type=float, default=20.0, help="with --suite: timed seconds per measurement")
    bench.add_argument("--rates-dir", help="with --suite: folder of the rate tables (default benchmarks/rates)")
    bench.set_defaults(func=cmd_bench)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser(
        "prepare", parents=[with_plugins], help="write a dataset's train/test splits as FFCV .beton files"
    )
    prepare.add_argument("dataset", help="a registered dataset (cifar10, cifar100, tinyimagenet, synthetic)")
    prepare.add_argument("--format", choices=["ffcv"], default="ffcv", help="output format")
    prepare.add_argument(
        "--data-dir", help="dataset folder (else $HARNESS_DATA_DIR); .beton files go to <data-dir>/ffcv"
    )
    prepare.add_argument("--out", help="folder for the .beton files (else <data-dir>/ffcv); point ffcv_dir at it")
    prepare.add_argument("--workers", type=int, default=4, help="writer processes")
    prepare.add_argument("--set", action="append", metavar="KEY=VALUE", help="dataset keys (e.g. synthetic_size=500)")
    prepare.set_defaults(func=cmd_data_prepare)

    corrupt = data_sub.add_parser(
        "corrupt",
        parents=[with_plugins],
        help="generate a CIFAR-C stand-in (official layout, labelled generated) from the test images",
    )
    corrupt.add_argument("dataset", help="cifar10 or cifar100")
    corrupt.add_argument("--data-dir", help="dataset folder (else $HARNESS_DATA_DIR); the set goes beside the data")
    corrupt.add_argument("--out", help="output folder (else <data-dir>/CIFAR-100-C-generated or CIFAR-10-C-generated)")
    corrupt.add_argument("--images", type=int, help="a random subset of this many test images (default: all)")
    corrupt.add_argument("--corruptions", nargs="+", help="a subset of the 15 corruptions (default: all)")
    corrupt.add_argument("--seed", type=int, default=0, help="seed of the random corruptions")
    corrupt.add_argument("--force", action="store_true", help="replace a non-empty --out folder whole")
    corrupt.set_defaults(func=cmd_data_corrupt)

    evaluate = command(
        "evaluate", help="finished trials' checkpoints on corrupted, OOD or test sets (resumable, no retraining)"
    )
    evaluate.add_argument("target", help="suite YAML file or a results/<suite> folder")
    evaluate.add_argument(
        "--on",
        nargs="+",
        required=True,
        metavar="SET",
        help="evaluation sets: test, cifar100-c, cifar10-c, tinyimagenet-c, cifar100-c-generated, "
        "ood:<dataset> (cifar10, svhn, tinyimagenet, ...), ood:heldout-classes, ood:textures, ood:folder=PATH",
    )
    evaluate.add_argument(
        "--data-dir", help="where the sets and datasets are (else the suite's, else $HARNESS_DATA_DIR)"
    )
    evaluate.add_argument("--address", default=None, help="Ray cluster address (else $RAY_ADDRESS, else a local Ray)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--force", action="store_true", help="evaluate again, replacing saved logits and metrics")
    evaluate.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (as for run)")
    evaluate.set_defaults(func=cmd_evaluate)

    sync = command("sync", help="send to MLflow what an earlier run could not (tracking outage)")
    sync.add_argument("suite", type=Path, help="suite YAML file")
    sync.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (as for run)")
    sync.set_defaults(func=cmd_sync)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup()
    try:
        from harness import plugins

        for spec in getattr(args, "plugin", []):
            plugins.load(spec)
        return args.func(args)
    except Interrupted as err:
        print(err, file=sys.stderr)
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as err:  # what the machine ran out of, or an OS error on a user's path: one line
        for kinds, code in exception_codes():
            if isinstance(err, kinds):
                print(f"error: {err}", file=sys.stderr)
                return code
        if out_of_memory(err):
            asked = re.search(r"(?:tried to allocate|Tried to allocate) ([0-9.]+ ?\w+)", str(err))
            print(
                f"error: out of memory{f' (asked for {asked.group(1)} more)' if asked else ''}: lower batch_size, "
                f"the width or eval_batch_size, or run where there is more memory",
                file=sys.stderr,
            )
            return ExitCode.OUT_OF_RESOURCES
        if out_of_space(err):
            print(
                f"error: no space left on device ({_first_line(err)}); free some space and run the same "
                f"command again: it goes on from what was saved",
                file=sys.stderr,
            )
            return ExitCode.OUT_OF_RESOURCES
        if isinstance(err, OSError) and err.filename is not None:
            print(f"error: {err.filename}: {err.strerror or err}", file=sys.stderr)
            return ExitCode.REFUSED
        raise


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or ['?'])[0][:200]}"


if __name__ == "__main__":
    sys.exit(main())
