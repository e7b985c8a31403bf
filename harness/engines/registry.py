"""The engine registry: ``engine: <name>`` in a trial builds the class registered under that name."""

from __future__ import annotations

from harness.core.registry import Registry

ENGINES: Registry[type] = Registry("engine", "harness.engines")  # discovered: every module of this package


def register_engine(name: str):
    """Class decorator: ``@register_engine("torch")`` makes ``engine: torch`` build this class."""
    return ENGINES.register(name)
