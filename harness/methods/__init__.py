"""Methods: one file each, registered with ``@register_method("name")`` (harness/methods/*.py are discovered;
a plugin's file registers the same way). The public API of a method plugin: ``Method``, ``MixedBatch``,
``Option``, ``register_method``; see the README's "Benchmark your own method"."""

from harness.methods.base import Method, MixedBatch
from harness.registry import Option, Registry

METHODS: Registry[type[Method]] = Registry("method", package=__name__)


def register_method(name: str):
    """Class decorator: ``@register_method("regmixup")`` on a ``Method`` subclass makes it ``method: regmixup``
    in trial files and suites. The class declares its keys (``options``), the network family it trains
    (``network``), M (``default_M``, ``single_network``), its report label, order, colour and marker, its
    optimizer groups (``param_groups``) and, for `harness bench`, its per-sample masks (``reference_masks``)."""

    def add(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}) decorates a subclass of harness.methods.Method")
        cls.name = name
        return METHODS.register(name)(cls)

    return add


__all__ = ["METHODS", "Method", "MixedBatch", "Option", "register_method"]
