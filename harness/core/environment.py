"""Every environment variable the harness reads, each documented once; code reads them through ``text`` and
``seconds`` where it uses them, never at import (a test fails on a `HARNESS_*` name read anywhere else or at import,
and on one not listed here)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    meaning: str


VARIABLES = {
    v.name: v
    for v in [
        Variable("HARNESS_DATA_DIR", "data", "where datasets are found (a trial's or suite's data_dir wins)"),
        Variable("HARNESS_CACHE_DIR", None, "the user's cache folder (default $XDG_CACHE_HOME/harness)"),
        Variable("HARNESS_STAGING_DIR", None, "an object store's node-local staging folder (default <cache>/staging)"),
        Variable("HARNESS_SHARED_STORAGE", None, "1: vouch that the storage is shared by a multi-node cluster's nodes"),
        Variable(
            "HARNESS_RATES_DIR",
            None,
            "where `harness bench --suite` writes rate tables, read first (else <cache>/rates)",
        ),
        Variable("HARNESS_PROGRESS_S", "10", "seconds between two progress lines of a sweep"),
        Variable("HARNESS_STORE_TIMEOUT_S", "5", "seconds a tracking store has to answer before it counts as down"),
        Variable("HARNESS_DOWNLOAD_TIMEOUT_S", "60", "seconds of silence after which a dataset download fails"),
        Variable("HARNESS_PLUGIN_SLOW_S", "5", "seconds of import after which a plugin is named as slow"),
        Variable("HARNESS_INFERENCE_S", "1", "seconds of timed inference behind a trial's images/s (0: one batch)"),
        Variable("HARNESS_OP_BUILD_TIMEOUT", None, "seconds DeepSpeed's CPU communication op may take to compile"),
        Variable("HARNESS_WORKER_TRIM", "1", "0: a reused Ray worker keeps a finished trial's freed memory (baseline)"),
        Variable("HARNESS_HEAD_IP", None, "a SLURM job's Ray head address (default: Ray's guess for the batch node)"),
    ]
}


def given(name: str) -> str | None:
    """The variable's value where it is set (and not empty), else None."""
    return os.environ.get(VARIABLES[name].name) or None


def text(name: str) -> str | None:
    """The variable's value, else its default (None: unset and no default)."""
    return given(name) or VARIABLES[name].default


def seconds(name: str, fallback: float | None = None) -> float:
    """A duration variable as a number (``fallback`` where it has no default)."""
    value = text(name)
    return float(value) if value is not None else float(fallback)


def markdown_table() -> str:
    """The table of docs/environment.md (checked by a test)."""
    rows = [
        f"| `{v.name}` | {f'`{v.default}`' if v.default is not None else ''} | {v.meaning} |"
        for v in VARIABLES.values()
    ]
    return "\n".join(["| variable | default | what it sets |", "| --- | --- | --- |", *rows])
