"""analysis.output: a report no planted file can script: every value from a file escaped (HTML, Markdown), CSV cells
that a spreadsheet would run neutralised, a Content-Security-Policy without script, checked in headless Chromium."""

import csv
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from harness.core import schema
from harness.store.trial_folder import TrialFolder
from helpers import chromium_dom, finished_trial, trial

PAYLOADS = (
    "<script>document.body.dataset.pwned='script'</script>",
    "<img src=x onerror=\"document.body.dataset.pwned='img'\">",
    '"><svg onload="document.body.dataset.pwned=\'attr\'">',
)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.handlers, self.urls = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.urls += [value or "" for name, value in attrs if name in ("href", "src")]


@pytest.mark.slow  # a browser
def test_planted_values_never_script_the_report(tmp_path):
    from markupsafe import escape

    from analysis.output import CONTENT_SECURITY_POLICY
    from analysis.report import build_report

    root = tmp_path / "results" / "shared"
    payload = " ".join(PAYLOADS)
    cfg = trial(name=root.name, output_dir=root.parent, dataset="cifar100", depth=16, width=2, epochs=1)
    labels = np.arange(10) % 3
    finished_trial(
        cfg,
        np.eye(3)[labels][:, None, :] * 3,
        labels,
        device_name="+cmd|' /C calc'!A0 " + payload,
    )
    failed = cfg.model_copy(update={"seed": 1})
    TrialFolder(failed.trial_dir).begin(failed.record(), "test-node", 0)
    (failed.trial_dir / schema.ERROR).write_text("RuntimeError: " + PAYLOADS[0] + "\n")
    (root / "report").mkdir()
    (root / "report" / "<img src=x onerror=alert(1)>.txt").write_text("planted")
    report = build_report(root, expected={PAYLOADS[2]: PAYLOADS[0]}, source=PAYLOADS[1])

    page = (report["dir"] / "index.html").read_text()
    assert f'content="{escape(CONTENT_SECURITY_POLICY)}"' in page
    parsed = _Tags()
    parsed.feed(page)
    assert "script" not in parsed.tags and "svg" not in parsed.tags and parsed.handlers == []
    assert parsed.tags.count("img") == len([p for p in report["figures"] if p.suffix == ".png"])
    assert "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.txt" in parsed.urls  # the planted file: a quoted link
    assert page.count("&lt;script&gt;") == 3  # shown as text: the hardware, the failed trial's error, a description
    assert page.count("&lt;img src=x onerror=") == 3  # the hardware, the suite file, the planted file name
    assert page.count("&lt;svg onload=") == 2  # the hardware, an expected trial id
    dom = chromium_dom(report["dir"] / "index.html", tmp_path / "chrome")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "data-pwned" not in dom.stdout and "<table" in dom.stdout

    # the policy holds even where escaping would fail: an inline script appended to the page does not run
    forged = report["dir"] / "forged.html"
    forged.write_text(page.replace("</body>", "<script>document.body.dataset.pwned='inline'</script></body>"))
    dom = chromium_dom(forged, tmp_path / "chrome")
    assert dom.returncode == 0 and "data-pwned" not in dom.stdout
    assert "Content Security Policy" in dom.stderr  # Chromium says what it refused


def test_table_cells_are_neutralised_for_spreadsheets_and_markdown(tmp_path):
    from analysis.output import write_table

    table = pd.DataFrame(
        {
            "set": ['=HYPERLINK("http://x")', "@SUM(A1)", "-2+3+cmd|' /C calc'!A0", "\tx", "clean"],
            "difference": ["-1.20\u00a0±\u00a00.40", "+0.80", "-0.5", "12.3 ± 1.0‡", "-"],
            "label": ["<b>x</b> | [a](javascript:alert(1))", "a`b`", r"\write18{calc}", "x", "y"],
        }
    )
    md, csv_path, tex = write_table(table, tmp_path / "t", r"caption <i> \write18{calc}")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["set"] for r in rows] == [
        '\'=HYPERLINK("http://x")',
        "'@SUM(A1)",
        "'-2+3+cmd|' /C calc'!A0",
        "'\tx",
        "clean",
    ]
    assert [r["difference"] for r in rows] == table["difference"].tolist()  # numbers, and "no value", stay
    text = md.read_text()
    assert "caption \\<i\\>" in text and "\\<b\\>x\\</b\\> \\| \\[a\\](javascript:alert(1))" in text
    assert "<b>" not in text and "a\\`b\\`" in text
    assert len(re.split(r"(?<!\\)\|", text.splitlines()[4])) == 3 + 2  # an escaped pipe is not a column
    latex = tex.read_text()
    assert latex.count("write18") == 2 and r"\write18" not in latex  # a cell and the caption: no command
