"""What a running trial tells its driver and how the driver shows it: the typed report (sent through Tune,
kept in the suite lock's heartbeat for `harness status`), its one renderer, and the sweep's progress view
(counts, each running trial, an ETA from FLOPs)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields

from harness.core import environment
from harness.core.config import TrialConfig


def progress_every_s() -> float:
    """Seconds between in-epoch progress reports and between the driver's progress lines: often enough for the
    view, rare enough to cost nothing ($HARNESS_PROGRESS_S, for tests)."""
    return environment.seconds("HARNESS_PROGRESS_S")


def duration(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


HEARTBEAT = ("epoch", "in_epoch", "step", "steps", "evaluating")  # a report's fields the suite lock keeps


@dataclass(frozen=True)
class TrialReport:
    """One message from a trial to its driver, of one kind: started (no field set), a step within an epoch
    (``in_epoch``, ``step``, ``steps``, ``steps_per_s``), an epoch's end (``epoch``, ``epoch_time_s`` and the
    history row's metrics), evaluating a set (``evaluating``), or done (``done``, with the final metrics)."""

    trial_id: str
    in_epoch: int | None = None  # 1-based epoch in progress
    step: int | None = None
    steps: int | None = None  # steps per epoch
    steps_per_s: float | None = None  # in this epoch so far
    epoch: int | None = None  # epochs done (an epoch's end)
    epoch_time_s: float | None = None
    train_loss: float | None = None
    test_top1: float | None = None
    evaluating: str | None = None  # the evaluation set being evaluated after training
    done: bool = False
    metrics: dict = field(default_factory=dict)  # an epoch's history row, or the final metrics (numbers only)

    def to_tune(self) -> dict:
        """The flat dict Tune carries (its results are flat dicts of numbers and strings)."""
        own = {k: v for k, v in asdict(self).items() if k != "metrics" and v is not None and v is not False}
        return {**{k: v for k, v in self.metrics.items() if isinstance(v, (int, float, str))}, **own}

    @classmethod
    def from_tune(cls, result: dict) -> "TrialReport":
        """A Tune result (the report's keys among Tune's own) back to the report."""
        names = {f.name for f in fields(cls)} - {"metrics"}
        own = {k: result[k] for k in names if k in result}
        rest = {k: v for k, v in result.items() if k not in names}
        return cls(**{**own, "done": bool(own.get("done", False)), "metrics": rest})

    def heartbeat(self) -> dict:
        """What the suite lock keeps of it for `harness status` (JSON)."""
        return {k: getattr(self, k) for k in HEARTBEAT if getattr(self, k) is not None}

    @classmethod
    def from_heartbeat(cls, trial_id: str, record: dict) -> "TrialReport":
        return cls(trial_id, **{k: record[k] for k in HEARTBEAT if k in record})

    @property
    def is_epoch_end(self) -> bool:
        return self.epoch_time_s is not None


def describe(report: TrialReport, epochs: int, last_epoch: TrialReport | None = None) -> str:
    """A running trial in a few words: the progress view's line and `harness status`'s detail."""
    if report.evaluating is not None:
        return f"trained; evaluating {report.evaluating}"
    if report.in_epoch is not None:
        text = f"epoch {report.in_epoch}/{epochs}, step {report.step}/{report.steps}"
        if report.step is not None and report.steps:
            text += f" ({100 * report.step / report.steps:.0f}%)"
        if last_epoch is not None and last_epoch.train_loss is not None:
            text += f", last epoch loss {last_epoch.train_loss:.3f}"
        return text
    if report.epoch is not None:
        text = f"epoch {report.epoch}/{epochs} done"
        if report.train_loss is not None:
            text += f", loss {report.train_loss:.3f}"
        if report.test_top1 is not None:
            text += f", test {100 * report.test_top1:.1f}%"
        return text
    return "starting (loading data, building the model)"


