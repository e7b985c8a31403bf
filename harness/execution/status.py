"""`harness status`: a table of a suite's trials and their states, read from the trial folders (no Ray)."""

from __future__ import annotations

from pathlib import Path

from harness.core import schema
from harness.core.config import TrialConfig
from harness.execution.progress import TrialReport, describe
from harness.store.errors import CorruptFile
from harness.store.trial_folder import TrialFolder


def status_rows(
    trials: list[TrialConfig | tuple[TrialConfig, Path]],
    running: dict[str, dict] | None = None,
    corrupt: dict[str, str] | None = None,
) -> list[tuple[str, ...]]:
    """A row per trial (a config, or a config and the folder it was read from): identity, state and a
    short detail; ``running`` is the live driver's view."""
    running = running or {}
    rows = []
    for entry in trials:
        cfg, trial_dir = entry if isinstance(entry, tuple) else (entry, entry.trial_dir)
        tid = trial_dir.name
        state = TrialFolder(trial_dir).state()
        name, detail = state.state, state.detail
        if name == "finished":
            detail = f"top1 {100 * TrialFolder(trial_dir).metrics()['top1']:.2f}%"
        elif tid in running:
            name, detail = "running", describe(TrialReport.from_heartbeat(tid, running[tid]), cfg.epochs)
        elif name == "failed":
            detail = f"after epoch {state.epochs}: {detail[:80]}"
        elif name == "partial":
            detail = f"epoch {state.epochs}"
        rows.append(
            (
                tid,
                cfg.method,
                str(cfg.width),
                str(cfg.num_inputs),
                str(cfg.b),
                str(cfg.seed),
                str(cfg.epochs),
                name,
                detail,
            )
        )
    for tid, why in (corrupt or {}).items():
        rows.append((tid, "?", "?", "?", "?", "?", "?", "corrupt", why))
    return rows


def trials_in_folder(suite_dir: Path) -> tuple[list[tuple[TrialConfig, Path]], dict[str, str]]:
    """The trials whose folders exist under a results/<suite> folder (each with its folder: one written by an
    older recipe version has another id today), and those whose config is unreadable."""
    trials, corrupt = [], {}
    for config_file in sorted(Path(suite_dir).glob("*/" + schema.CONFIG)):
        folder = TrialFolder(config_file.parent)
        try:
            cfg = TrialConfig.from_record(folder.config())
            trials.append((cfg, folder.path))
        except (CorruptFile, ValueError) as err:
            corrupt[folder.trial_id] = f"{schema.CONFIG}: {str(err).splitlines()[0][-150:]}"
    return trials, corrupt


def status_table(rows: list[tuple[str, ...]]) -> str:
    rows = [("trial", "method", "width", "M", "b", "seed", "epochs", "state", "detail"), *rows]
    counts: dict[str, int] = {}
    for r in rows[1:]:
        counts[r[7]] = counts.get(r[7], 0) + 1
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


LIST_LIMIT = 100  # trials listed one per line; a larger grid is summarised (method x width x M) unless verbose


def status_view(rows: list[tuple[str, ...]], verbose: bool = False) -> str:
    """The status table, or for a grid of more than LIST_LIMIT trials its summary: a line per method, width and M
    with the count in each state."""
    if verbose or len(rows) <= LIST_LIMIT:
        return status_table(rows)
    groups: dict[tuple, dict[str, int]] = {}
    for r in rows:
        counts = groups.setdefault((r[1], int(r[2]), int(r[3])), {})
        counts[r[7]] = counts.get(r[7], 0) + 1
    table = [("method", "width", "M", "trials", "states")]
    for (method, width, m), counts in sorted(groups.items()):
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        table.append((method, str(width), str(m), str(sum(counts.values())), states))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    totals: dict[str, int] = {}
    for r in rows:
        totals[r[7]] = totals.get(r[7], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(totals.items())))
    lines.append(f"({len(rows)} trials summarised; --verbose lists every one)")
    return "\n".join(lines)
