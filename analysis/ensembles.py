"""What the report computes from saved logits through its cache: a trial's recalibrated logits, per-image
correctness and its bootstrap interval, and the deep ensembles of harness.evaluation.ensembles."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from analysis.cache import cached, cached_map
from analysis.stats import bootstrap, right_per_image
from harness.core import schema
from harness.evaluation.ensembles import ensemble_members, ensemble_metrics, ensemble_row, member_files
from harness.metrics import calibrate
from harness.store.trial_folder import TrialFolder


def recalibrated(saved: dict[str, np.ndarray], *, rule: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A trial's (or ensemble's) saved logits through the one calibration protocol (harness.metrics.calibrate):
    (scaled ensemble logits, labels, calibrated metrics). The report's tables and figures both use it, so they
    cannot disagree."""
    labels = torch.from_numpy(saved[schema.TEST_LABELS])
    val = (
        (torch.from_numpy(saved[schema.VAL_LOGITS]).float(), torch.from_numpy(saved[schema.VAL_LABELS]))
        if schema.VAL_LOGITS in saved
        else (None, None)
    )
    test = torch.from_numpy(saved[schema.TEST_LOGITS]).float()
    scaled, calibrated = calibrate(test, labels, *val, average=rule)  # temperatures fitted once
    return scaled, labels, calibrated


def bootstrap_top1_halfwidth(head_logits: np.ndarray, labels: np.ndarray, *, rule: str) -> float:
    """Half-width of the 95% bootstrap interval of the ensemble's top-1 over test images."""
    return bootstrap(right_per_image(head_logits, labels, rule=rule))[0]


def right_of(trial_dirs: list, *, rule: str) -> np.ndarray:
    """Per test image, whether the trial (or the deep ensemble of the trials: their heads pooled) is right."""
    saved = [TrialFolder(d).logits() for d in trial_dirs]
    heads = np.concatenate([s[schema.TEST_LOGITS] for s in saved], axis=1)
    return right_per_image(heads, saved[0][schema.TEST_LABELS], rule=rule)


def top1_bootstrap(trial_dirs: list[Path], *, rule: str) -> float:
    """Half-width of the 95% bootstrap interval over test images of one trial's top-1, or of a deep ensemble's (its
    members' heads pooled): a setting's interval when it has one seed (or one ensemble), computed only then."""
    return cached(
        "bootstrap",
        [Path(d) / schema.LOGITS for d in trial_dirs],
        lambda: bootstrap(right_of(trial_dirs, rule=rule))[0],
    )


def compose_ensemble(trial_dirs: list[Path], *, rule: str) -> dict:
    """Metrics of the deep ensemble of the given trials (harness.evaluation.ensembles.ensemble_metrics), through the
    report's cache."""
    return cached("ensemble", member_files(trial_dirs), lambda: ensemble_metrics(trial_dirs, rule=rule))


def ensembles_for(trial_dirs: list[Path], specs: list[tuple[str, list[int]]], *, rule: str) -> list[dict]:
    """The rows of the deep ensembles of k members for each (method, sizes) spec (harness.evaluation.ensembles:
    which members, and their metrics), through the report's cache (in worker processes when there are many)."""
    chosen = ensemble_members(trial_dirs, specs)
    jobs = [(member_files(dirs), dirs) for _, _, dirs in chosen]
    metrics = cached_map("ensemble", jobs, functools.partial(ensemble_metrics, rule=rule), "deep ensembles")
    return [ensemble_row(method, cfg, dirs, values) for (method, cfg, dirs), values in zip(chosen, metrics)]
