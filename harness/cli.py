"""The ``harness`` command line: the parser, and a dispatcher that runs a command's handler (harness.commands)
and turns what it raises into one line and its exit code (harness.core.exit_codes)."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
import typing
from pathlib import Path

from harness.core import logs
from harness.core.config import DEVICE_PATTERN, PATTERN_HELP, TrialConfig
from harness.core.exit_codes import ExitCode, Interrupted
from harness.store.errors import out_of_memory, out_of_space


def exception_codes() -> list[tuple[tuple[type, ...], ExitCode]]:
    """Which exceptions end a command with which code, in the order they are tried (one line on stderr each)."""
    from harness.core.config import ConfigError
    from harness.core.plugins import PluginError
    from harness.data import DataError
    from harness.store.errors import CorruptFile, ResourceError

    return [
        ((ConfigError, DataError, CorruptFile, PluginError), ExitCode.REFUSED),
        ((ResourceError,), ExitCode.OUT_OF_RESOURCES),
        ((FloatingPointError,), ExitCode.FAILED),  # the trainer's divergence check
    ]


def _choices(key: str) -> list[str]:
    """A trial key's allowed values, from TrialConfig's annotation (one home for them)."""
    return list(typing.get_args(TrialConfig.model_fields[key].annotation))


def build_parser() -> argparse.ArgumentParser:
    """The parser: each command's arguments are added by its own function below, in `harness --help`'s order."""
    parser = argparse.ArgumentParser(prog="harness", description="Benchmarking harness for MixMo and its baselines.")
    sub = parser.add_subparsers(dest="command", required=True)
    # what registers your own methods, models, datasets, metrics: Python, run as such (docs/plugins.md)
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

    _listing_command(command)
    _check_command(command)
    _train_command(command)
    _run_command(command)
    _slurm_command(command)
    _status_command(command)
    _report_command(command)
    _bench_command(command)
    _data_commands(sub, with_plugins)
    _evaluate_command(command)
    _sync_command(command)
    return parser


def _listing_command(command) -> None:
    """`harness list`."""

    listing = command("list", help="methods (with their keys), models, datasets, metrics, evaluation sets")
    listing.add_argument("suite", type=Path, nargs="?", help="a suite file: what its plugins add too")
    listing.add_argument(
        "--markdown", action="store_true", help="the table of methods and their keys of docs/suites.md"
    )
    listing.add_argument(
        "--keys", action="store_true", help="the harness's own trial keys too (with --markdown: alone)"
    )
    listing.set_defaults(func="suite:cmd_list")


def _check_command(command) -> None:
    """`harness check-plugin`."""
    check = command(
        "check-plugin",
        help="the contract checks of a plugin file's methods, models, datasets and metrics, on tiny data",
    )
    check.add_argument("file", help="the plugin file (or importable module) to check")
    check.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a key of every tiny trial (e.g. epochs=6)"
    )
    check.set_defaults(func="check:cmd_check_plugin")


def _train_command(command) -> None:
    """`harness train`."""
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
    train.set_defaults(func="train:cmd_train")


def _run_command(command) -> None:
    """`harness run`."""
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
    run.set_defaults(func="suite:cmd_run")


def _slurm_command(command) -> None:
    """`harness slurm`."""
    slurm = command("slurm", help="a suite's sweep as a SLURM batch script (its own Ray, requeued at the walltime)")
    slurm.add_argument("suite", type=Path, help="suite YAML file")
    slurm.add_argument("--submit", action="store_true", help="sbatch it (this shell's environment goes with it)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--account", help="SLURM account to charge")
    slurm.add_argument("--time", help="walltime, as sbatch takes it (e.g. 1-00:00:00; default: the partition's)")
    slurm.add_argument("--nodes", type=int, help="nodes (default 1)")
    slurm.add_argument("--cpus-per-node", type=int, help="CPUs per node (default: the trials that run at once)")
    slurm.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: the trials that run at once)")
    slurm.add_argument(
        "--grace", type=int, default=600, help="seconds before the walltime at which trials stop at a checkpoint"
    )
    slurm.add_argument("--max-requeues", type=int, default=3, help="how often the job requeues itself (default 3)")
    slurm.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line that makes the environment "
        "(repeatable: module load ..., conda activate ...; default: this Python's bin folder on PATH)",
    )
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="a further sbatch option (repeatable: --qos=..., --constraint=..., --mem=...)",
    )
    slurm.add_argument(
        "--container", metavar="SIF", help="an Apptainer image (deploy/harness.def) to run ray and harness in"
    )
    slurm.add_argument("--data-dir", help="dataset folder on the cluster (else the suite's, else $HARNESS_DATA_DIR)")
    slurm.add_argument("--tracking-uri", default=None, help="MLflow tracking URI of the jobs (as for run)")
    slurm.set_defaults(func="slurm:cmd_slurm")


def _status_command(command) -> None:
    """`harness status`."""
    status = command("status", help="a table of a suite's trials and their states")
    status.add_argument(
        "target", help="suite YAML file, a results/<suite> folder, or its object-store URI (s3://.../<suite>)"
    )
    status.add_argument("--verbose", action="store_true", help="list every trial (a large grid is summarised)")
    status.set_defaults(func="suite:cmd_status")


def _report_command(command) -> None:
    """`harness report`."""
    report = command("report", help="tables, width plots and calibration plots of a sweep (HTML page)")
    report.add_argument(
        "target", help="suite YAML file, a results/<suite> folder, or its object-store URI (s3://.../<suite>)"
    )
    report.add_argument("--tracking-uri", default=None, help="MLflow tracking URI to log the report to (as for run)")
    report.add_argument(
        "--ensemble-average",
        choices=_choices("ensemble_average"),
        help="read the same saved logits under this aggregation rule (default: the suite's `ensemble_average`)",
    )
    report.add_argument(
        "--verify",
        action="store_true",
        help="recompute every value from the saved logits, ignoring the recorded metrics and the report's cache, "
        "and list each disagreement with the recorded ones (exit 1 if any)",
    )
    report.add_argument(
        "--no-figures",
        action="store_true",
        help="the tables and the page without figures: seconds where matplotlib takes most of a report's time",
    )
    report.set_defaults(func="suite:cmd_report")


def _bench_command(command) -> None:
    """`harness bench`."""
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
    bench.add_argument("--precision", nargs="+", choices=_choices("precision"), help="precisions of the step")
    bench.add_argument(
        "--compile", nargs="+", help="false, true or a torch.compile mode (reduce-overhead, max-autotune)"
    )
    bench.add_argument("--loader", nargs="+", help="device and/or ffcv (default: the config's)")
    bench.add_argument(
        "--engine", nargs="+", help="registered engines of the step, e.g. torch deepspeed (default: the config's)"
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
        "--suite", type=Path, help="measure every shape of this suite into <rates dir>/<card>.csv instead"
    )
    bench.add_argument("--pack", type=int, nargs="+", help="with --suite: k trials at once (default 1), e.g. 1 2 4 8")
    bench.add_argument("--seconds", type=float, default=20.0, help="with --suite: timed seconds per measurement")
    bench.add_argument(
        "--rates-dir", help="with --suite: rate tables folder (default $HARNESS_RATES_DIR, else <cache>/rates)"
    )
    bench.set_defaults(func="bench:cmd_bench")


def _data_commands(sub, with_plugins) -> None:
    """`harness data` and its subcommands."""
    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser(
        "prepare", parents=[with_plugins], help="write a dataset's train/test splits as FFCV .beton files"
    )
    prepare.add_argument("dataset", help="a registered dataset (`harness list` names them)")
    prepare.add_argument("--format", choices=["ffcv"], default="ffcv", help="output format")
    prepare.add_argument(
        "--data-dir", help="dataset folder (else $HARNESS_DATA_DIR); .beton files go to <data-dir>/ffcv"
    )
    prepare.add_argument("--out", help="folder for the .beton files (else <data-dir>/ffcv); point ffcv_dir at it")
    prepare.add_argument("--workers", type=int, default=4, help="writer processes")
    prepare.add_argument("--set", action="append", metavar="KEY=VALUE", help="dataset keys (e.g. synthetic_size=500)")
    prepare.set_defaults(func="data:cmd_data_prepare")

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
    corrupt.set_defaults(func="data:cmd_data_corrupt")


def _evaluate_command(command) -> None:
    """`harness evaluate`."""
    evaluate = command(
        "evaluate", help="finished trials' checkpoints on corrupted, OOD or test sets (resumable, no retraining)"
    )
    evaluate.add_argument("target", help="suite YAML file or a results/<suite> folder")
    evaluate.add_argument(
        "--on",
        nargs="+",
        required=True,
        metavar="SET",
        help="evaluation sets: test, <dataset>-c, ood:<dataset>, ood:near, ood:far, ood:folder=PATH, ... "
        "(`harness list` names them all)",
    )
    evaluate.add_argument(
        "--data-dir", help="where the sets and datasets are (else the suite's, else $HARNESS_DATA_DIR)"
    )
    evaluate.add_argument("--address", default=None, help="Ray cluster address (else $RAY_ADDRESS, else a local Ray)")
    evaluate.add_argument("--device", default="auto", help=PATTERN_HELP[DEVICE_PATTERN])
    evaluate.add_argument("--force", action="store_true", help="evaluate again, replacing saved logits and metrics")
    evaluate.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (as for run)")
    evaluate.set_defaults(func="evaluate:cmd_evaluate")


def _sync_command(command) -> None:
    """`harness sync`."""
    sync = command("sync", help="send to MLflow what an earlier run could not (tracking outage)")
    sync.add_argument("suite", type=Path, help="suite YAML file")
    sync.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (as for run)")
    sync.set_defaults(func="suite:cmd_sync")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = "harness " + shlex.join(sys.argv[1:] if argv is None else [str(a) for a in argv])
    logs.setup()
    try:
        from harness.core import plugins

        for spec in getattr(args, "plugin", []):
            plugins.load(spec)
        module, handler = args.func.split(":")
        return getattr(importlib.import_module(f"harness.commands.{module}"), handler)(args)
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