@dataclass
class Progress:
    """A readable view of a sweep: elapsed time, counts by state, each running trial's epoch and step,
    and an ETA from the FLOPs left and the rates the running trials measure (so a trial of M = 2, b = 2
    counts for its doubled steps)."""

    trials: dict[str, TrialConfig]
    flops: dict[str, float]  # training FLOPs of each trial
    finished: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    running: dict[str, TrialReport] = field(default_factory=dict)  # trial id -> its last report
    done_fraction: dict[str, float] = field(default_factory=dict)  # of started trials
    rates: dict[str, float] = field(default_factory=dict)  # FLOP/s of each trial, last measured
    last_epoch: dict[str, TrialReport] = field(default_factory=dict)  # trial id -> its last end-of-epoch report
    retries: dict[str, int] = field(default_factory=dict)
    concurrency: int = 1  # trials at once
    started: float = field(default_factory=time.time)
    last_print: float = 0.0
    on_change: object = None  # called with the running view (the suite lock's heartbeat record)
    freed: list[float] = field(default_factory=list)  # when trial slots came free, not yet taken again
    gaps: list[float] = field(default_factory=list)  # per trial started in a freed slot: how long the slot idled
    spans: dict[str, list[float]] = field(default_factory=dict)  # trial id -> [start, end] as the driver saw them

    def update(self, tid: str, report: TrialReport) -> None:
        cfg, flops = self.trials[tid], self.flops[tid]
        if report.in_epoch is not None:
            self.done_fraction[tid] = (report.in_epoch - 1 + report.step / report.steps) / cfg.epochs
            self.rates[tid] = report.steps_per_s * flops / (report.steps * cfg.epochs)
        elif report.epoch_time_s is not None:
            self.done_fraction[tid] = report.epoch / cfg.epochs
            self.rates[tid] = flops / cfg.epochs / max(report.epoch_time_s, 1e-9)
            self.last_epoch[tid] = report
        self.running[tid] = report
        self._changed()

    def start(self, tid: str) -> None:
        now = time.monotonic()
        if self.freed:  # a slot a finished trial left: the time it idled is the driver's (and Tune's) own
            self.gaps.append(now - self.freed.pop(0))
        self.spans[tid] = [now, now]
        self.running.setdefault(tid, TrialReport(tid))
        self._changed()

    def end(self, tid: str, ok: bool | None) -> None:
        """A trial's run ended: finished (ok), failed, or None: stopped at a checkpoint to resume later (a drain),
        pending again."""
        now = time.monotonic()
        if len(self.finished) + len(self.failed) + len(self.running) < len(self.trials):  # others still wait
            self.freed.append(now)
        self.spans.setdefault(tid, [now, now])[1] = now
        self.running.pop(tid, None)
        if ok is not None:
            (self.finished if ok else self.failed).add(tid)
            self.done_fraction[tid] = 1.0
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change({t: r.heartbeat() for t, r in self.running.items()})

    def overhead(self) -> str:
        """One line: the sweep's own time per trial (a freed slot idling until Tune starts the next trial: scheduling,
        actor reuse, the driver's callbacks), beside the trials' time in their workers."""
        if not self.gaps:
            return ""
        spans = [end - start for start, end in self.spans.values() if end > start]
        return (
            f"driver overhead: {sum(self.gaps) / len(self.gaps):.2f} s per trial between one trial's end and the next "
            f"start in its slot (mean of {len(self.gaps)}; trials took {sum(spans) / max(len(spans), 1):.1f} s each "
            f"in their workers)"
        )

    def eta(self) -> float | None:
        """Seconds left: the FLOPs still to train over the rate of the trial slots. A slot trains at the mean
        FLOP rate of the running trials (of every trial measured so far while none runs); there are as many
        slots as the concurrency allows, at most the trials left."""
        measured = [self.rates[t] for t in self.running if t in self.rates] or list(self.rates.values())
        left_trials = [t for t in self.trials if t not in self.finished and t not in self.failed]
        if not measured or not left_trials:
            return None if not measured else 0.0
        left = sum(self.flops[t] * (1 - self.done_fraction.get(t, 0.0)) for t in left_trials)
        slots = min(self.concurrency, len(left_trials))
        return left / (sum(measured) / len(measured) * slots)

    def line(self) -> str:
        pending = len(self.trials) - len(self.finished) - len(self.failed) - len(self.running)
        head = (
            f"[{time.strftime('%H:%M:%S')}] elapsed {duration(time.time() - self.started)}: "
            f"{len(self.finished)} done, {len(self.running)} running, {pending} pending, {len(self.failed)} failed"
        )
        eta = self.eta()
        head += f", ETA {duration(eta)}" if eta is not None else ", ETA after the first measurements"
        parts = [head]
        for tid, r in sorted(self.running.items()):
            retry = f" (retry {self.retries[tid]})" if self.retries.get(tid) else ""
            parts.append(f"    {tid}: {describe(r, self.trials[tid].epochs, self.last_epoch.get(tid))}{retry}")
        return "\n".join(parts)

    def show(self, force: bool = False) -> None:
        if force or time.time() - self.last_print >= progress_every_s():
            print(self.line(), flush=True)
            self.last_print = time.time()
