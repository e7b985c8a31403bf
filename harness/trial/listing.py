"""What is registered, for people: `harness list` (methods with their keys, models, network families, datasets,
metrics, evaluation sets; the docs' tables) and the report's label, order, colour and marker of a method."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.core.config import TrialConfig


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


def listing(markdown: bool = False, keys: bool = False, eval_sets: str | None = None) -> str:
    """What `harness list` prints: methods (with their keys), models, datasets, metrics and evaluation sets,
    including what the loaded plugins add; ``keys``: the harness's own trial keys too. ``markdown``: docs/suites.md's
    tables; ``eval_sets``: the evaluation sets' names (harness.evaluation.kinds.allowed_names)."""
    if markdown and keys:
        return keys_table()
    from harness.data.datasets import DATASETS
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
    from harness.engines import ENGINES

    out.append("engines (engine: NAME)")
    for name, engine in ENGINES.items():
        out.append(f"  {name:<18} {_first_line(engine)}  [{_origin(ENGINES, name)}]")
    if eval_sets is not None:  # their kinds live a floor above (harness.evaluation.kinds): the command passes them
        out.append(f"evaluation sets (harness evaluate --on SET, suites' eval_sets): {eval_sets}")
    if keys:
        out.append("trial keys (any trial file, a suite's base / grid / rules, --set KEY=VALUE)")
        for name, field in TrialConfig.model_fields.items():
            default = field.get_default(call_default_factory=True)
            out.append(f"  {name:<22} {TrialConfig.role(name).value:<14} default {default!r}: {field.description}")
    return "\n".join(out)
