"""Suite files: a typed schema for a grid of trials (``Suite``), and its expansion into validated trial configs.
docs/suites.md shows a suite with every key; each key's meaning is its field's comment here."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, Field, ValidationError, field_validator

from harness.core import environment, plugins
from harness.core.config import (
    NAME_LENGTH,
    NAME_PATTERN,
    STRICT,
    ConfigError,
    EnsembleAverage,
    TrialConfig,
    expand_path,
    format_validation_error,
)
from harness.core.registry import did_you_mean
from harness.core.yaml_files import load_yaml
from harness.planning.tuning import Study, Tune
from harness.store.object_store import ObjectStore, driver_cache_dir, is_uri
from harness.trial import catalog

Scalar = Union[str, int, float, bool, None]
MAX_TRIALS = 10_000  # the paper's Fig. 2 grid is ~100 trials; a bigger grid is almost always a typo
# MLflow tracking URIs the harness accepts (MLflow also takes a bare path: written as file:///path here)
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")


def check_tracking_uri(uri: str) -> str:
    """A tracking URI MLflow can open, or ConfigError naming what is allowed."""
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]  # postgresql+psycopg2://...
    ok = scheme in TRACKING_SCHEMES and (scheme.startswith("databricks") or parsed.netloc or parsed.path)
    if scheme == "sqlite":
        ok = uri.startswith("sqlite:///") and len(uri) > len("sqlite:///")
    if not ok:
        raise ConfigError(
            f"tracking URI {uri!r}: not one MLflow can open; use sqlite:///path/to/mlflow.db, "
            f"file:///path/to/mlruns, http(s)://host:port of an `mlflow server`, or a database URI "
            f"({', '.join(TRACKING_SCHEMES)})"
        )
    return uri


class Strict(BaseModel):
    model_config = STRICT


class Resources(Strict):
    """Per worker: a trial of one worker holds them itself; a trial of N workers (workers_per_trial) reserves N x."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)  # a fraction shares one GPU between trials
    card: Optional[str] = Field(None, min_length=1)  # the GPU model, for measured rates (harness.bench.rates)
    # trials of one shape per card: auto = the k the measured rates favour within memory; each asks gpus / k
    pack: Union[Literal["auto"], Annotated[int, Field(ge=1, le=64)], None] = None


class Tracking(Strict):
    enabled: bool = True
    uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<storage>/mlflow.db
    experiment: Optional[str] = Field(None, min_length=1, max_length=200)  # None: the suite name

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                check_tracking_uri(v)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return v


class Rule(Strict):
    when: dict[str, Union[Scalar, list[Scalar]]]
    set: dict[str, Any]


class EnsembleSpec(Strict):
    method: str
    sizes: list[int] = Field(min_length=1)

    @field_validator("sizes")
    @classmethod
    def _at_least_two(cls, v):
        if any(k < 2 for k in v):
            raise ValueError(f"ensemble sizes must be >= 2, got {v}")
        return v


class Suite(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_LENGTH)  # the results folder's name
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    exclude: list[dict[str, Union[Scalar, list[Scalar]]]] = Field(default_factory=list)
    include: list[dict[str, Any]] = Field(default_factory=list)
    ensembles: list[EnsembleSpec] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    concurrency: Optional[int] = Field(None, ge=1)
    max_retries: int = Field(2, ge=0)
    # the results' folder, or an object store's URI; written relative, relative to the suite file (every path written
    # in a suite is); left out, ./results in the working folder
    storage: str = Field("results", min_length=1)
    tracking: Tracking = Field(default_factory=Tracking)
    eval_sets: list[str] = Field(default_factory=list)  # evaluated as each trial finishes (harness.data.eval_sets)
    # files (relative to the suite file) or modules that register methods, models, datasets, metrics; Python, run
    # as such (harness.core.plugins)
    plugins: list[str] = Field(default_factory=list)
    # how heads and deep-ensemble members are combined in every metric, the temperature fit and the OOD scores:
    # "probabilities" (the field's rule) or "logits" (the MixMo authors'); a reading of the saved logits, not a
    # recipe key (trials' ids do not depend on it)
    ensemble_average: EnsembleAverage = "probabilities"
    # equal-budget tuning of every method on validation data, then fresh seeds on test (harness.planning.tuning)
    tune: Optional[Tune] = None

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if not is_uri(v):
            return expand_path(v)
        if is_uri(v):
            try:
                ObjectStore(v)  # a scheme pyarrow cannot open is refused here rather than in every trial
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return v

    @field_validator("eval_sets")
    @classmethod
    def _eval_sets(cls, v: list[str]) -> list[str]:
        from harness.evaluation.kinds import parse_eval_set

        ids = [parse_eval_set(name).id for name in v]  # ValueError: the name and what is allowed
        if len(set(ids)) != len(ids):
            raise ValueError(f"{v}: a set is listed twice")
        return v

    def evaluation_sets(self):
        from harness.evaluation.kinds import parse_eval_set

        return [parse_eval_set(name) for name in self.eval_sets]

    @field_validator("ensembles", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, dict) else v

    @functools.cached_property
    def store(self) -> ObjectStore | None:
        """The object store of a URI storage (one per suite: it opens its filesystem once), else None."""
        return ObjectStore(self.storage) if is_uri(self.storage) else None

    @property
    def results_root(self) -> Path:
        """Where this machine reads and writes the suite's folders: the storage path, or for an
        object store its local copy (trials and the driver synchronise it with the store)."""
        return driver_cache_dir(self.storage) if is_uri(self.storage) else Path(self.storage)

    @property
    def suite_dir(self) -> Path:
        return self.results_root / self.name


