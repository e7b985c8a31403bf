"""Equal-budget tuning, a suite's `tune:` section (docs/tuning.md): every method of the grid gets the same number of
configurations of the searched keys; each configuration is an ordinary trial (its own id, folder, MLflow run and
resume). A method's configuration is selected on the validation split alone (``val_size`` training images held out:
the test set is never read to select), then trained with each of ``final_seeds`` and reported on test.

Random search draws every configuration up front from a seed with Ray Tune's samplers. Bayesian search (``search:
optuna``) asks Optuna's TPE, through Ray Tune's OptunaSearch, for ``parallel`` configurations at a time and tells it
their validation scores; its state is the trial folders: the seeded sampler replays its asks and tells from them.
Either way a study is a pure function of the suite and its finished trials: a killed run, run again, makes the same
draws, selects the same configurations and trains only what is missing. ASHA (``scheduler: asha``, Ray Tune's
ASHAScheduler, one per method: execution.tune_run.StudyScheduler) may stop a configuration at a rung; it then counts
as tried, its folder kept, and is never selected."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.core.config import STRICT, ConfigError, TrialConfig
from harness.metrics import EPOCH_METRICS

Scalar = Union[str, int, float, bool, None]
MAX_CONFIGURATIONS = 1000  # per method: DomainBed draws 20 per algorithm; more than 1000 is a typo
SIGNIFICANT_DIGITS = 4  # a drawn float is rounded to 4 significant digits: readable ids, tables and MLflow params


Range = Annotated[list[float], Field(min_length=2, max_length=2)]  # [lo, hi]
IntRange = Annotated[list[int], Field(min_length=2, max_length=2)]


class Space(BaseModel):
    """One searched key's distribution: exactly one of ``loguniform: [lo, hi]``, ``uniform: [lo, hi]``,
    ``int: [lo, hi]`` (both ends included) or ``choice: [a, b, ...]``."""

    model_config = ConfigDict(**STRICT, populate_by_name=True)

    loguniform: Optional[Range] = None
    uniform: Optional[Range] = None
    integer: Optional[IntRange] = Field(None, alias="int")
    choice: Optional[list[Scalar]] = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> "Space":
        given = [k for k in ("loguniform", "uniform", "integer", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of loguniform: [lo, hi], uniform: [lo, hi], int: [lo, hi], choice: [...]"
            )
        for kind in ("loguniform", "uniform", "integer"):
            ends = getattr(self, kind)
            if ends is not None and not ends[0] < ends[1]:
                raise ValueError(f"{'int' if kind == 'integer' else kind}: [{ends[0]}, {ends[1]}]: lo < hi is needed")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: [{self.loguniform[0]}, ...]: the low end must be > 0")
        return self

    def values_to_check(self) -> list[Any]:
        """The values that must be valid for the key: the ends of a range, every choice."""
        return list(self.choice if self.choice is not None else self.loguniform or self.uniform or self.integer)

    def domain(self):
        """Ray Tune's sampling domain for it."""
        from ray import tune

        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.integer is not None:
            return tune.randint(self.integer[0], self.integer[1] + 1)  # Tune's upper end is excluded
        return tune.choice(self.choice)

    def describe(self) -> str:
        for kind in ("loguniform", "uniform", "integer"):
            ends = getattr(self, kind)
            if ends is not None:
                return f"{'int' if kind == 'integer' else kind} [{ends[0]:g}, {ends[1]:g}]"
        return "choice of " + ", ".join(map(str, self.choice))


