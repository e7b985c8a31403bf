"""Reading YAML safely (suites, trial files, config.yaml, --set values): PyYAML's safe loader that refuses
duplicate keys and alias bombs, and says which file and line is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core import bounded_read
from harness.core.config import ConfigError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["width=4", "method=cutmix"]`` -> dict, values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        out[key.strip()] = parse_yaml(value, f"--set {pair}") if value != "" else None
    return out


MAX_YAML_BYTES = 1 << 20  # a suite or trial file is a few KiB; anything larger is not one
MAX_YAML_NODES = 100_000  # values after alias expansion: stops "billion laughs" before it eats the memory


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser where it is built
    """PyYAML's safe loader (no Python object tags) that refuses duplicate keys: the second `base:` of a
    file would otherwise silently replace the first."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: later keys may override merged ones
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def _expanded_size(node, memo: dict, active: set) -> int:
    """Number of values the node stands for once every alias is expanded (aliases share node objects)."""
    if id(node) in memo:
        return memo[id(node)]
    if id(node) in active:
        raise ConfigError("an alias refers to the value that contains it (a recursive structure)")
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo, active) + _expanded_size(v, memo, active) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo, active) for v in node.value)
    else:
        size = 1
    active.discard(id(node))
    memo[id(node)] = size
    if size > MAX_YAML_NODES:
        raise ConfigError(f"more than {MAX_YAML_NODES:,} values once its aliases are expanded (an alias bomb?)")
    return size


def parse_yaml(text: str, source: str) -> Any:
    """Safe YAML with duplicate keys and alias expansion refused; errors name the source."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{source}: not valid YAML: {where}{err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> dict[str, Any]:
    """A suite or trial file: UTF-8 YAML mapping, at most 1 MiB."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{path}: {path.stat().st_size:,} bytes; a suite or trial file is at most {MAX_YAML_BYTES:,}"
            )
        data = bounded_read.read_bytes(path, MAX_YAML_BYTES)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{path}: not UTF-8 text: byte {err.start} is {data[err.start : err.start + 1]!r}{hint}; "
            "save the file as UTF-8"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: a binary file (it holds NUL bytes), not a YAML suite or trial file")
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(raw).__name__}")
    return raw
