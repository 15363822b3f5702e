"""The report's HTML: a page shell (styles inline, plotly.js beside the pages in assets/, no network),
tables, and the charts' placeholders with the script that draws them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from nevisbench.run.store.report import format_flops

__all__ = ["ASSETS", "PLOTLY_JS", "Page", "cell", "fmt", "link", "table"]

ASSETS = "assets"
PLOTLY_JS = "plotly.min.js"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:white;padding:10px 24px}header a{color:#cfe3ff;margin-right:16px}
main{padding:8px 24px 40px;max-width:1400px}h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;background:white}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef2f6}.chart{width:100%;max-width:1100px;height:460px;background:white;margin:8px 0}
.note{color:#555;font-size:13px}.warn{color:#8a4b00;background:#fff4e0;padding:4px 8px;font-size:13px}
.flag{color:#b00020;font-weight:600}code{background:#f0f0f0;padding:0 3px}details{margin:8px 0}
pre{background:white;border:1px solid #ddd;padding:8px;font-size:12px;overflow:auto;max-height:500px}
"""

# draws every chart of the page; a click on a point that names a page goes there
_DRAW = """<script>
for (const [id, fig] of Object.entries(JSON.parse(document.getElementById('figures').textContent))) {
  const el = document.getElementById(id);
  Plotly.newPlot(el, fig.data, fig.layout, {displaylogo: false, responsive: true});
  el.on('plotly_click', (e) => { const p = e.points[0]; if (p && typeof p.customdata === 'string' && p.customdata)
    window.location.href = p.customdata; });
}
</script>"""


def fmt(value: Any, kind: str = "") -> str:
    """A number as the tables show it: FLOPs with a unit, errors to 4 places, seconds to 3 figures."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if kind == "flops":
        return format_flops(value)
    if kind == "seconds":
        return f"{value:.3g} s"
    if kind == "int" or isinstance(value, int):
        return f"{value:g}"
    return f"{value:.4f}"


def cell(value: Any, kind: str = "") -> str:
    """A table cell: numbers right-aligned, text escaped (pass `kind="html"` for ready markup)."""
    if kind == "html":
        return f"<td>{value}</td>"
    text = escape(fmt(value, kind))
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="n">{text}</td>' if numeric else f"<td>{text}</td>"


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href, quote=True)}">{escape(text)}</a>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, css: str = "") -> str:
    """`rows` of ready cells (see `cell`)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""  # a key-value table has no header
    return f'<table class="{css}">{thead}<tbody>{body}</tbody></table>'


class Page:
    """One HTML page: parts appended in order, charts collected and drawn by one script at the end.
    `root` is the relative path from the page to the site's top folder ("" or "../")."""

    def __init__(self, title: str, root: str = "") -> None:
        self.title, self.root = title, root
        self.parts: list[str] = []
        self.figures: dict[str, dict[str, Any]] = {}

    def add(self, *html: str) -> None:
        self.parts.extend(html)

    def heading(self, text: str, level: int = 2, anchor: str = "") -> None:
        ident = f' id="{escape(anchor, quote=True)}"' if anchor else ""
        self.parts.append(f"<h{level}{ident}>{escape(text)}</h{level}>")

    def note(self, text: str, css: str = "note") -> None:
        self.parts.append(f'<p class="{css}">{escape(text)}</p>')

    def chart(self, figure: dict[str, Any], height: int = 460) -> str:
        """Place `figure` here; returns its element id."""
        ident = f"fig-{len(self.figures)}"
        self.figures[ident] = figure
        self.parts.append(f'<div class="chart" id="{ident}" style="height:{height}px"></div>')
        return ident

    def render(self) -> str:
        figures = json.dumps(self.figures, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        nav = f'<a href="{self.root}index.html">report</a>'
        script = f'<script src="{self.root}{ASSETS}/{PLOTLY_JS}"></script>' if self.figures else ""
        draw = f'<script type="application/json" id="figures">{figures}</script>{_DRAW}' if self.figures else ""
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(self.title)}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style>{script}'
                f"</head><body><header>{nav}</header><main><h1>{escape(self.title)}</h1>{''.join(self.parts)}</main>"
                f"{draw}</body></html>\n")