class Tune(BaseModel):
    model_config = STRICT

    space: dict[str, Space] = Field(default_factory=dict)  # searched for every method
    methods: dict[str, dict[str, Space]] = Field(default_factory=dict)  # a method's own keys, searched for it alone
    trials: int = Field(ge=1, le=MAX_CONFIGURATIONS)  # configurations per method: the same budget for every one
    select: str = "nll"  # a registered metric, computed on the validation split
    final_seeds: list[int] = Field(min_length=1)  # the selected configuration's seeds, reported on test
    retrain: Literal["train", "train+val"] = "train"  # the final trials' data: the search's split, or both parts
    recipe: bool = False  # also train the untuned recipe with the final seeds: "tuned minus recipe" in the report
    search: Literal["random", "optuna"] = "random"  # random: drawn up front; optuna: TPE told each result (below)
    parallel: int = Field(4, ge=1, le=MAX_CONFIGURATIONS)  # optuna: configurations asked before results are told
    seed: int = Field(0, ge=0)  # the draws' seed (the trials' own `seed` is the suite's)
    scheduler: Optional[Literal["asha"]] = None  # asha: a method's poor configurations stopped at rungs (Ray Tune's)
    grace_epochs: int = Field(1, ge=1)  # asha: the first rung; mixing methods learn slowly, so not too early
    reduction_factor: int = Field(3, ge=2)  # asha: a rung lets the best 1/reduction_factor of its results go on


@dataclass(frozen=True)
class Study:
    """A suite's study: per setting (a grid point without its tuned keys), the configurations tried, and the trials
    of the final phase once the selection can be made."""

    tune: Tune
    points: dict[str, dict[str, Any]]  # setting -> its grid point
    drawn: dict[str, list[dict[str, Any]]]  # setting -> its configurations (searched key -> value), in draw order
    search: dict[str, list[TrialConfig]]  # setting -> its configurations' trials, in draw order
    recipe: dict[str, list[TrialConfig]]  # setting -> the untuned recipe at each final seed (tune.recipe)

    @property
    def first_phase(self) -> list[TrialConfig]:
        return [t for ts in (*self.search.values(), *self.recipe.values()) for t in ts]


def check(tune: Tune, suite, source: str) -> None:
    """Everything a study needs that the schema cannot say: registered keys within their declared bounds, a
    registered metric, a validation split, seeds from `final_seeds` alone."""
    from harness.methods import METHODS
    from harness.metrics import METRICS
    from harness.trial import catalog

    allowed = catalog.trial_keys()
    methods = set(suite.grid.get("method", [suite.base.get("method", "vanilla")]))
    spaces = [(f"tune.space.{k}", k, s) for k, s in tune.space.items()]
    for method, own in tune.methods.items():
        if method not in METHODS:
            raise ConfigError(f"{source}: tune.methods.{method}: not a registered method (`harness list`)")
        if method not in methods:
            raise ConfigError(f"{source}: tune.methods.{method}: the grid has no trial of this method")
        spaces += [(f"tune.methods.{method}.{k}", k, s) for k, s in own.items()]
    if not spaces:
        raise ConfigError(f"{source}: tune.space: nothing to search; give at least one key and its distribution")
    for where, key, space in spaces:
        if key not in allowed:
            raise ConfigError(f"{source}: {where}: unknown trial key; allowed keys: {', '.join(allowed)}")
        if key in ("seed", "method", "name", "output_dir", "val_size", "ensemble_average"):
            raise ConfigError(f"{source}: {where}: `{key}` is not searched (it defines the study, not a recipe)")
        if key in suite.grid:
            raise ConfigError(f"{source}: {where}: `{key}` is a grid key too; search it or grid it, not both")
        for value in space.values_to_check():
            try:
                catalog.key_adapter(key).validate_python(value)
            except ValidationError as err:
                raise ConfigError(
                    f"{source}: {where}: {value!r} is outside what the key allows ({err.errors()[0]['msg']})"
                ) from None
    if tune.select not in METRICS:
        raise ConfigError(f"{source}: tune.select: {tune.select!r} is not a registered metric (`harness list`)")
    if METRICS.get(tune.select).group in ("cost", "diversity"):
        raise ConfigError(
            f"{source}: tune.select: {tune.select!r} is a {METRICS.get(tune.select).group} measure, not a score of "
            "the predictions on the validation split; choose an accuracy, calibration or selective metric"
        )
    if int(suite.base.get("val_size", 0) or 0) <= 0:
        raise ConfigError(
            f"{source}: tune: selecting on validation data needs `val_size` > 0 in `base:` (training images held "
            "out of training); the test set is never used to select"
        )
    if tune.search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{source}: tune.search: optuna needs Optuna installed: pip install 'harness[optuna]'"
            ) from None
    if tune.scheduler == "asha":
        if tune.select not in RUNG_METRICS:
            raise ConfigError(
                f"{source}: tune.select: ASHA compares configurations at every epoch, where the history holds the "
                f"validation {' and '.join(RUNG_METRICS)} alone; select one of them (or drop `scheduler: asha`)"
            )
        if int(suite.base.get("eval_every", 1)) != 1:
            raise ConfigError(f"{source}: base.eval_every: ASHA needs the validation score of every epoch (1)")
    if "seed" in suite.grid or suite.include:
        raise ConfigError(
            f"{source}: tune: the seeds of a study are `tune.final_seeds` (and `base.seed` for the search); "
            "drop `seed` from the grid and `include:`"
        )


