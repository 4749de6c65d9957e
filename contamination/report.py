"""Audit reports: audit.json (machine-readable), audit.md, and audit.html (one self-contained page:
no CDN, inline CSS/JS/SVG). Every text from the data is escaped: HTML in audit.html and audit.md,
Markdown in audit.md, and control characters are shown as ``\\u0000`` escapes in both.

audit.json schema (``schema_version`` 2)::

    {"schema_version": 2,
     "benchmarks": [{"name", "n", "examples", "dirty", "clean", "pct_dirty", "short_examples",
                     "files": {"clean", "clean_ids", "dirty_ids"},       # relative to the report
                     "dirty_seen",                                      # auditing a training mix: sum of epochs_seen
                     "dirty_examples": [{"id", "text", "ngram", "example_span": [start, end],
                                         "train_doc", "train_snippet", "train_span": [start, end],
                                         "whole": bool,                  # matched as a whole short example
                                         "epochs_seen"}]}],              # auditing a training mix
     "warnings": [{"kind", "benchmark"?, "count"?, "message"}],
     "table_c1": [{"benchmark", "metric", "primary", "binary", "count_all", "score_all",
                   "count_dirty", "score_dirty", "count_clean", "score_clean", "pct_clean",
                   "rel_diff_pct", "interval": [lo, hi], "interval_method", "flagged"}],
     "scores_files": [...],
     "training_side": {"documents_in", "documents_cut", "documents_dropped", "collisions",
                       "ngrams_ignored_as_boilerplate", "chars_in", "chars_removed"},
     "config": {...}}

Spans are character offsets into ``text`` / ``train_snippet``. Warning kinds: ``no_examples``,
``short_examples``, ``n_below_13``, ``scores_unmatched``.
"""

from __future__ import annotations

import html
import json
import re

import numpy as np
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.htmlkit import Series, hbar_chart, page
from siftmix.pipeline.core.text import ngram_hashes, words

from .appendix_c import TRAIN_N, Benchmark, NgramIndex

