"""Audit reports: audit.json (machine-readable), audit.md, and audit.html (one self-contained page:
no CDN, inline CSS/JS/SVG, every text HTML-escaped).

audit.json schema (``schema_version`` 1)::

    {"schema_version": 1,
     "benchmarks": [{"name", "n", "examples", "dirty", "clean", "pct_dirty",
                     "dirty_examples": [{"id", "text", "ngram", "example_span": [start, end],
                                         "train_doc", "train_snippet", "train_span": [start, end]}]}],
     "training_side": {"documents_in", "documents_cut", "documents_dropped", "collisions",
                       "ngrams_ignored_as_boilerplate", "chars_in", "chars_removed"},
     "config": {...}}

Spans are character offsets into ``text`` / ``train_snippet``.
"""

from __future__ import annotations

import html
import json

import numpy as np

from .appendix_c import Benchmark, NgramIndex
from .ngrams import ngram_hashes, words


def example_span(text: str, size: int, h: int) -> tuple[list[int], str]:
    w = words([text])
    hs, first = ngram_hashes(w, size)
    hit = np.nonzero(hs == np.uint64(h))[0]
    if not len(hit):
        return [0, 0], ""
    f = int(first[hit[0]])
    s, e = int(w.start[f]), int(w.end[f + size - 1])
    return [s, e], text[s:e]


def build_audit(benchmarks: list[Benchmark], index: NgramIndex, dirty: dict[str, dict], training: dict, config: dict) -> dict:
    out = []
    for bi, b in enumerate(benchmarks):
        n = index.n[b.name]
        exs = []
        for ex in sorted(int(k.split(":")[1]) for k in dirty if int(k.split(":")[0]) == bi):
            d = dirty[f"{bi}:{ex}"]
            span, gram = example_span(b.texts[ex], n, d["hash"])
            exs.append({"id": b.ids[ex], "text": b.texts[ex], "ngram": gram, "example_span": span,
                        "train_doc": d["doc"], "train_snippet": d["snippet"], "train_span": d["span"]})
        total = len(b.texts)
        out.append({"name": b.name, "n": n, "examples": total, "dirty": len(exs), "clean": total - len(exs),
                    "pct_dirty": round(100.0 * len(exs) / total, 3) if total else 0.0, "dirty_examples": exs})
    return {"schema_version": 1, "benchmarks": out, "training_side": training, "config": config}


def to_markdown(audit: dict) -> str:
    lines = ["# Benchmark contamination audit (GPT-3 appendix C)", "",
             "| benchmark | N | examples | dirty | clean | % dirty |", "|---|---:|---:|---:|---:|---:|"]
    for b in audit["benchmarks"]:
        lines.append(f"| {b['name']} | {b['n']} | {b['examples']} | {b['dirty']} | {b['clean']} | {b['pct_dirty']:.2f} |")
    t = audit["training_side"]
    lines += ["", "## Training side", ""] + [f"- {k.replace('_', ' ')}: {v}" for k, v in t.items()]
    for b in audit["benchmarks"]:
        if not b["dirty_examples"]:
            continue
        lines += ["", f"## {b['name']}: dirty examples", ""]
        for e in b["dirty_examples"][:50]:
            lines.append(f"- `{e['id']}` matches training document `{e['train_doc']}` on “{e['ngram']}”")
        if len(b["dirty_examples"]) > 50:
            lines.append(f"- ... and {len(b['dirty_examples']) - 50} more (audit.json has them all)")
    return "\n".join(lines) + "\n"