def _rounded(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, np.integer):
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def draws(tune: Tune, method: str) -> list[dict[str, Any]]:
    """``tune.trials`` configurations for ``method``. Each key has its own random stream (seeded by the study's
    seed and the key): a shared key's draws are the same for every method (the methods meet the same learning
    rates), a method's own key is drawn from a stream of its own, adding a key changes no other key's draws and a
    larger budget keeps the first draws."""
    columns = {}
    spaces = {**tune.space, **tune.methods.get(method, {})}
    for key in sorted(spaces):
        stream = [tune.seed, zlib.crc32(key.encode())]
        if key in tune.methods.get(method, {}):
            stream.insert(1, zlib.crc32(method.encode()))
        rng = np.random.default_rng(stream)
        values = spaces[key].domain().sample(size=tune.trials, random_state=rng)
        values = list(values) if isinstance(values, (list, np.ndarray)) else [values]  # Tune returns a scalar for 1
        columns[key] = [_rounded(v) for v in values]
    return [{k: columns[k][i] for k in sorted(spaces)} for i in range(tune.trials)]


def optuna_search(tune: Tune, method: str, build_one, score) -> tuple[list[dict[str, Any]], list[TrialConfig]]:
    """Bayesian search: Optuna's TPE (seeded by the study's seed, the same for every method) through Ray Tune's
    OptunaSearch, asked ``tune.parallel`` configurations at a time and told their validation scores. ``build_one``
    makes a configuration's trial; ``score(trial)`` is its validation score once it has ended (NaN: failed or
    diverged) or None. Replayed from the trial folders at every call, so a resumed study asks what it asked before;
    -> the configurations asked so far (up to the first batch not yet ended) and their trials."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines: the harness prints the selection
    spaces = {**tune.space, **tune.methods.get(method, {})}
    searcher = OptunaSearch(
        OptunaSearch.convert_search_space({k: spaces[k].domain() for k in sorted(spaces)}),
        metric="score",
        mode="max" if _higher(tune.select) else "min",
        # TPE's random start: Optuna's 10, or half a smaller budget (16 configurations would be 10 random)
        sampler=optuna.samplers.TPESampler(seed=tune.seed, n_startup_trials=min(10, max(1, tune.trials // 2))),
    )
    drawn: list[dict[str, Any]] = []
    trials: list[TrialConfig] = []
    while len(drawn) < tune.trials:
        batch = [str(i) for i in range(len(drawn), min(len(drawn) + tune.parallel, tune.trials))]
        asked = [{k: _rounded(v) for k, v in searcher.suggest(i).items()} for i in batch]
        drawn += asked
        trials += [build_one(c) for c in asked]
        told = [score(t) for t in trials[-len(batch) :]]
        if any(v is None for v in told):
            break
        for i, value in zip(batch, told):  # a failed or diverged configuration: Optuna's FAIL
            searcher.on_trial_complete(i, {"score": value} if value == value else None, error=value != value)
    return drawn, trials


def setting_key(values: dict[str, Any]) -> str:
    """A grid point's name in the study: its values, in the grid's order (method=..., width=...)."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def study(tune: Tune, grid_points: list[dict[str, Any]], base_method: str, build, average: str) -> Study:
    """A study of the grid's points (``base_method``: the method of a point that names none);
    ``build(point, overrides) -> TrialConfig`` makes a point's trial with keys set."""
    points, drawn, search, recipe = {}, {}, {}, {}
    for point in grid_points:
        name = setting_key(point)
        points[name] = point
        method = point.get("method", base_method)
        if tune.search == "optuna":
            drawn[name], search[name] = optuna_search(
                tune, method, lambda c, point=point: build(point, c), lambda t: told_score(t, tune, average)
            )
        else:
            drawn[name] = draws(tune, method)
            search[name] = [build(point, configuration) for configuration in drawn[name]]
        if tune.recipe:
            recipe[name] = [build(point, {"seed": s, **final_keys(tune)}) for s in tune.final_seeds]
    return Study(tune, points, drawn, search, recipe)


