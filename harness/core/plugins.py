"""Plugins: a researcher's own methods, networks, datasets and metrics, from a file or a module, without
editing the harness (docs/plugins.md).

A plugin is named by a suite (``plugins: [my_method.py, mypackage.methods]``, files relative to the suite
file), by ``--plugin`` on the command line, or by an installed package's entry point in the group
``harness.plugins``. It registers with the public decorators (``harness.methods.register_method``,
``harness.models.register_model``, ``harness.data.register_dataset``, ``harness.metrics.register_metric``).

A plugin is Python and runs as such: results folders never execute code, plugins named by the user do.

Identity: each plugin has the SHA-256 of its file (a package: of every ``.py`` file in it). A trial that uses
something a plugin registered carries that hash in its id (harness.trial.catalog), so an edited plugin never returns
old results. Ray workers get a file plugin's text with the trial (``shipped`` / ``install``), so a cluster's
nodes run exactly the code the driver hashed; a module plugin must be installed on every node.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from harness.core import bounded_read, environment

ENTRY_POINT_GROUP = "harness.plugins"
MAX_PLUGIN_BYTES = 4 << 20  # a plugin is Python source: a few KiB; /dev/zero or a data file is not one


class PluginError(ValueError):
    """A plugin that cannot be used: one line naming the file (or module) and the problem."""


@dataclass(frozen=True)
class Plugin:
    spec: str  # a file's absolute path, or a module's dotted name
    sha256: str
    source: str | None = None  # a file plugin's text (what the workers execute)

    @property
    def is_file(self) -> bool:
        return self.source is not None

    def __str__(self) -> str:
        return f"plugin {self.spec}"


_loaded: dict[str, Plugin] = {}  # spec -> plugin, in load order
_current: list[Plugin | None] = []  # the plugin being executed (registrations are attributed to it)
_installed_done = False
_registries: list = []  # harness.core.registry.Registry objects (each tracks itself)
# the one list of the harness's registries, as the modules that define and fill them (this floor imports none of
# them): imported as the harness's own before a plugin's code runs, and for `registries()`
REGISTRY_MODULES = (
    "harness.methods",
    "harness.models",  # MODELS and NETWORKS
    "harness.data.datasets",
    "harness.metrics",
    "harness.engines",
    "harness.evaluation.kinds",
)


def track(registry) -> None:
    """A registry to fill before a plugin loads, and to clean when one fails."""
    _registries.append(registry)


def _import_registries() -> None:
    for name in REGISTRY_MODULES:
        importlib.import_module(name)


def registries() -> dict:
    """Every registry of the harness (and any a test made), by its word (``Registry.word``: what names its entries
    in a trial's plugin_code and in what a plugin registered); of two with one word, the first made (the harness's)."""
    _import_registries()
    by_word: dict = {}
    for registry in _registries:
        by_word.setdefault(registry.word, registry)
    return by_word


def _prime() -> None:
    """The harness's own entries, registered before any plugin's, so that none is attributed to a plugin."""
    with harness_code():
        _import_registries()
        for registry in _registries:
            registry.discover()


def loading() -> Plugin | None:
    """The plugin whose code is running now (None: the harness's own modules)."""
    return _current[-1] if _current else None


@contextlib.contextmanager
def harness_code():
    """The harness's own modules being imported (a registry discovering its package while a plugin loads): what
    they register is the harness's."""
    _current.append(None)
    try:
        yield
    finally:
        _current.pop()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def load(spec: str, base: Path | None = None) -> Plugin:
    """Load a plugin file (relative to ``base``, else the working directory) or importable module, once."""
    if is_file_spec(spec):
        path = Path(spec).expanduser()
        path = (Path(base) / path if base is not None and not path.is_absolute() else path).resolve()
        try:
            data = bounded_read.read_bytes(path, MAX_PLUGIN_BYTES)
        except OSError as err:
            raise PluginError(f"plugin {path}: cannot read it ({err.strerror or err})") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PluginError(f"plugin {path}: not UTF-8 Python source") from None
        return _run_source(str(path), text, _digest(data))
    return _import_module(spec)


@contextlib.contextmanager
def _running(plugin: Plugin):
    """The plugin's code runs inside: what it registers is attributed to it, and forgotten if it fails; one still
    importing after $HARNESS_PLUGIN_SLOW_S seconds is named on stderr (a plugin that blocks leaves no command
    silent)."""
    import threading

    slow_s = environment.seconds("HARNESS_PLUGIN_SLOW_S")
    _current.append(plugin)
    timer = threading.Timer(
        slow_s,
        lambda: print(
            f"plugin {plugin.spec}: still importing after {slow_s:g} s (what does its import wait for? "
            "Ctrl-C stops the command)",
            file=sys.stderr,
            flush=True,
        ),
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    except BaseException:
        for registry in _registries:
            registry.forget(plugin)
        raise
    finally:
        timer.cancel()
        _current.pop()


def _failure(plugin: Plugin, err: BaseException) -> PluginError:
    if isinstance(err, PluginError):
        return err
    where = ""
    tb = err.__traceback__
    while tb is not None:  # the deepest frame inside the plugin's own file
        if tb.tb_frame.f_code.co_filename == plugin.spec:
            where = f" (line {tb.tb_lineno})"
        tb = tb.tb_next
    if isinstance(err, SyntaxError) and err.filename == plugin.spec:
        where = f" (line {err.lineno})"
    return PluginError(f"{plugin}: failed to import{where}: {type(err).__name__}: {err}")


def _run_source(path: str, text: str, sha: str) -> Plugin:
    known = _loaded.get(path)
    if known is not None:
        if known.sha256 != sha:
            raise PluginError(
                f"plugin {path}: changed since this process loaded it (sha256 {known.sha256[:12]} -> {sha[:12]}); "
                "run the command again"
            )
        return known
    _prime()
    plugin = Plugin(path, sha, text)
    name = f"harness_plugin_{Path(path).stem}_{sha[:8]}"
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        with _running(plugin):
            exec(compile(text, path, "exec"), module.__dict__)
    except Exception as err:
        sys.modules.pop(name, None)
        raise _failure(plugin, err) from None
    _loaded[path] = plugin
    return plugin


def _module_digest(name: str) -> str:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as err:
        raise PluginError(f"plugin {name}: cannot import it ({err})") from None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise PluginError(f"plugin {name}: no such module (a file plugin is named by its path, e.g. ./{name}.py)")
    origin = Path(spec.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(origin.parent)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _import_module(name: str) -> Plugin:
    if name in _loaded:
        return _loaded[name]
    _prime()
    plugin = Plugin(name, _module_digest(name))
    try:
        with _running(plugin):
            importlib.import_module(name)
    except Exception as err:
        raise _failure(plugin, err) from None
    _loaded[name] = plugin
    return plugin


def unload(plugin: Plugin) -> None:
    """Forget a loaded plugin: what it registered, and that it was loaded (a long-lived process, a test); the
    objects it made live on where they were kept."""
    for registry in _registries:
        registry.forget(plugin)
    _loaded.pop(plugin.spec, None)


def untrack(registry) -> None:
    """Stop filling and cleaning ``registry`` (one made for a while: a test's)."""
    _registries.remove(registry)


def load_installed() -> None:
    """The entry points of installed packages (group ``harness.plugins``), once per process."""
    global _installed_done
    if _installed_done:
        return
    _installed_done = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        _import_module(point.value.split(":")[0])


def shipped() -> list[dict]:
    """What a worker needs to load this process's plugins: a file's text, a module's name, with their hashes."""
    return [{"spec": p.spec, "sha256": p.sha256, "source": p.source} for p in _loaded.values()]


def install(plugins: list[dict]) -> None:
    """In a worker: load the plugins the driver shipped (``shipped``), checking each is the code it hashed."""
    for p in plugins or ():
        if p.get("source") is not None:
            text = p["source"]
            if _digest(text.encode("utf-8")) != p["sha256"]:
                raise PluginError(f"plugin {p['spec']}: the shipped text does not match its hash")
            _run_source(p["spec"], text, p["sha256"])
        else:
            plugin = _import_module(p["spec"])
            if plugin.sha256 != p["sha256"]:
                raise PluginError(
                    f"plugin {p['spec']}: this node's copy differs from the driver's (sha256 {plugin.sha256[:12]}, "
                    f"driver {p['sha256'][:12]}); install the same version on every node"
                )
