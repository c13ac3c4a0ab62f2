"""A self-contained HTML page: inline CSS, figures as PNG data URIs, no network, no external file.

The page carries one small inline script: on load it counts the images that decoded and writes
the count to ``<body data-images-ok=... data-images-total=...>``, so a headless browser's DOM
dump shows whether every figure rendered (the test suite checks it).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from capfuse.report.plots import figure_png

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; color: #222;
       background: #fafafa; line-height: 1.45; }
header { background: #24364b; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: 0.85; font-size: 14px; }
nav { background: #e9eef4; padding: 8px 32px; font-size: 14px; position: sticky; top: 0; }
nav a { margin-right: 14px; color: #24364b; text-decoration: none; }
main { padding: 8px 32px 40px 32px; max-width: 1200px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px 20px 16px 20px;
          margin: 18px 0; }
h2 { color: #24364b; border-bottom: 2px solid #e9eef4; padding-bottom: 4px; }
h3 { color: #444; font-size: 15px; margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border-bottom: 1px solid #e6e6e6; padding: 3px 8px; text-align: left; }
th { background: #f2f4f7; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 10px 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 13px; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
code { background: #f1f1f1; padding: 1px 4px; border-radius: 3px; }
pre { background: #f6f6f6; padding: 8px; font-size: 12px; overflow-x: auto; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-images-total', String(imgs.length));
});
"""


@dataclass
class Section:
    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, *fragments: str) -> Section:
        self.parts.extend(fragments)
        return self


def text(s: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{html.escape(s)}</p>'


def rich(s: str) -> str:
    """A paragraph where `backticks` become code; everything else is escaped."""
    pieces = html.escape(s).split("`")
    return '<p class="note">' + "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces)) + "</p>"


def missing(what: str, command: str) -> str:
    """The line an absent optional artefact gets instead of a section body."""
    return f'<p class="missing">{html.escape(what)}: not run yet: <code>{html.escape(command)}</code></p>'


def heading(s: str) -> str:
    return f"<h3>{html.escape(s)}</h3>"


def figure(fig: Figure | None, alt: str) -> str:
    if fig is None:
        return ""
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def table(df: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    """A DataFrame as an HTML table (escaped): numbers right-aligned, floats to ``digits``,
    text left-aligned, missing values as a dash."""
    if index:
        df = df.reset_index()
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]

    def cell(v) -> str:
        if v is None or (np.isscalar(v) and pd.isna(v)):
            return "–"
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}f}"
        return html.escape(str(v))

    head = "".join(
        f'<th class="{"num" if n else "txt"}">{html.escape(str(c))}</th>' for c, n in zip(df.columns, numeric)
    )
    rows = "".join(
        "<tr>" + "".join(f'<td class="{"num" if n else "txt"}">{cell(v)}</td>' for v, n in zip(r, numeric)) + "</tr>\n"
        for r in df.itertuples(index=False, name=None)
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"


def pre(s: str) -> str:
    return f"<pre>{html.escape(s)}</pre>"


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n' + "\n".join(s.parts) + "\n</section>"
        for s in sections
    )
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>"
        f"</header>\n<nav>{nav}</nav>\n<main>\n{body}\n</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