def final_keys(tune: Tune) -> dict[str, Any]:
    """The final phase's data: the search's training split, or training and validation images together."""
    return {"val_size": 0} if tune.retrain == "train+val" else {}


# --- the selection: validation logits only
def validation_score(trial_dir, select: str, average: str) -> float:
    """The selection metric of a finished trial on its validation split: read from the validation logits alone (the
    trial's test logits, labels and metrics are never opened). NaN for a diverged trial."""
    import torch

    from harness.core import schema
    from harness.metrics import final_metrics
    from harness.store.errors import CorruptFile
    from harness.store.files import load_logits

    try:
        saved = load_logits(Path(trial_dir) / schema.LOGITS, members=(schema.VAL_LOGITS, schema.VAL_LABELS))
    except (KeyError, CorruptFile):  # no validation split recorded, or an unreadable file: never selected
        return float("nan")
    heads = torch.from_numpy(saved[schema.VAL_LOGITS]).float()
    labels = torch.from_numpy(saved[schema.VAL_LABELS])
    value = float(final_metrics(heads, labels, average=average)[select])
    return value if math.isfinite(value) else float("nan")


RUNG_METRICS = EPOCH_METRICS  # recorded on the validation split at every evaluated epoch (history.csv: val_*)


def rung_metric(select: str) -> str:
    """The history column that ranks configurations at an epoch: the selection metric's, or the NLL's."""
    return f"val_{select if select in RUNG_METRICS else 'nll'}"


def rung_scores(trial_dir) -> dict[int, dict[str, float]]:
    """Epoch -> the validation scores in the trial's history (``val_nll``, ``val_top1``), by column."""
    from harness.store.errors import CorruptFile
    from harness.store.trial_folder import TrialFolder

    try:
        rows = TrialFolder(Path(trial_dir)).history()
    except CorruptFile:
        return {}
    return {
        int(float(r["epoch"])): {k: float(v) for k, v in r.items() if k.startswith("val_") and v not in ("", None)}
        for r in rows
    }


def told_score(trial: TrialConfig, tune: Tune, average: str) -> float | None:
    """What a search is told of a configuration: its validation score once finished (NaN: failed or diverged), the
    score at the rung that stopped it (Ray Tune tells a stopped trial's last result), None while it runs."""
    from harness.store.trial_folder import TrialFolder

    state = TrialFolder(trial.trial_dir).state().state
    if state == "finished":
        return validation_score(trial.trial_dir, tune.select, average)
    if state == "failed":
        return float("nan")
    if state == "stopped":
        column = rung_metric(tune.select)
        recorded = [row[column] for _, row in sorted(rung_scores(trial.trial_dir).items()) if column in row]
        return recorded[-1] if recorded else float("nan")
    return None


ENDED = ("finished", "failed", "stopped")  # a configuration that counts as tried


@dataclass(frozen=True)
class Selection:
    setting: str
    scores: list[float]  # per configuration, in draw order: the validation metric (NaN: failed, diverged, stopped)
    states: list[str]
    chosen: int | None  # the selected configuration's index; None until every configuration has ended


