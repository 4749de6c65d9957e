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

import json

import numpy as np
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.htmlkit import Series, esc, hbar_chart, page
from siftmix.pipeline.core.text import ngram_hashes, words

from .appendix_c import Benchmark, NgramIndex


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
    return esc(text[:s]) + "<mark>" + esc(text[s:e]) + "</mark>" + esc(text[e:])


_CSS = """mark{background:#ffd54f}.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.5em 0 1.5em}
.ex div{background:#fafafa;border:1px solid #e5e5e5;padding:.5em;white-space:pre-wrap;font-size:13px}"""


def benchmark_rows(bs: list[dict], key: str = "") -> str:
    """Table rows (name, N, examples, dirty, clean, % dirty) of audit benchmarks; with ``key``, the
    dirty and % dirty cells carry ``data-k="<key>.dirty.<name>"`` / ``<key>.pct_dirty.<name>``."""
    def k(field, name):
        return f' data-k="{esc(f"{key}.{field}.{name}")}"' if key else ""

    return "".join(
        f'<tr class="bench-row"><td>{esc(b["name"])}</td><td>{b["n"]}</td><td>{b["examples"]}</td>'
        f'<td{k("dirty", b["name"])}>{b["dirty"]}</td><td>{b["clean"]}</td>'
        f'<td data-v="{b["pct_dirty"]}"{k("pct_dirty", b["name"])}>{b["pct_dirty"]:.2f}</td></tr>'
        for b in bs)


BENCHMARK_HEAD = ("<thead><tr><th>benchmark</th><th>N</th><th>examples</th><th>dirty</th><th>clean</th>"
                  "<th>% dirty</th></tr></thead>")


def dirty_chart(bs: list[dict], svg_id: str = "chart") -> str:
    """Bar chart of % dirty per benchmark."""
    return hbar_chart([b["name"] for b in bs], [Series("% dirty", [b["pct_dirty"] for b in bs],
                      [f'{b["name"]}: {b["pct_dirty"]:.2f}% dirty' for b in bs])],
                      label="% dirty per benchmark", svg_id=svg_id)


def to_html(audit: dict) -> str:
    bs = audit["benchmarks"]
    details = []
    for b in bs:
        if not b["dirty_examples"]:
            continue
        items = "".join(
            f'<p><b>{esc(e["id"])}</b> — training document <code>{esc(e["train_doc"])}</code></p>'
            f'<div class="ex"><div>{_marked(e["text"], e["example_span"])}</div>'
            f'<div>{_marked(e["train_snippet"], e["train_span"])}</div></div>'
            for e in b["dirty_examples"][:200])
        opened = " open" if not details else ""
        details.append(f'<details{opened}><summary>{esc(b["name"])}: {b["dirty"]} dirty examples</summary>{items}</details>')
    t = audit["training_side"]
    training = "".join(f"<li>{esc(k.replace('_', ' '))}: {esc(v)}</li>" for k, v in t.items())
    return page("siftmix contamination audit",
                f'<h1>Benchmark contamination audit</h1>'
                f'<p>GPT-3 appendix C: an example is dirty if one of its N-grams occurs in the training data.</p>'
                f'<table id="benchmarks" class="sortable">{BENCHMARK_HEAD}<tbody>{benchmark_rows(bs)}</tbody></table>'
                f'{dirty_chart(bs)}<h2>Training side</h2><ul>{training}</ul><h2>Dirty examples</h2>{"".join(details)}',
                css=_CSS)


def write_reports(audit: dict, folder: str) -> None:
    storage.write_text(storage.join(folder, "audit.json"), json.dumps(audit, indent=1, ensure_ascii=False))
    storage.write_text(storage.join(folder, "audit.md"), to_markdown(audit))
    storage.write_text(storage.join(folder, "audit.html"), to_html(audit))
