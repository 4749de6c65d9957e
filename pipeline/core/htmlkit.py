"""Helpers for siftmix's self-contained HTML pages (audit.html, report.html): one style sheet,
a script that sorts ``table.sortable`` by a click on a header, and inline SVG bar charts. No
outside resources; every text that reaches the page goes through :func:`esc`."""

from __future__ import annotations

import html
import math
from typing import NamedTuple

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}table.sortable th{cursor:pointer}td:first-child,th:first-child{text-align:left}
svg{display:block;margin:.5em 0 1em}svg text{font-size:11px}"""

SORT_JS = """document.querySelectorAll('table.sortable').forEach(t=>t.querySelectorAll('th').forEach((th,i)=>
th.addEventListener('click',()=>{const tb=t.tBodies[0];const rows=[...tb.rows];const asc=th.dataset.asc!=='1';
th.dataset.asc=asc?'1':'0';rows.sort((a,b)=>{const x=a.cells[i].dataset.v??a.cells[i].textContent,
y=b.cells[i].dataset.v??b.cells[i].textContent;const nx=parseFloat(x.replace(/,/g,'')),ny=parseFloat(y.replace(/,/g,''));
const c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?c:-c});rows.forEach(r=>tb.appendChild(r))})));"""

COLORS = ("#e57373", "#64b5f6", "#81c784", "#ffb74d")


def esc(x) -> str:
    return html.escape(str(x))


def page(title: str, body: str, css: str = "") -> str:
    """A whole page: the shared style (plus ``css``), ``body``, and the table-sorting script."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<style>{CSS}{css}</style></head><body>{body}<script>{SORT_JS}</script></body></html>')


class Series(NamedTuple):
    name: str
    values: list[float]
    tips: list[str] | None = None  # tooltip per value; default "<label>: <value>"
    color: str | None = None


def _legend(series: list[Series], x: float) -> str:
    if len(series) < 2:
        return ""
    return "".join(f'<rect x="{x + 110 * j:.0f}" y="2" width="10" height="10" fill="{s.color or COLORS[j]}"/>'
                   f'<text x="{x + 110 * j + 14:.0f}" y="11">{esc(s.name)}</text>' for j, s in enumerate(series))


def _id(svg_id: str) -> str:
    return f'id="{esc(svg_id)}" ' if svg_id else ""


def hbar_chart(labels: list[str], series: list[Series], *, fmt=lambda v: f"{v:.2f}%", width: int = 700,
               label: str = "", svg_id: str = "") -> str:
    """Horizontal bars: one group per label, one bar per series, the value printed at its end."""
    bar_h, gap, left = (18 if len(series) == 1 else 14), 6, 200
    top = 16 if len(series) > 1 else 0
    group = bar_h * len(series) + gap
    vmax = max([v for s in series for v in s.values] + [1e-9])
    scale = (width - left - 60) / vmax
    out = [_legend(series, left)]
    for i, name in enumerate(labels):
        y0 = top + i * group
        out.append(f'<text x="0" y="{y0 + (group - gap) / 2 + 4:.0f}">{esc(name[:28])}</text>')
        for j, s in enumerate(series):
            v, y = s.values[i], y0 + j * bar_h
            tip = s.tips[i] if s.tips else f"{name}: {fmt(v)}"
            out.append(f'<rect x="{left}" y="{y}" width="{max(1.0, scale * v):.1f}" height="{bar_h - 1}" '
                       f'fill="{s.color or COLORS[j]}"><title>{esc(tip)}</title></rect>'
                       f'<text x="{left + 5 + scale * v:.1f}" y="{y + bar_h - 5}">{esc(fmt(v))}</text>')
    return (f'<svg {_id(svg_id)}width="{width}" height="{top + len(labels) * group}" role="img" '
            f'aria-label="{esc(label)}">{"".join(out)}</svg>')


def column_chart(labels: list[str], series: list[Series], *, x_label: str = "", y_label: str = "",
                 fmt=lambda v: f"{v:,.0f}", width: int = 700, height: int = 210, label_pos: float = 0.5,
                 svg_id: str = "") -> str:
    """Vertical bars: one slot per label, one bar per series in each slot. An x label sits at
    ``label_pos`` of its slot (0.5: the middle; 0: the left edge, for bins labelled by their start);
    labels are thinned so they do not overlap."""
    left, bottom, top = 56, 34, 20
    ph, pw = height - bottom - top, width - left - 10
    slot = pw / max(1, len(labels))
    bw = slot * 0.85 / len(series)
    vmax = max([v for s in series for v in s.values] + [1e-9])
    every = max(1, math.ceil(len(labels) * 34 / pw))
    out = [_legend(series, left),
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>',
           f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{esc(fmt(vmax))}</text>',
           f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>',
           f'<text x="12" y="{top + ph / 2:.0f}" transform="rotate(-90 12 {top + ph / 2:.0f})" '
           f'text-anchor="middle">{esc(y_label)}</text>',
           f'<text x="{left + pw / 2:.0f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>']
    for i, name in enumerate(labels):
        x0 = left + i * slot + slot * 0.075
        for j, s in enumerate(series):
            v = s.values[i]
            h = max(1.0, ph * v / vmax) if v > 0 else 0.0  # a count is never invisible
            tip = s.tips[i] if s.tips else f"{name}: {fmt(v)}"
            out.append(f'<rect x="{x0 + j * bw:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, bw - 1):.1f}" '
                       f'height="{h:.1f}" fill="{s.color or COLORS[j]}"><title>{esc(tip)}</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{left + (i + label_pos) * slot:.1f}" y="{top + ph + 14}" text-anchor="middle">{esc(name)}</text>')
    return (f'<svg {_id(svg_id)}width="{width}" height="{height}" role="img" aria-label="{esc(y_label)}">'
            f'{"".join(out)}</svg>')


# --------------------------------------------------------------------------- report formatting

def n(v) -> str:
    """A count with thousands separators, or a dash."""
    return "—" if v is None else f"{v:,}"


def mb(b) -> str:
    return "—" if b is None else f"{b / 1e6:,.2f} MB"


def pct(a, b) -> str:
    return f"{100 * a / b:.1f}%" if b else "—"


def secs(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


def k(key: str) -> str:
    """The ``data-k`` attribute that names a number on the page (tests read the DOM by it)."""
    return f' data-k="{esc(key)}"'


def table(head: list[str], rows: list[str], attrs: str = "") -> str:
    return (f'<table{attrs}><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
