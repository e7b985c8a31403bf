"""Measured training rates per trial shape and card, and the packing planner that uses them.

A shape is what sets a step's cost: (model, depth, width, M, b, batch size, precision, compile). A
table <card>.csv holds, per shape and per k (trials sharing the card at once), the
samples/s of ONE of those trials and its peak memory: `harness bench --suite SUITE.yaml` measures every
shape of a suite (``--pack 1 2 4`` for k > 1), and `harness run --dry-run` estimates from it. The planner
chooses, per shape, the k whose k trials together go fastest within the card's memory. Tables are looked up in the
user's folder first (what `harness bench --suite` wrote: $HARNESS_RATES_DIR, else <cache>/rates), then in the
tables shipped inside the package (harness/bench/rates/, package data: an installed wheel has them too).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path

from harness.core import environment
from harness.core.config import TrialConfig

SHIPPED_RATES = Path(__file__).resolve().parent / "rates"  # the measured tables shipped with the package
MEMORY_HEADROOM = 0.9  # packed trials may use 90% of the card's memory: allocator fragmentation, CUDA contexts


@dataclass(frozen=True)
class Shape:
    model: str
    depth: int
    width: int
    M: int
    b: int
    batch_size: int
    precision: str
    compile: str

    @classmethod
    def of(cls, cfg: TrialConfig) -> "Shape":
        return cls(
            cfg.model, cfg.depth, cfg.width, cfg.num_inputs, cfg.b, cfg.batch_size, cfg.precision, str(cfg.compile)
        )

    def __str__(self) -> str:
        return (
            f"{self.model}-{self.depth}-{self.width} M={self.M} b={self.b} batch {self.batch_size} {self.precision}"
            + ("" if self.compile == "False" else f" compile={self.compile}")
        )


@dataclass(frozen=True)
class Rate:
    """One measurement: ``concurrent`` trials of ``shape`` at once on ``card``, each at ``samples_per_s``."""

    card: str
    shape: Shape
    concurrent: int
    samples_per_s: float
    peak_memory_gb: float
    card_memory_gb: float = float("nan")
    torch: str = ""
    measured: str = ""  # date

    def row(self) -> dict:
        return {
            "card": self.card,
            **asdict(self.shape),
            **{k: v for k, v in asdict(self).items() if k not in ("card", "shape")},
        }


COLUMNS = [
    "card",
    *(f.name for f in fields(Shape)),
    *(f.name for f in fields(Rate) if f.name not in ("card", "shape")),
]


def card_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': the table's file name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def rates_dir() -> Path:
    """Where `harness bench --suite` writes its tables, and where they are looked up first."""
    from harness.store.filesystems import user_cache

    return Path(environment.text("HARNESS_RATES_DIR") or user_cache() / "rates")


def table_for(card: str, folder: Path | None = None) -> Path | None:
    """The table of the card named (a slug or part of one: 'h100' finds nvidia-h100-80gb-hbm3.csv), in ``folder``
    or else the user's tables, then the shipped ones; None if there is none; ValueError if the name fits several
    in one folder."""
    for where in [Path(folder)] if folder else [rates_dir(), SHIPPED_RATES]:
        found = _table_in(card, where)
        if found is not None:
            return found
    return None


def _table_in(card: str, folder: Path) -> Path | None:
    want = card_slug(card)
    found = sorted(p for p in folder.glob("*.csv") if want in p.stem) if folder.is_dir() else []
    exact = [p for p in found if p.stem == want]
    if exact or len(found) == 1:
        return (exact or found)[0]
    if len(found) > 1:
        raise ValueError(f"card {card!r} fits several rate tables: {', '.join(p.name for p in found)}; name it fully")
    return None


def read_rates(path: Path) -> list[Rate]:
    """The table's rows; ValueError naming the file and line for anything that is not a rate row."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); a rate table is a UTF-8 CSV file") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        rows = list(reader)
    except csv.Error as err:  # e.g. a field over the csv module's size limit
        # line_num counts the lines parsed before the failing one
        raise ValueError(f"{path}: line {reader.line_num + 1}: not CSV ({err})") from None
    out = []
    for i, r in enumerate(rows, 2):
        try:
            shape = Shape(
                r["model"], int(r["depth"]), int(r["width"]), int(r["M"]), int(r["b"]), int(r["batch_size"]),
                r["precision"], r["compile"],
            )  # fmt: skip
            out.append(
                Rate(r["card"], shape, int(r["concurrent"]), float(r["samples_per_s"]), float(r["peak_memory_gb"]),
                     float(r.get("card_memory_gb") or "nan"), r.get("torch", ""), r.get("measured", ""))
            )  # fmt: skip
        except (KeyError, ValueError, TypeError) as err:  # TypeError: a short row (missing values are None)
            raise ValueError(f"{path}: line {i}: not a rate row ({err}); columns: {', '.join(COLUMNS)}") from None
    return out