def _check_keys(keys, where: str, source: str) -> None:
    allowed = catalog.trial_keys()
    for key in keys:
        if key not in allowed:
            raise ConfigError(
                f"{source}: {where}.{key}: unknown trial key{did_you_mean(key, allowed)}; allowed keys: "
                + ", ".join(allowed)
            )
        if key in ("name", "output_dir"):
            raise ConfigError(f"{source}: {where}.{key}: set by the suite (use the suite's `name` and `storage`)")
        if key == "ensemble_average" and where != "base":
            raise ConfigError(f"{source}: {where}.{key}: one rule per suite: set the suite's top-level `{key}:`")


def _check_values(values: dict[str, Any], where: str, source: str, lists: bool = False) -> None:
    """Each value against its trial key's type and bounds (combinations are checked when trials expand)."""
    for key, value in values.items():
        for i, v in enumerate(value if lists and isinstance(value, list) else [value]):
            try:
                catalog.key_adapter(key).validate_python(v)
            except ValidationError as err:
                at = f"{where}.{key}" + (f"[{i}]" if lists and isinstance(value, list) else "")
                raise ConfigError(f"{source}: {at}: {err.errors()[0]['msg']} (got {v!r})") from None


def _matches(values: dict[str, Any], pattern: dict[str, Any]) -> bool:
    def effective(key):
        field = TrialConfig.model_fields.get(key)
        return values[key] if key in values else field.default if field else None  # a method's key: unset

    return all(effective(k) in (v if isinstance(v, list) else [v]) for k, v in pattern.items())


def _count(d: dict[str, Any]) -> int:
    return math.prod(len(v) if isinstance(v, list) else 1 for v in d.values())


