"""Method registry: a new method is one file plus one line here."""

from harness.methods.base import Method, MixedBatch
from harness.methods.cut_mixmo import CutMixMo
from harness.methods.cutmix import CutMix
from harness.methods.linear_mixmo import LinearMixMo
from harness.methods.mimo import MIMO
from harness.methods.mixup import Mixup
from harness.methods.vanilla import Vanilla
from harness.registry import Registry

METHODS: Registry = Registry("method")
METHODS.register("vanilla")(Vanilla)
METHODS.register("mixup")(Mixup)
METHODS.register("cutmix")(CutMix)
METHODS.register("mimo")(MIMO)
METHODS.register("linear_mixmo")(LinearMixMo)
METHODS.register("cut_mixmo")(CutMixMo)

__all__ = ["METHODS", "Method", "MixedBatch"]
