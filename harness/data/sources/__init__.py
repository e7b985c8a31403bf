"""The datasets, one file each (``@register_dataset``); discovered by ``harness.data.datasets.DATASETS``."""
