"""Collect a sweep's result folders into one table (a row per trial), and compose deep ensembles."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import torch

from analysis.cache import cached_map, progress
from analysis.ensembles import ensembles_for, recalibrated
from analysis.tables import SETTING
from harness.core import schema
from harness.core.config import RECORDED_BEFORE_THE_RULE, is_setting_key
from harness.metrics import (
    METRICS,
    classification_metrics,
    ensemble_logits,
    metric_code,
    rule_shift,
    selective_metrics,
)
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder


def collect(suite_dir: Path, grid: dict[str, dict] | None = None, *, rule: str, verify: bool = False) -> pd.DataFrame:
    """A row per trial folder of the suite: its config, state, and (finished trials) final metrics under the
    aggregation ``rule`` (``verify``: every value recomputed from the saved logits, see ``_read``). A folder whose
    files cannot be read is a row in state `corrupt`, its error naming the file. ``grid``: the suite's trials
    (id -> recorded config); folders that are not the suite's (another recipe, not in the grid, copied in from
    elsewhere) are never rows: they are listed in ``frame.attrs["not_in_suite"]`` with the reason."""
    rows, config_keys, foreign, finished = [], set(), {}, []
    files = sorted(Path(suite_dir).glob("*/" + schema.CONFIG))
    for config_file in progress(files, len(files), "trial folders read"):
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
                    "error": f"{schema.CONFIG}: {err.reason}",
                    "trial_dir": str(folder.path),
                }
            )
            continue
        cfg = {**(cfg.get("option_defaults") or {}), **cfg}  # a method's keys left at their default: one row
        config_keys |= set(cfg)
        row = {
            **{k: v for k, v in cfg.items() if not isinstance(v, (list, dict))},
            "state": state.state,
            "error": state.detail,
            "trial_dir": str(folder.path),
        }
        if state.state == "finished":
            finished.append((row, folder.path))
        rows.append(row)
    jobs = [([path / schema.LOGITS, path / schema.METRICS], str(path)) for _, path in finished]
    read = functools.partial(read_trial, rule=rule, verify=verify)
    for (row, _), metrics in zip(finished, cached_map(_trial_kind(), jobs, read, "finished trials read")):
        if "corrupt" in metrics:  # the state's check is cheap (the zip directory); a damaged member shows only here
            row.update(state="corrupt", error=metrics["corrupt"])
            continue
        row.update({k: v for k, v in metrics.items() if k not in row or k in ("trial_id",)})
        row["train_hours"] = metrics["train_time_s"] / 3600
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
        return f"its {schema.CONFIG} is trial {tid} (copied in from elsewhere)"
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


# what depends on the report's protocol (the rule, the calibration): recomputed when metrics.json lacks it
PROTOCOL_KEYS = (
    *(n for n, m in METRICS.items() if m.calibrated_of or m.group == "selective"),
    "temperatures",
    "calibration_protocol",
)


def _trial_kind() -> str:
    """The cache's kind of a trial's values: with the plugin metrics' code, so that an edited metric is recomputed."""
    codes = metric_code()
    return "trial" + (":" + ",".join(f"{k}={c['sha256']}" for k, c in sorted(codes.items())) if codes else "")


def read_trial(path: str, *, rule: str, verify: bool = False) -> dict:
    """``_read`` of a trial folder, or {"corrupt": "<file>: <why>"} (run in the report's worker processes)."""
    try:
        return _read(TrialFolder(Path(path)), rule=rule, verify=verify)
    except CorruptFile as err:
        return {"corrupt": f"{err.path.name}: {err.reason}"}


def _read(folder: TrialFolder, *, rule: str, verify: bool) -> dict:
    """A finished trial's metrics as the report shows them: metrics.json as written, when it was computed under the
    report's aggregation ``rule``; else what depends on the rule recomputed from the saved logits (classification,
    calibration, selective prediction). Always from the logits: the aggregation rule's shift (several heads). The
    top-1 bootstrap over test images is computed only for a setting with one seed (``tables.summarize``). ``verify``:
    every value from the logits, metrics.json only compared with them."""
    recorded = folder.metrics()
    kept_code = recorded.get("metric_code") or {}
    stale = [  # a plugin metric computed by other code than the loaded one: recomputed from the logits below
        name
        for name, code in metric_code().items()
        if name in recorded and kept_code.get(name, {}).get("sha256") != code["sha256"]
    ]
    recorded = {k: v for k, v in recorded.items() if k not in stale}
    rule_matches = recorded.get("ensemble_average", RECORDED_BEFORE_THE_RULE) == rule
    complete = all(k in recorded for k in PROTOCOL_KEYS)
    saved = folder.logits()  # read whole even when nothing is computed from them: a damaged member shows here
    heads, labels = torch.from_numpy(saved[schema.TEST_LOGITS]).float(), torch.from_numpy(saved[schema.TEST_LABELS])
    several = heads.shape[1] > 1
    metrics = dict(recorded)
    if verify:
        return {**metrics, **_recomputed(saved, heads, labels, recorded if rule_matches else None, rule=rule)}
    if not (rule_matches and complete):  # metrics.json's rule ("logits" before it was recorded) is not the report's
        if several:
            metrics.update(classification_metrics(heads, labels, rule))
        metrics.update(recalibrated(saved, rule=rule)[2])
        metrics.update(selective_metrics(heads, labels, rule))
    if several:
        metrics.update(rule_shift(heads, labels))
    metrics["ensemble_average"] = rule
    metrics.update(_missing_metrics(metrics, saved, rule=rule))
    if stale:
        metrics["recomputed_metrics"] = stale
    return metrics