def write_rates(path: Path, rates: list[Rate]) -> Path:
    """Merge ``rates`` into the table (a new measurement of the same shape and k replaces the old one)."""
    from harness.store.files import write_text

    path = Path(path)
    old = read_rates(path) if path.exists() else []
    merged = {(r.shape, r.concurrent): r for r in [*old, *rates]}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in sorted(merged.values(), key=lambda r: (astuple(r.shape), r.concurrent)):
        writer.writerow(r.row())
    write_text(path, buf.getvalue())
    return path


@dataclass(frozen=True)
class Packing:
    """How many trials of a shape share one card, and what they run at."""

    shape: Shape
    per_card: int  # k
    samples_per_s: float  # of each of the k trials
    gain: float  # k trials' total samples/s over one trial alone (1.0 without a packed measurement)
    reason: str

    @property
    def gpus(self) -> float:
        """The fraction of a GPU each trial asks Ray for."""
        return 1.0 / self.per_card


def plan_packing(rates: list[Rate], shape: Shape) -> Packing | None:
    """The k (trials of ``shape`` sharing a card) with the highest total samples/s among the measured ones
    whose k x peak memory fits the card; None without any measurement of the shape."""
    measured = sorted((r for r in rates if r.shape == shape), key=lambda r: r.concurrent)
    if not measured:
        return None
    card_memory_gb = measured[0].card_memory_gb if measured[0].card_memory_gb == measured[0].card_memory_gb else None
    alone = next((r for r in measured if r.concurrent == 1), None)
    fits = [
        r for r in measured
        if card_memory_gb is None or r.concurrent * r.peak_memory_gb <= MEMORY_HEADROOM * card_memory_gb
    ]  # fmt: skip
    if not fits:
        return None
    best = max(fits, key=lambda r: (r.concurrent * r.samples_per_s, -r.concurrent))
    gain = best.concurrent * best.samples_per_s / alone.samples_per_s if alone else float("nan")
    if len(measured) == 1:
        reason = f"{best.concurrent} per card (the only measurement)"
    else:
        tried = ", ".join(f"{r.concurrent}: {r.concurrent * r.samples_per_s:,.0f}" for r in fits)
        reason = f"{best.concurrent} per card: most samples/s in total (k: samples/s {tried})"
        left = [r.concurrent for r in measured if r not in fits]
        if left:
            reason += f"; k = {', '.join(map(str, left))} would not fit in {card_memory_gb:g} GB"
    return Packing(shape, best.concurrent, best.samples_per_s, gain, reason)


def trial_samples(cfg: TrialConfig) -> float:
    """Batch entries a trial's training processes (steps x batch size), as `harness bench` counts them."""
    from harness.trial.cost import trial_steps

    return trial_steps(cfg) * cfg.batch_size


__all__ = [
    "COLUMNS",
    "Packing",
    "Rate",
    "Shape",
    "card_slug",
    "plan_packing",
    "read_rates",
    "table_for",
    "trial_samples",
    "write_rates",
]
