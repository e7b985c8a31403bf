"""Method registry: a new method is one file plus one line here."""

from harness.methods.base import Method, MixedBatch
from harness.methods.batch_ensemble import BatchEnsemble
from harness.methods.cut_mixmo import CutMixMo
from harness.methods.cutmix import CutMix
from harness.methods.linear_mixmo import LinearMixMo
from harness.methods.masksembles import Masksembles
from harness.methods.mc_dropout import MCDropout
from harness.methods.mimo import MIMO
from harness.methods.mixup import Mixup
from harness.methods.packed_ensemble import PackedEnsemble
from harness.methods.vanilla import Vanilla
from harness.registry import Registry

METHODS: Registry = Registry("method")
METHODS.register("vanilla")(Vanilla)
METHODS.register("mixup")(Mixup)
METHODS.register("cutmix")(CutMix)
METHODS.register("mimo")(MIMO)
METHODS.register("linear_mixmo")(LinearMixMo)
METHODS.register("cut_mixmo")(CutMixMo)
METHODS.register("batch_ensemble")(BatchEnsemble)
METHODS.register("packed_ensemble")(PackedEnsemble)
METHODS.register("masksembles")(Masksembles)
METHODS.register("mc_dropout")(MCDropout)

__all__ = ["METHODS", "Method", "MixedBatch"]