def select(study: Study, states: dict[str, str], average: str) -> dict[str, Selection]:
    """Per setting, the configuration with the best validation score, once all ``tune.trials`` of its configurations
    have ended (finished, failed or stopped by ASHA: those count as tried and are never selected, nor is a diverged
    one). Ties go to the first drawn."""
    sign = 1.0 if _higher(study.tune.select) else -1.0
    out = {}
    for setting, trials in study.search.items():
        ended = [states.get(t.trial_id) for t in trials]
        scores = [
            validation_score(t.trial_dir, study.tune.select, average) if s == "finished" else float("nan")
            for t, s in zip(trials, ended)
        ]
        chosen = None
        complete = len(trials) == study.tune.trials and all(s in ENDED for s in ended)
        if complete and any(v == v for v in scores):
            chosen = max((i for i, v in enumerate(scores) if v == v), key=lambda i: (sign * scores[i], -i))
        out[setting] = Selection(setting, scores, [s or "pending" for s in ended], chosen)
    return out


@dataclass(frozen=True)
class Resolved:
    """A study as its result folders stand: the selection per setting and the final phase's trials it implies."""

    study: Study
    selections: dict[str, Selection]
    finals: dict[str, list[TrialConfig]]  # setting -> the selected configuration at each final seed

    @property
    def reported(self) -> list[TrialConfig]:
        """The trials reported on test: the final phase's and the untuned recipe's."""
        return [t for ts in (*self.finals.values(), *self.study.recipe.values()) for t in ts]

    def run_tags(self) -> dict[str, dict[str, str]]:
        return _run_tags(self)

    @property
    def trials(self) -> list[TrialConfig]:
        """Every trial of the study, each once: the configurations tried, the recipe, the final phase."""
        out: dict[str, TrialConfig] = {}
        for t in [*self.study.first_phase, *(t for ts in self.finals.values() for t in ts)]:
            out.setdefault(t.trial_id, t)
        return list(out.values())


PHASE_TAG, SELECTED_TAG, SETTING_TAG = "harness.tune.phase", "harness.tune.selected", "harness.tune.setting"


def _run_tags(resolved: "Resolved") -> dict[str, dict[str, str]]:
    """MLflow tags per trial id: its phase (search, recipe, final; a configuration selected and trained again at the
    search's seed is both search and final), whether it is a selected configuration, its setting."""
    tags: dict[str, dict[str, str]] = {}
    for setting, trials in resolved.study.search.items():
        chosen = resolved.selections[setting].chosen
        for i, t in enumerate(trials):
            tags[t.trial_id] = {PHASE_TAG: "search", SELECTED_TAG: str(i == chosen).lower(), SETTING_TAG: setting}
    for kind, groups in (("recipe", resolved.study.recipe), ("final", resolved.finals)):
        for setting, trials in groups.items():
            for t in trials:
                entry = tags.setdefault(t.trial_id, {SELECTED_TAG: "false", SETTING_TAG: setting})
                entry[PHASE_TAG] = f"{entry[PHASE_TAG]}+{kind}" if PHASE_TAG in entry else kind
    return tags


def resolve(study: Study, build, average: str) -> Resolved:
    """The selection from the trial folders as they are (validation logits only), and the final trials."""
    from harness.store.trial_folder import TrialFolder

    states = {t.trial_id: TrialFolder(t.trial_dir).state().state for t in study.first_phase}
    selections = select(study, states, average)
    return Resolved(study, selections, final_trials(study, selections, build))


def final_trials(study: Study, selections: dict[str, Selection], build) -> dict[str, list[TrialConfig]]:
    """Per setting with a selection: the selected configuration at each final seed."""
    out = {}
    for setting, selection in selections.items():
        if selection.chosen is not None:
            configuration = study.drawn[setting][selection.chosen]
            out[setting] = [
                build(study.points[setting], {**configuration, "seed": s, **final_keys(study.tune)})
                for s in study.tune.final_seeds
            ]
    return out


# --- how many configurations a method needed: the expected best validation score at a budget
def expected_best(scores: list[float], budgets: list[int], higher: bool = True) -> list[float]:
    """The expected best of n configurations drawn without replacement from the N tried, for each n in ``budgets``
    (Tang et al. 2020's unbiased form of Dodge et al. 2019's expected validation performance): with the scores
    sorted from worst to best, sum_i v_(i) C(i-1, n-1) / C(N, n). NaN scores (failed configurations) rank worst."""
    values = np.asarray(scores, float)
    if np.isnan(values).all():  # a bootstrap resample of failed configurations alone
        return [float("nan")] * len(budgets)
    worst = np.nanmin(values) if higher else np.nanmax(values)
    values = np.where(np.isnan(values), worst, values)
    ordered = np.sort(values) if higher else -np.sort(-values)  # worst first
    total = len(ordered)
    out = []
    for n in budgets:
        weights = np.array([math.comb(i - 1, n - 1) for i in range(1, total + 1)], float) / math.comb(total, n)
        out.append(float(weights @ ordered))
    return out


