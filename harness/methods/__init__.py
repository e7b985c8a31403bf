"""Methods: one file each, registered with ``@register_method("name")`` (harness/methods/*.py are discovered;
a plugin's file registers the same way). The public API of a method plugin: ``Method``, ``MixedBatch``,
``Option``, ``register_method``; see docs/plugins.md."""

from harness.core.registry import Option, Registry
from harness.methods.base import Loop, Method, MixedBatch

METHODS: Registry[type[Method]] = Registry("method", package=__name__)


def register_method(name: str):
    """Class decorator: ``@register_method("regmixup")`` on a ``Method`` subclass makes it ``method: regmixup``
    in trial files and suites. The class declares its keys (``options``), the network family it trains
    (``network``), M (``default_M``, ``single_network``), its report label, order, colour and marker, its
    optimizer groups (``param_groups``) and, for `harness bench`, its per-sample masks (``reference_masks``)."""

    def add(cls: type[Method]) -> type[Method]:
        from harness.core import plugins
        from harness.core.config import TrialConfig

        where = plugins.loading() or "the harness"
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise plugins.PluginError(
                f"{where}: @register_method({name!r}) decorates a subclass of harness.methods.Method"
            )
        for key, option in cls.options.items():
            if not isinstance(option, Option):
                raise plugins.PluginError(f"{where}: method {name!r}: options[{key!r}] is not a harness.methods.Option")
            if key in TrialConfig.model_fields:
                raise plugins.PluginError(
                    f"{where}: method {name!r} declares key {key!r}, which is a harness trial key"
                )
            owner = next(  # one declaration shared by a family (SWA's keys in SWAG) is one key
                (n for n, m in METHODS.items() if key in m.options and n != name and m.options[key] is not option), None
            )
            if owner:
                raise plugins.PluginError(
                    f"{where}: method {name!r} declares key {key!r}, which is already a key of method {owner}"
                )
        cls.name = name
        return METHODS.register(name)(cls)

    return add


__all__ = ["METHODS", "Loop", "Method", "MixedBatch", "Option", "register_method"]
