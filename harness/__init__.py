"""harness: a benchmarking harness for MixMo, MIMO, CutMix/Mixup and deep ensembles."""

from harness import moved

__version__ = "0.1.0"

moved.install()  # old module paths (harness.config, harness.trainer, ...) keep working for one release
