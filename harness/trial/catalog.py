"""Whether a trial's choices fit together: the one place above the schema (harness.core.config, which knows no
method) and the registries (methods, models, datasets, metrics); what is registered is listed by
harness.trial.listing.

``build_config`` is how a trial config is made from raw keys everywhere (files, suites, workers): the schema's
own checks, then the method x model x dataset checks, the method's keys against its declarations, M resolved
to the method's default, and the content hashes of the plugins the trial uses (part of its id).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from harness.core import plugins
from harness.core.config import ConfigError, TrialConfig, format_validation_error
from harness.core.registry import InvalidKeys, Option, did_you_mean, validate_options
from harness.core.yaml_files import load_yaml, parse_overrides

STRICT_VALUES = ConfigDict(strict=True, allow_inf_nan=False)


class Invalid(ValueError):
    """Problems of one trial: a list of (key or "(top level)", message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


def option_owners() -> dict[str, tuple[str, Option]]:
    """Every declared method key -> (its method, its declaration); register_method refuses clashes."""
    from harness.methods import METHODS

    return {key: (name, option) for name, method in METHODS.items() for key, option in method.options.items()}


def trial_keys() -> list[str]:
    """Every key a trial file may set: the schema's and the registered methods' (sorted)."""
    return sorted(set(TrialConfig.model_fields) | set(option_owners()))


def key_adapter(key: str) -> TypeAdapter:
    """A validator of one trial key's values (type and bounds), for suites' grids before the trials expand."""
    owners = option_owners()
    if key in owners:
        annotation, info = owners[key][1].field()
        return TypeAdapter(Annotated[annotation, info], config=STRICT_VALUES)
    field = TrialConfig.model_fields[key]
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(annotation, config=STRICT_VALUES)


def _registered(kind: str, registry, name: str) -> str | None:
    if name not in registry:
        plugin = (
            "; a plugin's: name its file in the suite's `plugins:` or pass --plugin FILE" if kind != "dataset" else ""
        )
        return (
            f"unknown {kind} {name!r}{did_you_mean(name, registry.names())}; allowed: {', '.join(registry.names())}"
            + (plugin)
        )
    return None


def _entries(cfg: TrialConfig) -> list[tuple[str, object, str]]:
    """(kind, registry, name) of what the trial uses: its dataset, model, method and engine."""
    from harness.data.datasets import DATASETS
    from harness.engines import ENGINES
    from harness.methods import METHODS
    from harness.models import MODELS

    return [
        ("dataset", DATASETS, cfg.dataset),
        ("model", MODELS, cfg.model),
        ("method", METHODS, cfg.method),
        ("engine", ENGINES, cfg.engine),
    ]


def check(cfg: TrialConfig) -> TrialConfig:
    """The cross-registry checks of a schema-valid config; returns it with M, its method's keys and its plugins'
    hashes resolved. Invalid names each problem."""
    from harness.methods import METHODS
    from harness.models import MODELS

    problems = [(kind, msg) for kind, registry, name in _entries(cfg) if (msg := _registered(kind, registry, name))]
    if problems:
        raise Invalid(problems)
    method = METHODS.get(cfg.method)
    owners = option_owners()
    given = {k: v for k, v in cfg.options.items() if v is not None}
    for key in given:
        if key not in owners:
            raise Invalid(
                [(key, f"unknown key{did_you_mean(key, trial_keys())}; allowed keys: {', '.join(trial_keys())}")]
            )
        if key not in method.options:
            owner = owners[key][0]
            raise Invalid([(
                "(top level)",
                f"{key} is a key of method {owner}, not of {cfg.method}; in a suite, set it for {owner} alone with a "
                f"rule (rules: [{{when: {{method: {owner}}}, set: {{{key}: ...}}}}]) or an `include:` entry",
            )])  # fmt: skip
    try:
        options = validate_options(cfg.method, method.options, given)
    except InvalidKeys as err:
        raise Invalid(err.problems) from None
    try:
        model = MODELS.get(cfg.model)
        model.check_shape(cfg.depth, cfg.width)
        runs_on = [n for n, m in MODELS.items() if method.network in m.networks]
        if cfg.model not in runs_on:
            raise ValueError(
                f"method {cfg.method!r} builds its layers into the model ({method.network} network): it runs on "
                f"model {', '.join(sorted(runs_on)) or '(none registered)'}, not {cfg.model!r}"
            )
        M = cfg.M if cfg.M is not None else method.default_M
        if method.single_network and M != 1:
            several = [n for n, m in METHODS.items() if not m.single_network]
            raise ValueError(
                f"method {cfg.method!r} is a single network: M must be 1, got {M} (methods with M "
                f"members: {', '.join(sorted(several))})"
            )
        msda = method.sample_augmentation or cfg.msda
        if cfg.loader == "ffcv" and msda != "none" and cfg.msda_partner == "dataset":
            raise ValueError(
                "msda_partner: dataset (partners drawn from the training set) needs loader: device; "
                "with loader: ffcv set msda_partner: batch"
            )
        declared = {k: o.default for k, o in method.options.items()}
        options = {k: v for k, v in options.items() if v != declared[k]}  # a key at its default: as if left out
        defaults = {k: v for k, v in declared.items() if k not in options}
        update = {"M": M, "options": options, "option_defaults": defaults, **_code_identity(cfg)}
        resolved = cfg.model_copy(update=update)
        method.check_config(resolved)
    except ValueError as err:
        raise Invalid([("(top level)", str(err))]) from None
    return resolved


def _code_identity(cfg: TrialConfig) -> dict[str, Any]:
    """What identifies the code the trial runs beyond its keys: the hashes of the plugins whose method, model or
    dataset it uses (and where they were loaded), and their revisions where not 0."""

    code, where, revisions = {}, [], {}
    for kind, registry, name in _entries(cfg):
        revision = getattr(registry.get(name), "revision", 0)
        if revision:
            revisions[f"{kind} {name}"] = revision
        plugin = registry.source(name)
        if plugin is not None:
            code[f"{kind} {name}"] = plugin.sha256
            where.append(plugin.spec)
    return {"plugin_code": code, "plugins": sorted(set(where)), "revisions": revisions}


def build_config(raw: dict[str, Any], source: str, hint: str = "") -> TrialConfig:
    """A checked trial config from raw keys; ConfigError naming ``source``, each key and what is allowed."""
    try:
        cfg = TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source) + hint) from None
    try:
        checked = check(cfg)
    except Invalid as err:
        lines = "\n".join(f"  {k}: {m}" for k, m in err.problems)
        raise ConfigError(f"{source}: invalid configuration\n{lines}{hint}") from None
    before = cfg.plugin_code
    if before and before != checked.plugin_code:
        raise ConfigError(
            f"{source}: recorded with plugin code {before}, but the plugins loaded now hash to "
            f"{checked.plugin_code}: the plugin changed since this config was made"
        )
    return checked


