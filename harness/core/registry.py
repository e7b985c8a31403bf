"""Name -> entry registries, in the spirit of timm's ``register_model`` and benchopt's discovered files.

A registry discovers its package: every module of it is imported on first use, so a built-in method, network
or metric is one file with its decorator and no other edit. Plugins (harness.core.plugins) register into the same
registries; each entry remembers which plugin registered it, whose content hash then enters the trial id.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable, Generic, Literal, Optional, TypeVar

from pydantic import ConfigDict, Field, ValidationError, create_model

T = TypeVar("T")
NAME_LENGTH = 64
NAME = re.compile(rf"[A-Za-z][A-Za-z0-9_]{{0,{NAME_LENGTH - 1}}}")  # one folder-safe identifier


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None, word: str | None = None):
        self.kind = kind
        self.word = word or kind  # what names its entries in a trial's plugin_code ("network ..."), and in listings
        self.package = package  # imported module by module on first use
        self._entries: dict[str, T] = {}
        self._sources: dict[str, Any] = {}  # name -> the plugin (harness.core.plugins.Plugin) that registered it
        self._discovered = package is None
        from harness.core import plugins

        plugins.track(self)  # filled before a plugin loads; a plugin that fails half-way leaves nothing behind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("vanilla")``. The plugin being imported, if any, is its source
        (harness.core.plugins fills every registry with the harness's own entries before a plugin's code runs)."""
        from harness.core import plugins

        def add(obj: T) -> T:
            source = plugins.loading()
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise plugins.PluginError(
                    f"{source or 'the harness'}: registers {self.kind} {str(name)[:80]!r}: a name is a letter, then "
                    f"letters, digits or _ (at most {NAME_LENGTH} characters): it names trial folders, MLflow runs "
                    "and table rows"
                )
            if name in self._entries:
                if self._entries[name] is obj:
                    return obj
                first = self._sources.get(name)
                raise plugins.PluginError(
                    f"{source or 'the harness'}: registers {self.kind} {name!r}, which "
                    f"{first or 'the harness'} already registers; choose another name"
                )
            self._entries[name] = obj
            self._sources[name] = source
            return obj

        return add

    def forget(self, plugin) -> None:
        """Drop what ``plugin`` registered (its import failed half-way)."""
        for name in [n for n, s in self._sources.items() if s is plugin]:
            del self._entries[name], self._sources[name]

    def discover(self) -> None:
        """Import every module of the package (once): the harness's own entries."""
        if self._discovered:
            return
        self._discovered = True
        from harness.core import plugins

        with plugins.harness_code():
            package = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(package.__path__):
                if not info.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{info.name}")
        plugins.load_installed()

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def source(self, name: str):
        """The plugin that registered ``name`` (None: the harness itself)."""
        self.discover()
        return self._sources.get(name)

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) in registration order (the built-ins', then each plugin's)."""
        self.discover()
        return list(self._entries.items())

    def __iter__(self):
        return iter([name for name, _ in self.items()])

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._entries


# --- declared keys: what a method (or another entry) adds to the trial config
@dataclass(frozen=True)
class Option:
    """A trial key that an entry declares: ``Option(0.1, "the dropout rate", gt=0, lt=1)``. Validated as strictly
    as the harness's own keys (no '2' for 2, no true for 1); refused on trials of other entries. A key enters
    the trial id when a trial sets it, so that a default can be fixed later without renaming older results."""

    default: Any
    help: str
    type: Any = None  # None: the default's type (a float default takes ints too)
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: Optional[tuple] = None  # the allowed values (a string key's)

    @property
    def annotation(self) -> Any:
        if self.choices:
            return Literal[self.choices]
        return self.type or type(self.default)

    def field(self) -> tuple[Any, Any]:
        bounds = {k: getattr(self, k) for k in ("ge", "gt", "le", "lt") if getattr(self, k) is not None}
        return Optional[self.annotation], Field(None, description=self.help, **bounds)

    def describe(self) -> str:
        bounds = [f"{op} {getattr(self, k):g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if getattr(self, k) is not None]  # fmt: skip
        if self.choices:
            return " | ".join(map(str, self.choices))
        kind = getattr(self.annotation, "__name__", str(self.annotation))
        return f"{kind}{', ' + ', '.join(bounds) if bounds else ''}"


STRICT_OPTIONS = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@functools.lru_cache(maxsize=None)
def _options_model(owner: str, options: tuple[tuple[str, Option], ...]):
    return create_model(f"{owner}_options", __config__=STRICT_OPTIONS, **{k: o.field() for k, o in options})


class InvalidKeys(ValueError):
    """Keys whose values do not fit their declarations: ``problems`` is a list of (key, message)."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


def did_you_mean(name: str, candidates) -> str:
    """ " (did you mean 'x'?)" for the closest of ``candidates`` to a mistyped ``name``, or ""."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validate_options(owner: str, options: dict[str, Option], values: dict[str, Any]) -> dict[str, Any]:
    """The values set, validated against their declarations (InvalidKeys names each bad key)."""
    model = _options_model(owner, tuple(sorted(options.items())))
    try:
        checked = model.model_validate(values)
    except ValidationError as err:
        raise InvalidKeys([(".".join(map(str, e["loc"])), e["msg"]) for e in err.errors()]) from None
    return {k: getattr(checked, k) for k in values if getattr(checked, k) is not None}
