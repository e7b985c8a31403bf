"""`harness evaluate`: a suite's finished trials on evaluation sets."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from harness.core.config import ConfigError
from harness.core.exit_codes import ExitCode

logger = logging.getLogger(__name__)


def cmd_evaluate(args) -> int:
    from harness.data.eval_sets import with_absolute_path
    from harness.evaluation.evaluate import check_sets, headline
    from harness.evaluation.kinds import parse_eval_set
    from harness.execution.evaluation import evaluate_trials, finished_trials
    from harness.store.object_store import CACHE_ONLY, is_uri

    sets = []
    for name in args.on:
        try:
            sets.append(parse_eval_set(with_absolute_path(name)))
        except ValueError as err:
            raise ConfigError(f"--on {err}") from None
    if is_uri(args.target):
        raise ConfigError(f"{args.target}: give the suite's YAML file (it names the object store), not its URI")
    from harness.core.config import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, args.device):
        raise ConfigError(f"--device {args.device!r}: expected auto, cpu, cuda or cuda:N")
    suite, finished = finished_trials(Path(args.target), args.data_dir)
    resources = suite.resources if suite else None
    check_sets(finished, sets)  # a missing set stops here, before any network is loaded
    from harness.store.lock import SuiteLock

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
        from harness.tracker.store import mlflow_hint
        from harness.tracker.tracking import Tracker

        tracker = Tracker.for_suite(suite, args.tracking_uri)
        if not tracker.sync([t.trial_dir for t in finished]):
            print(mlflow_hint(suite, args.tracking_uri))
    if failed:  # the trials, not the command: listed as `harness run` lists failed trials
        print(f"{len(failed)} trial(s) not evaluated:", file=sys.stderr)
        for tid, why in failed.items():
            print(f"  {tid}: {why}", file=sys.stderr)
    print(f"robustness, OOD and selective-prediction sections: harness report {args.target}")
    return ExitCode.FAILED if failed else ExitCode.DONE