def _marked(text: str, span: list[int]) -> str:
    s, e = span
    return html.escape(text[:s]) + "<mark>" + html.escape(text[s:e]) + "</mark>" + html.escape(text[e:])


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{cursor:pointer;background:#f3f3f3}td:first-child,th:first-child{text-align:left}
mark{background:#ffd54f}.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.5em 0 1.5em}
.ex div{background:#fafafa;border:1px solid #e5e5e5;padding:.5em;white-space:pre-wrap;font-size:13px}
svg text{font-size:11px}"""

_JS = """document.querySelectorAll('#benchmarks th').forEach((th,i)=>th.addEventListener('click',()=>{
const tb=document.querySelector('#benchmarks tbody');const rows=[...tb.rows];const asc=th.dataset.asc!=='1';
th.dataset.asc=asc?'1':'0';rows.sort((a,b)=>{const x=a.cells[i].dataset.v??a.cells[i].textContent,
y=b.cells[i].dataset.v??b.cells[i].textContent;const nx=parseFloat(x),ny=parseFloat(y);
const c=(isNaN(nx)||isNaN(ny))?x.localeCompare(y):nx-ny;return asc?c:-c});rows.forEach(r=>tb.appendChild(r))}));"""


def to_html(audit: dict) -> str:
    bs = audit["benchmarks"]
    rows = "".join(
        f'<tr class="bench-row"><td>{html.escape(b["name"])}</td><td>{b["n"]}</td><td>{b["examples"]}</td>'
        f'<td>{b["dirty"]}</td><td>{b["clean"]}</td><td data-v="{b["pct_dirty"]}">{b["pct_dirty"]:.2f}</td></tr>'
        for b in bs)
    width, bar_h = 700, 18
    top = max([b["pct_dirty"] for b in bs] + [1e-9])
    bars = "".join(
        f'<text x="0" y="{i * (bar_h + 6) + 13}">{html.escape(b["name"][:28])}</text>'
        f'<rect x="200" y="{i * (bar_h + 6)}" width="{max(1.0, (width - 260) * b["pct_dirty"] / top):.1f}" '
        f'height="{bar_h}" fill="#e57373"><title>{html.escape(b["name"])}: {b["pct_dirty"]:.2f}% dirty</title></rect>'
        f'<text x="{205 + (width - 260) * b["pct_dirty"] / top:.1f}" y="{i * (bar_h + 6) + 13}">{b["pct_dirty"]:.2f}%</text>'
        for i, b in enumerate(bs))
    svg = f'<svg id="chart" width="{width}" height="{len(bs) * (bar_h + 6)}" role="img" aria-label="% dirty per benchmark">{bars}</svg>'
    details = []
    for b in bs:
        if not b["dirty_examples"]:
            continue
        items = "".join(
            f'<p><b>{html.escape(e["id"])}</b> — training document <code>{html.escape(e["train_doc"])}</code></p>'
            f'<div class="ex"><div>{_marked(e["text"], e["example_span"])}</div>'
            f'<div>{_marked(e["train_snippet"], e["train_span"])}</div></div>'
            for e in b["dirty_examples"][:200])
        opened = " open" if not details else ""
        details.append(f'<details{opened}><summary>{html.escape(b["name"])}: {b["dirty"]} dirty examples</summary>{items}</details>')
    t = audit["training_side"]
    training = "".join(f"<li>{html.escape(k.replace('_', ' '))}: {html.escape(str(v))}</li>" for k, v in t.items())
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>siftmix contamination audit</title>'
            f'<style>{_CSS}</style></head><body><h1>Benchmark contamination audit</h1>'
            f'<p>GPT-3 appendix C: an example is dirty if one of its N-grams occurs in the training data.</p>'
            f'<table id="benchmarks"><thead><tr><th>benchmark</th><th>N</th><th>examples</th><th>dirty</th>'
            f'<th>clean</th><th>% dirty</th></tr></thead><tbody>{rows}</tbody></table>{svg}'
            f'<h2>Training side</h2><ul>{training}</ul><h2>Dirty examples</h2>{"".join(details)}'
            f'<script>{_JS}</script></body></html>')


def write_reports(audit: dict, folder: str) -> None:
    import os

    with open(os.path.join(folder, "audit.json"), "w", encoding="utf-8") as fh:
        json.dump(audit, fh, indent=1, ensure_ascii=False)
    with open(os.path.join(folder, "audit.md"), "w", encoding="utf-8") as fh:
        fh.write(to_markdown(audit))
    with open(os.path.join(folder, "audit.html"), "w", encoding="utf-8") as fh:
        fh.write(to_html(audit))