VERIFY_TOLERANCE = (1e-3, 1e-2)  # absolute, relative: float16 saved logits against float32 at training time


def _recomputed(saved: dict, heads: torch.Tensor, labels: torch.Tensor, recorded: dict | None, *, rule: str) -> dict:
    """Every metric of the trial from its saved logits, and where ``recorded`` (metrics.json under the same rule)
    disagrees beyond ``VERIFY_TOLERANCE``: a line per value, in ``verify_disagreements``."""
    from harness.metrics import final_metrics

    val = (
        (torch.from_numpy(saved[schema.VAL_LOGITS]).float(), torch.from_numpy(saved[schema.VAL_LABELS]))
        if schema.VAL_LOGITS in saved
        else (None, None)
    )
    full = {**final_metrics(heads, labels, *val, average=rule)}
    if heads.shape[1] > 1:
        full.update(rule_shift(heads, labels))
    full.update(_missing_metrics(full, saved, rule=rule))
    wrong = []
    for key, value in full.items() if recorded is not None else ():
        old = recorded.get(key)
        if key in METRICS and isinstance(old, (int, float)) and isinstance(value, float):
            absolute, relative = VERIFY_TOLERANCE
            if not abs(old - value) <= absolute + relative * abs(value):  # NaN disagrees too
                wrong.append(f"{key}: {schema.METRICS} {old:.6g}, the saved logits {value:.6g}")
    return {**full, "verify_disagreements": wrong}


def _missing_metrics(recorded: dict, saved: dict, *, rule: str) -> dict:
    """Registered metrics a trial's metrics.json lacks (a plugin's metric, added after it finished), computed
    from its saved test logits."""
    missing = [(k, m) for k, m in METRICS.items() if m.of_ensemble is not None and k not in recorded]
    if not missing:
        return {}
    logits = ensemble_logits(torch.from_numpy(saved[schema.TEST_LOGITS]).float(), rule)
    labels = torch.from_numpy(saved[schema.TEST_LABELS])
    return {k: float(m.of_ensemble(logits, labels)) for k, m in missing}


MEMBER_OWN = ("trial_id", "seed")  # a member's own: an ensemble row never carries its first member's


def ensemble_rows(
    frame: pd.DataFrame,
    specs: list[tuple[str, list[int]]] | None = None,
    config_keys: list[str] | None = None,
    *,
    rule: str,
) -> pd.DataFrame:
    """Deep ensembles from finished trials that differ only by seed, members combined by ``rule``. Without specs: every
    method with at least two seeds, every size from 2 to its number of seeds. ``config_keys``: the trials' config
    keys (default: ``collect``'s, in ``frame.attrs``)."""
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
    rows = ensembles_for([Path(d) for d in done.trial_dir], specs, rule=rule)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    params = done.groupby(["model", "depth", "width", "method", "M"]).num_params.first().to_dict()
    out["num_params"] = [
        params.get((r.model, r.depth, r.width, r.method, r.M), float("nan")) * r.members for r in out.itertuples()
    ]
    by_trial = {c: dict(zip(done.trial_id, done[c])) for c in done.columns}  # column -> trial id -> value

    def total(column: str) -> list[float]:
        return [sum(by_trial[column][t] for t in members) for members in out.member_trials]

    out["train_hours"], out["eval_time_s"] = total("train_hours"), total("eval_time_s")
    if "inference_images_per_s" in by_trial:  # members run one after the other: times add up
        out["inference_images_per_s"] = [
            1 / sum(1 / by_trial["inference_images_per_s"][t] for t in members) for members in out.member_trials
        ]
        out["inference_gflops"] = total("inference_gflops")
    for key in config_keys if config_keys is not None else frame.attrs.get("config_keys", []):
        if key not in out and key in by_trial and key not in MEMBER_OWN:  # the members' shared config, for grouping
            out[key] = [by_trial[key][members[0]] for members in out.member_trials]
    out["state"] = "finished"
    return out


__all__ = ["collect", "ensemble_rows"]
