"""Deep ensembles composed after the fact from members' saved test logits: which finished trials form a suite's
ensembles (`ensembles:`), and an ensemble's metrics (its members' heads pooled, combined by the suite's rule). The
sweep writes them to <suite>/ensembles.json; the report computes the same values through its cache
(analysis/ensembles.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from harness.core import schema
from harness.core.config import setting
from harness.metrics import final_metrics, rule_shift
from harness.store.files import write_json
from harness.store.trial_folder import TrialFolder


def load_member(trial_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """A member's config, test logits (images, heads, classes) and test labels."""
    folder = TrialFolder(trial_dir)
    logits = folder.logits()
    return folder.config(), logits[schema.TEST_LOGITS], logits[schema.TEST_LABELS]


def member_files(trial_dirs: list[Path]) -> list[Path]:
    """The files an ensemble's metrics are computed from (what a cache keys them by)."""
    return [Path(d) / name for d in trial_dirs for name in (schema.LOGITS, schema.CONFIG)]


def ensemble_metrics(trial_dirs: list[Path], *, rule: str) -> dict:
    """Metrics of the deep ensemble of the given trials: every member's heads are pooled and combined by ``rule``
    (members of equal M weigh equally). Members must differ only by seed and share their test images."""
    if len(trial_dirs) < 2:
        raise ValueError("a deep ensemble needs at least 2 members")
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


def ensemble_members(trial_dirs: list[Path], specs: list[tuple[str, list[int]]]) -> list[tuple[str, dict, list[Path]]]:
    """(method, the first member's config, member folders) of each deep ensemble of k members for each (method,
    sizes) spec: finished trials that differ only by seed are grouped, and their seeds, in order, form disjoint
    ensembles of size k (seeds 0..k-1, k..2k-1, ...): several ensembles of one size give that size's row a mean and
    an interval, as seeds do for single networks."""
    groups: dict[str, list[tuple[int, Path, dict]]] = {}
    for d in trial_dirs:
        cfg = TrialFolder(d).config()
        key = json.dumps(setting(cfg), sort_keys=True)
        groups.setdefault(key, []).append((cfg["seed"], Path(d), cfg))
    chosen = []
    for method, sizes in specs:
        for members in groups.values():
            members.sort(key=lambda m: m[0])
            if members[0][2]["method"] != method:
                continue
            for k in sizes:
                if k < 2:
                    raise ValueError("a deep ensemble needs at least 2 members")
                for start in range(0, len(members) - k + 1, k):
                    chosen.append((method, members[0][2], [m[1] for m in members[start : start + k]]))
    return chosen


def ensemble_row(method: str, cfg: dict, dirs: list[Path], values: dict) -> dict:
    """An ensemble's row (ensembles.json, the report's tables): its setting, its members and its metrics."""
    return {
        "method": method,
        **{key: cfg[key] for key in ("model", "depth", "width", "M", "dataset", "epochs")},
        "member_trials": [d.name for d in dirs],
        "member_dirs": [str(d) for d in dirs],
        **values,
    }


def compose_suite_ensembles(
    suite_dir: Path, trial_dirs: list[Path], specs: list[tuple[str, list[int]]], average: str
) -> list[str]:
    """The suite's deep ensembles (``ensembles:``) from its finished trials, members combined by the suite's
    ``average`` (as its report does), written to <suite>/ensembles.json; a line each for the terminal."""
    if not specs:
        return []
    rows = [
        ensemble_row(method, cfg, dirs, ensemble_metrics(dirs, rule=average))
        for method, cfg, dirs in ensemble_members(trial_dirs, specs)
    ]
    write_json(Path(suite_dir) / schema.ENSEMBLES, rows)
    return [
        f"deep ensemble {r['method']} {r['model']}-{r['depth']}-{r['width']} x{r['members']} "
        f"(seeds {r['seeds']}): top1 {100 * r['top1']:.2f}%"
        for r in rows
    ]