def _product(d: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(d)
    lists = [v if isinstance(v, list) else [v] for v in d.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


def load_suite(path: Path, data_dir: Optional[str] = None) -> Suite:
    path = Path(path)
    raw = load_yaml(path)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            format_validation_error(err, str(path)).replace(
                "allowed keys: " + ", ".join(sorted(TrialConfig.model_fields)),
                "allowed keys: " + ", ".join(Suite.model_fields),
            )
        ) from None
    source = str(path)
    for i, spec in enumerate(suite.plugins):
        try:
            suite.plugins[i] = plugins.load(spec, base=path.parent).spec  # a file's absolute path
        except plugins.PluginError as err:
            raise ConfigError(f"{source}: plugins[{i}]: {err}") from None
    if suite.base.get("ensemble_average", suite.ensemble_average) != suite.ensemble_average:
        raise ConfigError(
            f"{source}: base.ensemble_average: {suite.base['ensemble_average']!r}, but the suite's rule is "
            f"{suite.ensemble_average!r}: one rule per suite, set by its top-level `ensemble_average:`"
        )
    _check_keys(suite.base, "base", source)
    _check_values(suite.base, "base", source)
    _check_keys(suite.grid, "grid", source)
    _check_values(suite.grid, "grid", source, lists=True)
    for key, values in suite.grid.items():
        if not values:
            raise ConfigError(f"{source}: grid.{key}: empty list; give at least one value")
    for i, rule in enumerate(suite.rules):
        _check_keys(rule.when, f"rules[{i}].when", source)
        _check_keys(rule.set, f"rules[{i}].set", source)
        _check_values(rule.set, f"rules[{i}].set", source)
    for i, extra in enumerate(suite.include):
        _check_keys(extra, f"include[{i}]", source)
        _check_values(extra, f"include[{i}]", source, lists=True)
    size = _count(suite.grid) + sum(_count(extra) for extra in suite.include)
    if size > MAX_TRIALS:
        raise ConfigError(
            f"{source}: grid: {size:,} trials (the product of the grid's lists, plus `include`); a suite "
            f"holds at most {MAX_TRIALS:,}: split it into several suites or shorten the lists"
        )
    points = _product(suite.grid)
    for i, pattern in enumerate(suite.exclude):
        _check_keys(pattern, f"exclude[{i}]", source)
        if not any(_matches(p, pattern) for p in points):
            raise ConfigError(
                f"{source}: exclude[{i}]: {pattern} matches no grid point; check its keys and values "
                f"against the grid ({', '.join(f'{k}: {v}' for k, v in suite.grid.items())})"
            )
    if suite.tune is not None:
        from harness.planning import tuning

        tuning.check(suite.tune, suite, source)
    # Paths resolved once, here (trials and Ray tasks run in other working directories), by one rule: a path written
    # in the suite file is relative to the suite file's folder; one given elsewhere (--data-dir, $HARNESS_DATA_DIR,
    # the default storage `results`) to the working folder.
    from harness.data.eval_sets import with_absolute_path

    here = path.parent
    if "storage" in raw and not is_uri(suite.storage):
        suite.storage = str((here / suite.storage).resolve())
    if data_dir or not suite.base.get("data_dir"):
        data_dir = data_dir or environment.given("HARNESS_DATA_DIR")
        if data_dir:
            suite.base["data_dir"] = str(Path(data_dir).resolve())
    else:
        suite.base["data_dir"] = str((here / suite.base["data_dir"]).resolve())
    try:
        suite.eval_sets = [with_absolute_path(name, here) for name in suite.eval_sets]
    except ValueError as err:
        raise ConfigError(f"{path}: eval_sets: {err}") from None
    return suite


def expand(suite: Suite, source: str = "suite") -> list[TrialConfig]:
    """The suite's trials, validated, in grid order, without duplicates (same trial id). A study (`tune:`): its
    first phase, every configuration of every method (and the untuned recipe); the final phase follows from the
    selection (``study`` and harness.planning.tuning)."""
    if suite.tune is not None:
        return _unique(study(suite, source).first_phase)
    points = _grid_points(suite)
    for extra in suite.include:
        points += _product(extra)
    trials = _unique([build_trial(suite, point, {}, source) for point in points])
    if not trials:
        raise ConfigError(f"{source}: the suite has no trials (empty grid, or everything excluded)")
    _check_ensembles(suite, trials, source)
    return trials


def every_trial(suite: Suite, source: str = "suite") -> list[TrialConfig]:
    """Every trial the suite has now: its grid's; a study's configurations, recipe and the final phase its result
    folders' selection implies (status, sync, report)."""
    return resolved_study(suite, source).trials if suite.tune is not None else expand(suite, source)


def study(suite: Suite, source: str = "suite") -> Study:
    """The suite's study (its `tune:` section): the configurations drawn per setting, as trials."""
    from harness.planning import tuning

    result = tuning.study(
        suite.tune,
        _grid_points(suite),
        suite.base.get("method", "vanilla"),
        _builder(suite, source),
        suite.ensemble_average,
    )
    if not result.search:
        raise ConfigError(f"{source}: the suite has no trials (empty grid, or everything excluded)")
    return result


def resolved_study(suite: Suite, source: str = "suite"):
    """The suite's study as its result folders stand: selections and final trials (harness.planning.tuning.resolve)."""
    from harness.planning import tuning

    return tuning.resolve(study(suite, source), _builder(suite, source), suite.ensemble_average)


def _grid_points(suite: Suite) -> list[dict[str, Any]]:
    """The grid's points that no `exclude` drops (`include` aside)."""
    return [p for p in _product(suite.grid) if not any(_matches(p, ex) for ex in suite.exclude)]


def _builder(suite: Suite, source: str):
    """``build(point, overrides) -> TrialConfig`` for this suite (``build_trial``)."""
    return lambda point, overrides: build_trial(suite, point, overrides, source)


def build_trial(suite: Suite, point: dict[str, Any], overrides: dict[str, Any], source: str) -> TrialConfig:
    """A grid point's trial: the suite's base, the point, its rules, then ``overrides`` (a study's searched keys
    and seed), validated."""
    values = {**suite.base, **point}
    for rule in suite.rules:
        if _matches(values, rule.when):
            values.update(rule.set)
    values.update(overrides)
    storage = suite.results_root.resolve()
    store = suite.storage if is_uri(suite.storage) else None
    values.update(name=suite.name, output_dir=storage, store=store, ensemble_average=suite.ensemble_average)
    label = ", ".join(f"{k}={v}" for k, v in {**point, **overrides}.items())
    return catalog.build_config(
        values,
        f"{source}: trial ({label})",
        hint="\n  (fix the value, or drop the combination with an `exclude` rule)",
    )


def _unique(trials: list[TrialConfig]) -> list[TrialConfig]:
    """Each trial id once, at its first place."""
    out: dict[str, TrialConfig] = {}
    for t in trials:
        out.setdefault(t.trial_id, t)
    return list(out.values())


def _check_ensembles(suite: Suite, trials: list[TrialConfig], source: str) -> None:
    for i, spec in enumerate(suite.ensembles):
        seeds = {t.seed for t in trials if t.method == spec.method}
        if not seeds:
            raise ConfigError(f"{source}: ensembles[{i}].method: no trial of method {spec.method!r} in the suite")
        if max(spec.sizes) > len(seeds):
            raise ConfigError(
                f"{source}: ensembles[{i}].sizes: an ensemble of {max(spec.sizes)} needs as many seeds "
                f"of {spec.method}, the suite has {len(seeds)}"
            )
