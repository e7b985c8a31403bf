"""Deep ensembles composed after the fact from members' saved test logits."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from analysis import protocol
from analysis.cache import cached, cached_map
from analysis.stats import bootstrap, right_per_image
from harness.core import schema
from harness.core.config import setting
from harness.metrics import calibrate, final_metrics, rule_shift
from harness.store.files import write_json
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


def load_member(trial_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    folder = TrialFolder(trial_dir)
    logits = folder.logits()
    return folder.config(), logits[schema.TEST_LOGITS], logits[schema.TEST_LABELS]


def compose_ensemble(trial_dirs: list[Path], *, rule: str) -> dict:
    """Metrics of the deep ensemble of the given trials: every member's heads are pooled and their
    logits averaged (members of equal M weigh equally). Members must differ only by seed."""
    if len(trial_dirs) < 2:
        raise ValueError("a deep ensemble needs at least 2 members")
    return cached("ensemble", _member_files(trial_dirs), lambda: _compose(trial_dirs, rule=rule))


def _member_files(trial_dirs: list[Path]) -> list[Path]:
    return [Path(d) / name for d in trial_dirs for name in (schema.LOGITS, schema.CONFIG)]


def _compose(trial_dirs: list[Path], *, rule: str) -> dict:
    members = [load_member(d) for d in trial_dirs]
    first_cfg, _, labels = members[0]
    first = setting(first_cfg)
    for d, (cfg, _, lab) in zip(trial_dirs[1:], members[1:]):
        other = setting(cfg)
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if diff:
            raise ValueError(f"{d}: differs from {trial_dirs[0]} in {', '.join(diff)}, not only in seed")
        if not np.array_equal(lab, labels):
            raise ValueError(f"{d}: evaluated on different test images than {trial_dirs[0]}")
    heads = np.concatenate([m[1] for m in members], axis=1)
    heads_t, labels_t = torch.from_numpy(heads).float(), torch.from_numpy(labels)
    out = {**final_metrics(heads_t, labels_t, average=rule), **rule_shift(heads_t, labels_t)}
    out["members"] = len(members)
    out["seeds"] = [m[0]["seed"] for m in members]
    return out


def ensembles_for(trial_dirs: list[Path], specs: list[tuple[str, list[int]]], *, rule: str) -> list[dict]:
    """Deep ensembles of k members for each (method, sizes) spec: finished trials that differ only by seed are
    grouped, and their seeds, in order, form disjoint ensembles of size k (seeds 0..k-1, k..2k-1, ...): several
    ensembles of one size give that size's row a mean and an interval, as seeds do for single networks."""
    groups: dict[str, list[tuple[int, Path, dict]]] = {}
    for d in trial_dirs:
        cfg = TrialFolder(d).config()
        key = json.dumps(setting(cfg), sort_keys=True)
        groups.setdefault(key, []).append((cfg["seed"], Path(d), cfg))
    chunks = []  # (method, the first member's config, members)
    for method, sizes in specs:
        for members in groups.values():
            members.sort(key=lambda m: m[0])
            if members[0][2]["method"] != method:
                continue
            for k in sizes:
                for start in range(0, len(members) - k + 1, k):
                    chunks.append((method, members[0][2], members[start : start + k]))
    jobs = [(_member_files([m[1] for m in chunk]), [m[1] for m in chunk]) for _, _, chunk in chunks]
    if any(len(dirs) < 2 for _, dirs in jobs):
        raise ValueError("a deep ensemble needs at least 2 members")
    metrics = cached_map("ensemble", jobs, functools.partial(_compose, rule=rule), "deep ensembles")
    return [
        {
            "method": method,
            "model": cfg["model"],
            "depth": cfg["depth"],
            "width": cfg["width"],
            "M": cfg["M"],
            "dataset": cfg["dataset"],
            "epochs": cfg["epochs"],
            "member_trials": [m[1].name for m in chunk],
            "member_dirs": [str(m[1]) for m in chunk],
            **values,
        }
        for (method, cfg, chunk), values in zip(chunks, metrics)
    ]


def compose_suite_ensembles(
    suite_dir: Path, trial_dirs: list[Path], specs: list[tuple[str, list[int]]], average: str
) -> list[str]:
    """The suite's deep ensembles (``ensembles:``) from its finished trials, members combined by the suite's
    ``average`` (as its report does), written to <suite>/ensembles.json; a line each for the terminal."""
    if not specs:
        return []
    rows = ensembles_for(trial_dirs, specs, rule=protocol.checked(average))
    write_json(Path(suite_dir) / schema.ENSEMBLES, rows)
    return [
        f"deep ensemble {r['method']} {r['model']}-{r['depth']}-{r['width']} x{r['members']} "
        f"(seeds {r['seeds']}): top1 {100 * r['top1']:.2f}%"
        for r in rows
    ]