def expected_best_band(
    scores: list[float], budgets: list[int], higher: bool = True, draws: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The 95% percentile-bootstrap band of ``expected_best``: the N configurations resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = np.asarray(scores, float)
    curves = np.array(
        [expected_best(values[rng.integers(0, len(values), len(values))], budgets, higher) for _ in range(draws)]
    )
    return np.nanquantile(curves, 0.025, axis=0), np.nanquantile(curves, 0.975, axis=0)


def rungs(tune: Tune, epochs: int) -> list[int]:
    """The epochs at which ASHA compares a method's configurations (grace_epochs x reduction_factor^k, before the
    last epoch); the same epochs check a search without ASHA ("would stopping there have been safe?")."""
    out, epoch = [], tune.grace_epochs
    while epoch < epochs:
        out.append(epoch)
        epoch *= tune.reduction_factor
    return out


# --- what the terminal shows
def plan_lines(study: Study) -> list[str]:
    """The study in a few lines, for the plan: both phases and what each trains."""
    tune = study.tune
    searched = {k: s.describe() for k, s in tune.space.items()}
    lines = [
        f"study: {len(study.search)} setting(s) x {tune.trials} configuration(s) each ({search_words(tune)}): "
        + ", ".join(f"{k} {d}" for k, d in searched.items())
    ]
    for method, own in tune.methods.items():
        lines.append(f"  {method} also searches " + ", ".join(f"{k} {s.describe()}" for k, s in own.items()))
    direction = "higher" if _higher(tune.select) else "lower"
    lines.append(
        f"  selected on the validation split by {tune.select} ({direction} is better); then phase 2: the selected "
        f"configuration at seeds {tune.final_seeds} ({len(study.search) * len(tune.final_seeds)} trials, trained on "
        f"{'the same training split' if tune.retrain == 'train' else 'training + validation images'}), reported on "
        "test" + ("; beside the untuned recipe at the same seeds" if tune.recipe else "")
    )
    return lines


def search_words(tune: Tune) -> str:
    """How the configurations were found, in a few words."""
    words = (
        f"random search, seed {tune.seed}"
        if tune.search == "random"
        else f"Bayesian search: Optuna's TPE, seed {tune.seed}, {tune.parallel} asked at a time"
    )
    if tune.scheduler == "asha":
        words += (
            f"; ASHA stops a configuration at a rung (from epoch {tune.grace_epochs}, x{tune.reduction_factor}) "
            f"unless its validation {rung_metric(tune.select)[4:]} is in its method's best 1/{tune.reduction_factor}"
        )
    return words


def selection_text(study: Study, selections: dict[str, Selection]) -> str:
    """A line per setting: the configuration selected and its validation score, or what it waits for."""
    lines = [f"selection on the validation split ({study.tune.select}):"]
    for setting, sel in selections.items():
        tried = sum(s in ENDED for s in sel.states)
        if sel.chosen is None:
            lines.append(f"  {setting}: {tried} of {study.tune.trials} configurations ended; no selection yet")
            continue
        values = ", ".join(f"{k}={v}" for k, v in study.drawn[setting][sel.chosen].items())
        stopped = sel.states.count("stopped")
        lines.append(
            f"  {setting}: configuration {sel.chosen + 1} of {len(sel.states)} ({values}), "
            f"validation {study.tune.select} {sel.scores[sel.chosen]:.4f}"
            + (f" ({stopped} stopped early by ASHA)" if stopped else "")
        )
    return "\n".join(lines)


def _higher(metric: str) -> bool:
    from harness.metrics import METRICS

    return METRICS.get(metric).direction == "higher"