# C0 and C1 control characters and DEL; tab, line feed and carriage return stay in HTML (the
# page shows them as white space), Markdown shows them escaped too (they would end a table row)
_CTRL_HTML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CTRL_MD = re.compile("[\x00-\x1f\x7f-\x9f]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


def _u(m: re.Match) -> str:
    return f"\\u{ord(m.group()):04x}"


def esc(x) -> str:
    """HTML-escaped text with control characters shown as ``\\u0000`` escapes."""
    return html.escape(_CTRL_HTML.sub(_u, str(x)))


def md(x) -> str:
    """Text for audit.md: control characters as ``\\u0000``, HTML escaped (&, <, >), Markdown
    punctuation backslash-escaped; renders as the text itself, never as markup."""
    t = _MD_SPECIAL.sub(r"\\\1", html.escape(str(x), quote=False))
    return _CTRL_MD.sub(_u, t)  # after: "\\u" is no Markdown escape, it shows as it is


def example_span(text: str, size: int, h: int) -> tuple[list[int], str]:
    w = words([text])
    hs, first = ngram_hashes(w, size)
    hit = np.nonzero(hs == np.uint64(h))[0]
    if not len(hit):
        return [0, 0], ""
    f = int(first[hit[0]])
    s, e = int(w.start[f]), int(w.end[f + size - 1])
    return [s, e], text[s:e]


def audit_warnings(benchmarks: list[Benchmark], index: NgramIndex, short_mode: str) -> list[dict]:
    """Where the audit cannot see: a benchmark with no examples, examples shorter than N (no
    N-gram: never dirty by the paper's rule), an N below 13."""
    out = []
    for b in benchmarks:
        n, total, short = index.n[b.name], len(b.texts), index.short.get(b.name, 0)
        if total == 0:
            out.append({"kind": "no_examples", "benchmark": b.name, "count": 0,
                        "message": f"{b.name}: 0 examples; nothing was audited (check the file and decontam.fields)"})
            continue
        if short:
            how = ("reported dirty when their whole word sequence occurs in the training data "
                   "(decontam.short_examples: whole)" if short_mode == "whole" else
                   "set decontam.short_examples: whole to report them when their whole word sequence "
                   "occurs in the training data")
            out.append({"kind": "short_examples", "benchmark": b.name, "count": short,
                        "message": f"{b.name}: {short} of {total} examples are shorter than N = {n} words and "
                                   f"cannot be dirty by the paper's rule; {how}"})
        if n < TRAIN_N:
            out.append({"kind": "n_below_13", "benchmark": b.name, "count": n,
                        "message": f"{b.name}: N = {n}, below 13 (its examples are short: the 5th percentile of "
                                   f"their length); an {n}-word match is weaker evidence than a 13-word one"})
    return out


def build_audit(benchmarks: list[Benchmark], index: NgramIndex, dirty: dict[str, dict], training: dict, config: dict,
                warnings: list[dict] | None = None, table: list[dict] | None = None, files: dict | None = None,
                scores_files: list[dict] | None = None) -> dict:
    out = []
    for bi, b in enumerate(benchmarks):
        n = index.n[b.name]
        exs = []
        seen = 0
        for ex in sorted(int(k.split(":")[1]) for k in dirty if int(k.split(":")[0]) == bi):
            d = dirty[f"{bi}:{ex}"]
            size = d.get("size", n)
            span, gram = example_span(b.texts[ex], size, d["hash"])
            e = {"id": b.ids[ex], "text": b.texts[ex], "ngram": gram, "example_span": span,
                 "train_doc": d["doc"], "train_snippet": d["snippet"], "train_span": d["span"], "whole": size < n}
            if "epochs" in d:
                e["epochs_seen"] = len(d["epochs"])
                seen += len(d["epochs"])
            exs.append(e)
        total = len(b.texts)
        row = {"name": b.name, "n": n, "examples": total, "dirty": len(exs), "clean": total - len(exs),
               "pct_dirty": round(100.0 * len(exs) / total, 3) if total else 0.0,
               "short_examples": index.short.get(b.name, 0)}
        if files and b.name in files:
            row["files"] = files[b.name]
        if any("epochs" in dirty[k] for k in dirty):
            row["dirty_seen"] = seen
        out.append({**row, "dirty_examples": exs})
    return {"schema_version": 2, "benchmarks": out, "warnings": warnings or [], "table_c1": table or [],
            "scores_files": scores_files or [], "training_side": training, "config": config}


def _f(v, fmt="{:.4f}") -> str:
    return "—" if v is None else fmt.format(v)


def _interval(r: dict) -> str:
    return "—" if not r["interval"] else f"[{r['interval'][0]:.4f}, {r['interval'][1]:.4f}]"


C1_HEAD = ["benchmark", "metric", "count", "score (all)", "dirty count", "dirty score", "clean count",
           "clean score", "% clean", "clean vs all", "95% interval of clean", "flagged"]


def _c1_cells(r: dict) -> list[str]:
    return [r["benchmark"], r["metric"], f"{r['count_all']}", _f(r["score_all"]), f"{r['count_dirty']}",
            _f(r["score_dirty"]), f"{r['count_clean']}", _f(r["score_clean"]), _f(r["pct_clean"], "{:.1f}%"),
            _f(r["rel_diff_pct"], "{:+.2f}%"), _interval(r) + (f" ({r['interval_method']})" if r["interval"] else ""),
            "yes" if r["flagged"] else ""]


def c1_markdown(rows: list[dict]) -> list[str]:
    """Table C.1 as Markdown lines (the README shows the demo's)."""
    lines = ["| " + " | ".join(C1_HEAD) + " |", "|---|---|" + "---:|" * (len(C1_HEAD) - 2)]
    for r in rows:
        cells = _c1_cells(r)  # names from the data are escaped; the numbers are siftmix's own
        lines.append("| " + " | ".join([md(cells[0]), md(cells[1]), *cells[2:]]) + " |")
    return lines


def to_markdown(audit: dict) -> str:
    lines = ["# Benchmark contamination audit (GPT-3 appendix C)", "",
             "| benchmark | N | examples | dirty | clean | % dirty |", "|---|---:|---:|---:|---:|---:|"]
    for b in audit["benchmarks"]:
        lines.append(f"| {md(b['name'])} | {b['n']} | {b['examples']} | {b['dirty']} | {b['clean']} | {b['pct_dirty']:.2f} |")
    if audit.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {md(w['message'])}" for w in audit["warnings"]]
    if audit.get("table_c1"):
        lines += ["", "## Clean vs all (Table C.1)", "",
                  "Flagged: the score on all examples lies outside the 95% sampling interval of the clean score.", ""]
        lines += c1_markdown(audit["table_c1"])
    t = audit["training_side"]
    lines += ["", "## Training side", ""] + [f"- {md(k.replace('_', ' '))}: {md(v)}" for k, v in t.items()]
    for b in audit["benchmarks"]:
        if not b["dirty_examples"]:
            continue
        lines += ["", f"## {md(b['name'])}: dirty examples", ""]
        for e in b["dirty_examples"][:50]:
            seen = f" (seen in {e['epochs_seen']} epochs)" if "epochs_seen" in e else ""
            lines.append(f"- {md(e['id'])} matches training document {md(e['train_doc'])} on “{md(e['ngram'])}”{seen}")
        if len(b["dirty_examples"]) > 50:
            lines.append(f"- ... and {len(b['dirty_examples']) - 50} more (audit.json has them all)")
    return "\n".join(lines) + "\n"


def _marked(text: str, span: list[int]) -> str:
    s, e = span
    return esc(text[:s]) + "<mark>" + esc(text[s:e]) + "</mark>" + esc(text[e:])


_CSS = """mark{background:#ffd54f}.ex{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.5em 0 1.5em}
.ex div{background:#fafafa;border:1px solid #e5e5e5;padding:.5em;white-space:pre-wrap;font-size:13px}
#warnings li{color:#8a4b00}tr.flagged td{background:#fdecea}"""


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
    def shown(name):  # hbar_chart escapes HTML; control characters are shown as escapes first
        return _CTRL_HTML.sub(_u, name)

    return hbar_chart([shown(b["name"]) for b in bs], [Series("% dirty", [b["pct_dirty"] for b in bs],
                      [shown(f'{b["name"]}: {b["pct_dirty"]:.2f}% dirty') for b in bs])],
                      label="% dirty per benchmark", svg_id=svg_id)


def c1_rows_html(rows: list[dict]) -> str:
    out = []
    for r in rows:
        cells = _c1_cells(r)
        nums = [None, None, r["count_all"], r["score_all"], r["count_dirty"], r["score_dirty"], r["count_clean"],
                r["score_clean"], r["pct_clean"], r["rel_diff_pct"], None, None]
        tds = "".join(f'<td{"" if v is None else f" data-v={chr(34)}{v}{chr(34)}"}>{esc(c)}</td>' for c, v in zip(cells, nums))
        out.append(f'<tr class="c1-row{" flagged" if r["flagged"] else ""}">{tds}</tr>')
    return "".join(out)


def figure_4_2(rows: list[dict], svg_id: str = "figure-4-2", width: int = 640, height: int = 360) -> str:
    """Figure 4.2: x = % clean, y = relative difference clean vs all (%), one point per benchmark
    (its primary metric); flagged benchmarks in red, with a ring."""
    pts = [r for r in rows if r["primary"] and r["pct_clean"] is not None and r["rel_diff_pct"] is not None]
    if not pts:
        return ""
    left, right, top, bottom = 60, 20, 20, 50
    pw, ph = width - left - right, height - top - bottom
    ymax = max(5.0, max(abs(r["rel_diff_pct"]) for r in pts) * 1.15)

    def x(v):
        return left + pw * v / 100.0

    def y(v):
        return top + ph * (ymax - v) / (2 * ymax)

    parts = [f'<svg id="{esc(svg_id)}" width="{width}" height="{height}" role="img" '
             f'aria-label="relative difference clean vs all against % clean">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
             f'<line x1="{left}" x2="{left + pw}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#888" stroke-dasharray="4 3"/>']
    for t in (0, 25, 50, 75, 100):
        parts.append(f'<text x="{x(t):.1f}" y="{top + ph + 15}" text-anchor="middle">{t}%</text>')
    for t in (-ymax, -ymax / 2, 0, ymax / 2, ymax):
        parts.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:+.1f}%</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">% of examples clean</text>')
    parts.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'clean vs all (relative difference)</text>')
    for r in pts:
        cx, cy = x(r["pct_clean"]), y(r["rel_diff_pct"])
        tip = (f'{r["benchmark"]} ({r["metric"]}): {r["pct_clean"]:.1f}% clean, clean vs all {r["rel_diff_pct"]:+.2f}%'
               + (", flagged: outside the sampling error" if r["flagged"] else ""))
        color = "#d32f2f" if r["flagged"] else "#1976d2"
        ring = f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="none" stroke="{color}"/>' if r["flagged"] else ""
        parts.append(f'<g class="c1-point{" flagged" if r["flagged"] else ""}" data-benchmark="{esc(r["benchmark"])}">'
                     f'{ring}<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}"><title>{esc(tip)}</title></circle>'
                     + (f'<text x="{cx - 8:.1f}" y="{cy - 7:.1f}" text-anchor="end">' if cx > left + 0.7 * pw
                        else f'<text x="{cx + 8:.1f}" y="{cy - 7:.1f}">') + f'{esc(r["benchmark"])}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(audit: dict) -> str:
    bs = audit["benchmarks"]
    details = []
    for b in bs:
        if not b["dirty_examples"]:
            continue
        items = "".join(
            f'<p><b>{esc(e["id"])}</b> — training document <code>{esc(e["train_doc"])}</code>'
            + (f' · seen in {e["epochs_seen"]} epochs' if "epochs_seen" in e else "") + "</p>"
            f'<div class="ex"><div>{_marked(e["text"], e["example_span"])}</div>'
            f'<div>{_marked(e["train_snippet"], e["train_span"])}</div></div>'
            for e in b["dirty_examples"][:200])
        opened = " open" if not details else ""
        details.append(f'<details{opened}><summary>{esc(b["name"])}: {b["dirty"]} dirty examples</summary>{items}</details>')
    t = audit["training_side"]
    training = "".join(f"<li>{esc(k.replace('_', ' '))}: {esc(v)}</li>" for k, v in t.items())
    warnings = "".join(f'<li class="warning">{esc(w["message"])}</li>' for w in audit.get("warnings", []))
    c1 = audit.get("table_c1") or []
    c1_html = ""
    if c1:
        c1_html = ("<h2>Clean vs all (Table C.1)</h2><p>Scores of an evaluation on all, dirty and clean examples. "
                   "Flagged: the score on all examples lies outside the 95% sampling interval of the clean score "
                   "(Wilson for 0/1 metrics, a seeded bootstrap otherwise).</p>"
                   f'<table id="table-c1" class="sortable"><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in C1_HEAD)}'
                   f'</tr></thead><tbody>{c1_rows_html(c1)}</tbody></table>'
                   "<h3>Figure 4.2: clean vs all against % clean (one point per benchmark)</h3>" + figure_4_2(c1))
    return page("siftmix contamination audit",
                '<h1>Benchmark contamination audit</h1>'
                '<p>GPT-3 appendix C: an example is dirty if one of its N-grams occurs in the training data.</p>'
                + (f'<h2>Warnings</h2><ul id="warnings">{warnings}</ul>' if warnings else "")
                + f'<table id="benchmarks" class="sortable">{BENCHMARK_HEAD}<tbody>{benchmark_rows(bs)}</tbody></table>'
                f'{dirty_chart(bs)}{c1_html}<h2>Training side</h2><ul>{training}</ul><h2>Dirty examples</h2>{"".join(details)}',
                css=_CSS)


def write_reports(audit: dict, folder: str) -> None:
    storage.write_text(storage.join(folder, "audit.json"), json.dumps(audit, indent=1, ensure_ascii=False))
    storage.write_text(storage.join(folder, "audit.md"), to_markdown(audit))
    storage.write_text(storage.join(folder, "audit.html"), to_html(audit))
