"""What is registered, and whether a trial's choices fit together: the one place above the schema
(harness.core.config, which knows no method) and the registries (methods, models, datasets, metrics).

``build_config`` is how a trial config is made from raw keys everywhere (files, suites, workers): the schema's
own checks, then the method x model x dataset checks, the method's keys against its declarations, M resolved
to the method's default, and the content hashes of the plugins the trial uses (part of its id).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from harness.core.config import ConfigError, TrialConfig, format_validation_error
from harness.core.registry import InvalidKeys, Option, did_you_mean, validate_options
from harness.core.yaml_files import load_yaml, parse_overrides

STRICT_VALUES = ConfigDict(strict=True, allow_inf_nan=False)


class Invalid(ValueError):
    """Problems of one trial: a list of (key or "(top level)", message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


def registries():
    """(kind, registry) of every registry a trial or the report looks up."""
    from harness.data.datasets import DATASETS
    from harness.methods import METHODS
    from harness.metrics import METRICS
    from harness.models import MODELS

    return [("method", METHODS), ("model", MODELS), ("dataset", DATASETS), ("metric", METRICS)]


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
    """(kind, registry, name) of what the trial uses: its dataset, model and method."""
    from harness.data.datasets import DATASETS
    from harness.methods import METHODS
    from harness.models import MODELS

    return [("dataset", DATASETS, cfg.dataset), ("model", MODELS, cfg.model), ("method", METHODS, cfg.method)]


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
    registries_by_kind = dict(registries())
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


def presentation(method: str) -> dict[str, Any]:
    """A method's report label, order, colour and marker (a method not registered here: its name, last, no
    colour: a report of another person's results works without their plugin)."""
    from harness.methods import METHODS

    if method not in METHODS:
        return {"label": method, "order": 1000, "color": None, "marker": "o"}
    m = METHODS.get(method)
    return {"label": m.label or method, "order": m.order, "color": m.color, "marker": m.marker}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|&!$])")


def _md(text: str) -> str:
    """A plugin's text in a Markdown table cell: backslash-escaped (CommonMark), so no HTML, link, math or column
    (``|``) can come of it; one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _first_line(obj) -> str:
    return ((getattr(obj, "__doc__", None) or "").strip().split("\n") or [""])[0]


def _origin(registry, name: str) -> str:
    plugin = registry.source(name)
    return "harness" if plugin is None else Path(plugin.spec).name if plugin.is_file else plugin.spec


def keys_table() -> str:
    """docs/suites.md's table of the harness's own trial keys: default, role, meaning (TrialConfig's declarations)."""
    rows = ["| key | default | role | meaning |", "| --- | --- | --- | --- |"]
    for name, field in TrialConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "the method's" if name == "M" else f"`{default if not isinstance(default, Path) else str(default)}`"
        meaning = field.description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `{name}` | {shown} | {TrialConfig.role(name).value} | {meaning} |")
    return "\n".join(rows)


def listing(markdown: bool = False, keys: bool = False) -> str:
    """What `harness list` prints: methods (with their keys), models, datasets, metrics and evaluation sets,
    including what the loaded plugins add; ``keys``: the harness's own trial keys too. ``markdown``: docs/suites.md's
    tables."""
    if markdown and keys:
        return keys_table()
    from harness.data.datasets import DATASETS
    from harness.data.eval_sets import allowed_names
    from harness.methods import METHODS
    from harness.metrics import METRICS
    from harness.models import MODELS

    methods = [
        (name, m, ", ".join(f"{k} = {o.default!r}: {o.help} ({o.describe()})" for k, o in m.options.items()) or "-")
        for name, m in sorted(METHODS.items(), key=lambda item: (item[1].order, item[0]))
    ]
    if markdown:
        rows = ["| method | M | network | its keys (default: meaning) | from |", "| --- | --- | --- | --- | --- |"]
        rows += [
            f"| `{name}` | {m.default_M if not m.single_network else 1} | {_md(m.network)} | "
            + (
                "<br>".join(
                    f"`{k}` {_md(repr(o.default))}: {_md(o.help)} ({_md(o.describe())})" for k, o in m.options.items()
                )
                or "-"
            )
            + f" | {_md(_origin(METHODS, name))} |"
            for name, m, _ in methods
        ]
        return "\n".join(rows)
    out = ["methods (method: NAME; M defaults to the first number)"]
    for name, m, keys in methods:
        M = "M 1" if m.single_network else f"M {m.default_M}"
        out.append(f"  {name:<18} {M:<5} {m.help()}  [{_origin(METHODS, name)}]")
        out += [f"  {'':<24} {k}: {o.help}; default {o.default!r} ({o.describe()})" for k, o in m.options.items()]
    out.append("models (model: NAME)")
    for name, m in MODELS.items():
        out.append(f"  {name:<18} {_first_line(m)}  networks: {', '.join(m.networks)}  [{_origin(MODELS, name)}]")
    from harness.models import NETWORKS

    out.append("network families (a method's `network`; the models whose networks list it build it)")
    out.append("  multi_io           MixMo's M encoders, mixing block, shared core and M heads  [harness]")
    for name, builder in NETWORKS.items():
        out.append(f"  {name:<18} {_first_line(builder)}  [{_origin(NETWORKS, name)}]")
    out.append("datasets (dataset: NAME)")
    for name, d in DATASETS.items():
        shape = f"{d.classes or 'synthetic_classes'} classes, {d.resolution or 'synthetic_resolution'} px"
        corrupt = f", corruption sets: {', '.join(d.corruptions)}" if d.corruptions else ""
        out.append(f"  {name:<18} {shape}{corrupt}  [{_origin(DATASETS, name)}]")
    out.append("metrics (metrics.json, MLflow, the report's tables)")
    for name, m in METRICS.items():
        headline = ", headline" if m.headline else ""
        where = f"{m.group}{headline}"
        out.append(
            f"  {name:<24} {m.label:<20} {where:<21} {m.direction} is better; {m.help}  [{_origin(METRICS, name)}]"
        )
    out.append(f"evaluation sets (harness evaluate --on SET, suites' eval_sets): {allowed_names()}")
    if keys:
        out.append("trial keys (any trial file, a suite's base / grid / rules, --set KEY=VALUE)")
        for name, field in TrialConfig.model_fields.items():
            default = field.get_default(call_default_factory=True)
            out.append(f"  {name:<22} {TrialConfig.role(name).value:<14} default {default!r}: {field.description}")
    return "\n".join(out)
