"""harness: a benchmarking harness for MixMo, MIMO, CutMix/Mixup and deep ensembles."""

__version__ = "0.1.0"
