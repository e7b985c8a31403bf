"""Old import paths of modules that moved into the layered subpackages (docs/architecture.md): for one release,
``import harness.config`` still works and returns ``harness.core.config``, with a DeprecationWarning that names the
new path. Installed by ``harness/__init__.py``; a path not in the table is Python's ordinary business."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED: dict[str, str | tuple[str, ...]] = {  # old -> new, since 0.2
    "harness.config": "harness.core.config",
    "harness.schema": "harness.core.schema",
    "harness.registry": "harness.core.registry",
    "harness.plugins": "harness.core.plugins",
    "harness.yaml_files": "harness.core.yaml_files",
    "harness.environment": "harness.core.environment",
    "harness.logs": "harness.core.logs",
    "harness.bounded_read": "harness.core.bounded_read",
    "harness.parallel": "harness.core.parallel",
    "harness.results": (  # split: one module per job
        "harness.store.files",
        "harness.store.errors",
        "harness.store.verified",
        "harness.store.trial_folder",
    ),
    "harness.storage": ("harness.store.filesystems", "harness.store.object_store"),
    "harness.lock": "harness.store.lock",
    "harness.trial_index": "harness.store.trial_index",
    "harness.uncertainty": "harness.metrics.uncertainty",
    "harness.catalog": ("harness.trial.catalog", "harness.trial.listing"),
    "harness.cost": "harness.trial.cost",
    "harness.trainer": ("harness.trial.trainer", "harness.core.schedule"),
    "harness.launch": "harness.trial.launch",
    "harness.preemption": "harness.trial.preemption",
    "harness.plugin_check": "harness.trial.plugin_check",
    "harness.eval_kinds": "harness.evaluation.kinds",
    "harness.evaluate": ("harness.evaluation.evaluate", "harness.execution.evaluation"),
    "harness.suite": "harness.planning.suite",
    "harness.tuning": "harness.planning.tuning",
    "harness.tracking": "harness.tracker.tracking",
    "harness.tracking_store": "harness.tracker.store",
    "harness.mlflow_mapping": "harness.tracker.mlflow_mapping",
    "harness.sweep": "harness.execution.sweep",
    "harness.tune_run": "harness.execution.tune_run",
    "harness.trainable": "harness.execution.trainable",
    "harness.cluster": "harness.execution.cluster",
    "harness.progress": "harness.execution.progress",
    "harness.status": "harness.execution.status",
    "harness.plan": "harness.execution.plan",
    "harness.gpu_sharing": "harness.execution.gpu_sharing",
    "harness.slurm": "harness.execution.slurm",
    "harness.exit_codes": "harness.core.exit_codes",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str | tuple[str, ...]):
        self.new = new

    def create_module(self, spec):
        if isinstance(self.new, str):
            return importlib.import_module(self.new)  # the moved module itself: one module object, two names
        joined = types.ModuleType(spec.name, f"{spec.name}: moved to {', '.join(self.new)}")
        for name in self.new:  # a module split in several: their public names under the old one
            module = importlib.import_module(name)
            joined.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
        return joined

    def exec_module(self, module) -> None:
        pass


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds an old path, warns, and hands back the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new if isinstance(new, str) else ', '.join(new)}; the old path stops working in the "
            "next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
