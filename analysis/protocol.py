"""The report's reading protocol: how it combines a network's heads and a deep ensemble's members (the suite's
`ensemble_average`: "probabilities", the field's rule, or "logits", the MixMo authors'), chosen once per report and
passed to every table, figure and recomputed metric (their ``rule`` argument), which read the saved logits under
it."""

from __future__ import annotations

from harness.metrics import AVERAGES

STATEMENT = {
    "probabilities": "members are combined by averaging their softmax probabilities (the field's rule: deep "
    "ensembles, uncertainty-baselines, torch-uncertainty)",
    "logits": "members are combined by averaging their logits (the MixMo authors' rule for their heads)",
}


def checked(rule: str) -> str:
    """``rule`` if it is an aggregation rule, else ValueError naming the allowed ones."""
    if rule not in AVERAGES:
        raise ValueError(f"ensemble_average {rule!r}: one of {', '.join(AVERAGES)}")
    return rule
