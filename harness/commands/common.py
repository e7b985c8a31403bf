"""What several commands share: the trial config of `train` and `bench`, a suite or results target, and
what Ctrl-C kept."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from harness.trial.catalog import load_trial_config

logger = logging.getLogger(__name__)


def what_was_kept(trial_dirs: list[Path], command: str) -> str:
    """What Ctrl-C kept: only trials with an end-of-epoch checkpoint resume where they stopped."""
    from harness.store.trial_folder import TrialFolder

    partial = [(d, state) for d in trial_dirs if (state := TrialFolder(d).state()).state == "partial"]
    if not partial:
        return f"interrupted before any epoch ended: nothing to resume from; `{command}` starts again from scratch"
    epochs = ", ".join(f"{d.name} after epoch {state.epochs}" for d, state in partial[:5])
    more = f" and {len(partial) - 5} more" if len(partial) > 5 else ""
    return (
        f"interrupted; run `{command}` again to resume from the last end-of-epoch checkpoints ({epochs}{more}); "
        f"epochs in progress are lost"
    )


def load_suite_arg(args):
    from harness.planning.suite import load_suite

    return load_suite(args.suite, data_dir=getattr(args, "data_dir", None))


def results_target(target: str):
    """`status` / `report` TARGET -> (local suite folder, object store or None, suite name, suite or None).
    A suite or folder in an object store is first copied here (without checkpoints)."""
    from harness.store.object_store import CACHE_ONLY, ObjectStore, driver_cache_dir, is_uri

    suite = None
    if is_uri(target):
        parent, name = target.rstrip("/").rsplit("/", 1)
        store, suite_dir = ObjectStore(parent), driver_cache_dir(parent) / name
    elif Path(target).is_dir():
        store, suite_dir, name = None, Path(target), Path(target).name
    else:
        suite = load_suite_arg(argparse.Namespace(suite=Path(target)))
        store, suite_dir, name = suite.store, suite.suite_dir, suite.name
    if store is not None:
        store.pull(name, suite_dir, skip=CACHE_ONLY)
    return suite_dir, store, name, suite


def trial_config(args):
    """The trial config of `train` and `bench`: the YAML file, then --set overrides, then --data-dir."""
    overrides = list(args.set or [])
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    return load_trial_config(args.config, overrides)