def plugins_missing(cfg: TrialConfig) -> str | None:
    """For a config read from a results folder: which of the plugin code it recorded is not loaded now (a trial
    folder never loads plugins itself), or None."""
    registries_by_kind = plugins.registries()
    missing = []
    for entry, sha in cfg.plugin_code.items():
        kind, name = entry.split(" ", 1)
        registry = registries_by_kind.get(kind)
        source = registry.source(name) if registry is not None and name in registry else None
        if source is None or source.sha256 != sha:
            missing.append(f"{entry} (sha256 {sha[:12]})")
    if not missing:
        return None
    return (
        f"{cfg.trial_id} uses plugin code that is not loaded: {', '.join(missing)}; give it with "
        f"--plugin {' --plugin '.join(cfg.plugins) or 'FILE'} (a results folder never runs code by itself)"
    )


def load_trial_config(path: Path | None, overrides: list[str] = ()) -> TrialConfig:
    raw = load_yaml(path) if path is not None else {}
    raw.update(parse_overrides(list(overrides)))
    return build_config(raw, str(path) if path else "--set")


def in_worker(raw: dict[str, Any], shipped: list[dict] | None) -> TrialConfig:
    """In a Ray worker: load the plugins the driver shipped, then the trial's config, checked again here."""
    from harness.core import plugins

    plugins.install(shipped or [])
    return build_config(raw, f"trial {raw.get('name', '')}")
