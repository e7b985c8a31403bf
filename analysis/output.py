"""Every file the report writes, written safely: tables as CSV (formula cells neutralised), Markdown (cells
escaped) and LaTeX (escaped), figures, JSON and the HTML page (one autoescaping rule, a Content-Security-Policy
without script), each through the atomic writer, so a results folder from anyone cannot script the page or a
spreadsheet, and a crash never leaves half a file.

HTML is built from ``fragment(template, *values)``: the template is trusted markup, every value is escaped
unless it is itself a fragment."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import quote

import jinja2
import pandas as pd
from markupsafe import Markup

from harness.store.files import write_bytes, write_text

# Cells a spreadsheet would read as a formula (OWASP's CSV injection list): prefixed with a quote. A number
# written as text ("-1.2 ± 0.4", "+0.8") is left alone: digits and signs cannot call anything.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMERIC_TEXT = re.compile(r"[-+]?[0-9][0-9.,eE±‡%() \u00a0+-]*|[-+]")  # a bare "-": the tables' "no value"
# Markdown that could become markup, a link or a table column: backslash-escaped (CommonMark).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|&!])")
# The page may show its own images and style; nothing else (no script, no frames, no form, no base).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self' file:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


def fragment(template: str, *values, **named) -> Markup:
    """Trusted markup with its values escaped (a value that is a fragment stays markup)."""
    return Markup(template).format(*values, **named)


def join(parts, separator: str = "") -> Markup:
    return Markup(separator).join(parts)


def link(path: str, text: str | None = None) -> Markup:
    """A link to a file of the report folder: the name percent-quoted in the href, escaped in the text."""
    return fragment('<a href="{}">{}</a>', quote(path), path if text is None else text)


def figure_html(stem: str, caption: str) -> Markup:
    return fragment(
        '<figure><img src="{}" alt="{}"><figcaption>{} {} {}</figcaption></figure>',
        quote(f"figures/{stem}.png"),
        stem,
        caption,
        link(f"figures/{stem}.png", "PNG"),
        link(f"figures/{stem}.svg", "SVG"),
    )


def table_html(title: str, table: pd.DataFrame, caption: str, stem: str, level: int = 2) -> Markup:
    """A table with its heading (``level``: 3 under a section's own), caption and links to its three files (pandas
    escapes every cell), in a container that scrolls sideways: a wide table is never cut off."""
    links = join((link(f"{stem}.{ext}", ext.upper()) for ext in ("csv", "md", "tex")), " ")
    return fragment(
        f"<h{level}>{{}}</h{level}><div class=scroll>{{}}</div><p class=caption>{{}} {{}}</p>",
        title,
        Markup(table.to_html(index=False, classes="results", border=0, escape=True)),
        caption,
        links,
    )


_PAGE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ policy }}">
<title>{{ name }}: harness report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f4f4f4; } img { max-width: 100%; } .missing { color: #a33; }
td { white-space: nowrap; } figure { margin: 1.5em 0; }
.scroll { overflow-x: auto; max-width: 100%; margin-bottom: 1em; } .scroll table { margin-bottom: 0; }
figcaption, .caption, .meta { font-size: 0.85em; color: #444; }
</style></head><body>
<h1>Sweep <code>{{ name }}</code></h1>
<p>{{ finished }} of {{ total }} trials finished.</p>
{% for section in sections %}{{ section }}{% endfor %}
</body></html>
"""
)


def write_page(path: Path, name: str, total: int, finished: int, sections: list[Markup]) -> None:
    write_text(
        path,
        _PAGE.render(policy=CONTENT_SECURITY_POLICY, name=name, total=total, finished=finished, sections=sections),
    )


# --- tables
def csv_cell(value):
    """A cell a spreadsheet shows as text, never runs (OWASP: a leading quote before = + - @ tab CR)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMERIC_TEXT.fullmatch(value):
        return "'" + value
    return value


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_text(text: str) -> str:
    """Text for a LaTeX caption (pandas escapes the cells, not the caption): no command can be spelled."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def markdown_cell(value):
    return _MARKDOWN_SPECIAL.sub(r"\\\1", value).replace("\n", " ") if isinstance(value, str) else value


def _cells(table: pd.DataFrame, escape) -> pd.DataFrame:
    out = table.copy()
    out.columns = [escape(str(c)) for c in table.columns]
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(escape)
    return out


def write_csv(table: pd.DataFrame, path: Path) -> None:
    buf = io.StringIO()
    _cells(table, csv_cell).to_csv(buf, index=False)
    write_text(path, buf.getvalue())


def write_table(table: pd.DataFrame, stem: Path, caption: str) -> list[Path]:
    """Markdown, CSV and LaTeX versions of a table (kept as they are when the report's cache wrote the same)."""
    from analysis import cache

    return cache.kept(f"table:{Path(stem).name}", [table, caption], lambda: _write_table(table, stem, caption))


def _write_table(table: pd.DataFrame, stem: Path, caption: str) -> list[Path]:
    md, csv, tex = stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".tex")
    body = _cells(table, markdown_cell).to_markdown(index=False) if not table.empty else "(no rows)"
    write_text(md, f"{markdown_cell(caption)}\n\n{body}\n")
    write_csv(table, csv)
    write_text(tex, table.to_latex(index=False, caption=latex_text(caption), escape=True))
    return [md, csv, tex]


def save_figure(fig, path: Path) -> list[Path]:
    """The figure as PNG and SVG (text drawn as paths: nothing in a label can become SVG markup); the same figure
    gives the same bytes (no date, SVG ids from a fixed salt), so a report can be compared file by file."""
    import matplotlib

    out = []
    for suffix in (".png", ".svg"):
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "harness"}):
            fig.savefig(
                buf, format=suffix[1:], bbox_inches="tight", metadata={"Date": None} if suffix == ".svg" else {}
            )
        target = path.with_suffix(suffix)
        write_bytes(target, buf.getvalue())
        out.append(target)
    return out
