"""Regenerate the README's quickstart figure from the quickstart's results, with the report's own code:

    harness run suites/quickstart.yaml --data-dir ../shared/data   # if results/quickstart is not there yet
    python docs/make_figures.py [results/quickstart]

It runs `harness report` on the folder and copies the width figure (Fig. 2 style, intervals clipped to the metric's
range) to docs/quickstart_width.png."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def main(folder: Path) -> int:
    if not folder.is_dir():
        print(f"{folder}: no results; run `harness run suites/quickstart.yaml` first", file=sys.stderr)
        return 2
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(folder)])
    if report.returncode != 0:
        return report.returncode
    widths = sorted((folder / "report" / "figures").glob("width_*.png"))
    if not widths:
        print(f"{folder}: the report drew no width figure", file=sys.stderr)
        return 1
    width = widths[0]
    shutil.copyfile(width, DOCS / "quickstart_width.png")
    print(f"{width} -> {DOCS / 'quickstart_width.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/quickstart")))
