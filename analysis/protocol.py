"""The report's reading protocol: how it combines a network's heads and a deep ensemble's members (the suite's
`ensemble_average`: "probabilities", the field's rule, or "logits", the MixMo authors'), set once per report.
Every table, figure and recomputed metric of one report reads the saved logits under it."""

from __future__ import annotations

import contextlib
import contextvars

from harness.metrics import AVERAGES

_AVERAGE: contextvars.ContextVar[str] = contextvars.ContextVar("ensemble_average", default="probabilities")

STATEMENT = {
    "probabilities": "members are combined by averaging their softmax probabilities (the field's rule: deep "
    "ensembles, uncertainty-baselines, torch-uncertainty)",
    "logits": "members are combined by averaging their logits (the MixMo authors' rule for their heads)",
}


_VERIFYING: contextvars.ContextVar[bool] = contextvars.ContextVar("verifying", default=False)


def average() -> str:
    return _AVERAGE.get()


def verifying() -> bool:
    """`harness report --verify`: every value recomputed from the saved logits, metrics.json only compared."""
    return _VERIFYING.get()


@contextlib.contextmanager
def verification(on: bool = True):
    token = _VERIFYING.set(on)
    try:
        yield
    finally:
        _VERIFYING.reset(token)


@contextlib.contextmanager
def reading(rule: str):
    if rule not in AVERAGES:
        raise ValueError(f"ensemble_average {rule!r}: one of {', '.join(AVERAGES)}")
    token = _AVERAGE.set(rule)
    try:
        yield
    finally:
        _AVERAGE.reset(token)
