"""Collect a sweep's result folders into one table (a row per trial), and compose deep ensembles."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from analysis import protocol
from analysis.cache import cached
from analysis.ensembles import bootstrap_top1_halfwidth, ensembles_for, recalibrated
from analysis.tables import SETTING
from harness.config import is_setting_key
from harness.metrics import METRICS, classification_metrics, ensemble_logits, rule_shift, selective_metrics
from harness.results import CONFIG, LOGITS, CorruptFile, TrialFolder
from harness.results import METRICS as METRICS_FILE


def collect(suite_dir: Path, grid: dict[str, dict] | None = None) -> pd.DataFrame:
    """A row per trial folder of the suite: its config, state, and (finished trials) final metrics. A folder whose
    files cannot be read is a row in state `corrupt`, its error naming the file. ``grid``: the suite's trials
    (id -> recorded config); folders that are not the suite's (another recipe, not in the grid, copied in from
    elsewhere) are never rows: they are listed in ``frame.attrs["not_in_suite"]`` with the reason."""
    rows, config_keys, foreign = [], set(), {}
    for config_file in sorted(Path(suite_dir).glob("*/" + CONFIG)):
        folder = TrialFolder(config_file.parent)
        state = folder.state()
        try:
            cfg = folder.config()
            why = not_in_suite(cfg, folder.path, grid)
            if why:
                foreign[folder.path.name] = why
                continue
        except CorruptFile as err:
            rows.append(
                {
                    "trial_id": folder.trial_id,
                    "state": "corrupt",
                    "error": f"{CONFIG}: {err.reason}",
                    "trial_dir": str(folder.path),
                }
            )
            continue
        config_keys |= set(cfg)
        row = {
            **{k: v for k, v in cfg.items() if not isinstance(v, (list, dict))},
            "state": state.state,
            "error": state.detail,
            "trial_dir": str(folder.path),
        }
        if state.state == "finished":
            try:  # the state's check is cheap (the zip directory); a damaged member shows only here
                metrics = cached("trial", [folder.path / LOGITS, folder.path / METRICS_FILE], lambda: _read(folder))
            except CorruptFile as err:
                rows.append({**row, "state": "corrupt", "error": f"{err.path.name}: {err.reason}"})
                continue
            row.update({k: v for k, v in metrics.items() if k not in row or k in ("trial_id",)})
            row["train_hours"] = metrics["train_time_s"] / 3600
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["members"] = 1
    frame.attrs["config_keys"] = sorted(config_keys)
    frame.attrs["not_in_suite"] = foreign
    return frame


IDENTITY = ("method", "model", "depth", "width", "M", "seed")  # what the grid names; the rest is the recipe
DATA_KEYS = ("dataset", "data_fingerprint", "train_subset", "test_subset", "class_subset", "val_size")


def not_in_suite(cfg: dict, folder: Path, grid: dict[str, dict] | None) -> str | None:
    """Why a trial folder under the suite's storage is not one of the suite's trials, or None if it is."""
    tid = cfg.get("trial_id")
    if tid != folder.name:
        return f"its config.yaml is trial {tid} (copied in from elsewhere)"
    if cfg.get("name") not in (None, folder.parent.name):
        return f"a trial of suite {cfg.get('name')}"
    if grid is None or tid in grid:
        return None
    same = [g for g in grid.values() if all(g.get(k) == cfg.get(k) for k in IDENTITY)]
    if not same:
        return "not in the grid (" + ", ".join(f"{k} {cfg.get(k)}" for k in IDENTITY) + ")"

    def differences(g: dict) -> list[str]:
        keys = sorted(set(cfg) | set(g))
        return [k for k in keys if is_setting_key(k) and k not in IDENTITY and g.get(k) != cfg.get(k)]

    closest = min(same, key=lambda g: len(differences(g)))
    differ = differences(closest)
    if not differ:
        return "an older recipe version (the harness's recipe or a method's revision changed since)"
    shown = ", ".join(f"{k} {cfg.get(k)!r} (the suite's: {closest.get(k)!r})" for k in differ[:4])
    return ("other data: " if set(differ) & set(DATA_KEYS) else "another recipe: ") + shown


def _read(folder: TrialFolder) -> dict:
    """A finished trial's metrics as the report shows them: metrics.json, with what depends on the report's protocol
    recomputed from the saved logits (calibration, selective prediction, the aggregation rule's shift, the top-1
    bootstrap), so that every row and figure follows one protocol."""
    saved = folder.logits()
    heads, labels = torch.from_numpy(saved["test_logits"]).float(), torch.from_numpy(saved["test_labels"])
    recorded = folder.metrics()
    # metrics.json's rule ("logits" before it was recorded); the report's may differ: recompute from logits
    if heads.shape[1] > 1 and recorded.get("ensemble_average", "logits") != protocol.average():
        recorded = {**recorded, **classification_metrics(heads, labels, protocol.average())}
    metrics = {
        **recorded,
        **recalibrated(saved)[2],
        **selective_metrics(heads, labels, protocol.average()),
        **(rule_shift(heads, labels) if heads.shape[1] > 1 else {}),
        "top1_boot_ci": bootstrap_top1_halfwidth(saved["test_logits"], saved["test_labels"]),
        "ensemble_average": protocol.average(),
    }
    metrics.update(_missing_metrics(metrics, saved))
    return metrics


def _missing_metrics(recorded: dict, saved: dict) -> dict:
    """Registered metrics a trial's metrics.json lacks (a plugin's metric, added after it finished), computed
    from its saved test logits."""
    missing = [(k, m) for k, m in METRICS.items() if m.of_ensemble is not None and k not in recorded]
    if not missing:
        return {}
    logits = ensemble_logits(torch.from_numpy(saved["test_logits"]).float(), protocol.average())
    labels = torch.from_numpy(saved["test_labels"])
    return {k: float(m.of_ensemble(logits, labels)) for k, m in missing}


def ensemble_rows(frame: pd.DataFrame, specs: list[tuple[str, list[int]]] | None = None) -> pd.DataFrame:
    """Deep ensembles from finished trials that differ only by seed. Without specs: every method
    with at least two seeds, every size from 2 to its number of seeds."""
    if frame.empty:
        return frame
    done = frame[frame.state == "finished"]
    if specs is None:
        keys = [k for k in SETTING if k in done and k != "members"]
        specs = []
        for method, group in done.groupby("method"):
            most = group.groupby(keys, dropna=False).seed.nunique().max()
            if most >= 2:
                specs.append((method, list(range(2, most + 1))))
    rows = ensembles_for([Path(d) for d in done.trial_dir], specs)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    params = done.groupby(["model", "depth", "width", "method", "M"]).num_params.first()
    out["num_params"] = [
        params.get((r.model, r.depth, r.width, r.method, r.M), float("nan")) * r.members for r in out.itertuples()
    ]
    by_trial = done.set_index("trial_id")
    out["train_hours"] = [sum(by_trial.loc[t, "train_hours"] for t in members) for members in out.member_trials]
    out["eval_time_s"] = [sum(by_trial.loc[t, "eval_time_s"] for t in members) for members in out.member_trials]
    if "inference_images_per_s" in by_trial:  # members run one after the other: times add up
        out["inference_images_per_s"] = [
            1 / sum(1 / by_trial.loc[t, "inference_images_per_s"] for t in members) for members in out.member_trials
        ]
        out["inference_gflops"] = [
            sum(by_trial.loc[t, "inference_gflops"] for t in members) for members in out.member_trials
        ]
    for key in frame.attrs.get("config_keys", []):  # the members' shared config, for grouping
        if key not in out and key in by_trial:
            out[key] = [by_trial.loc[members[0], key] for members in out.member_trials]
    out["state"] = "finished"
    return out


__all__ = ["collect", "ensemble_rows"]
