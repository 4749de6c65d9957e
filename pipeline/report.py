"""The run report: ``RUN_DIR/report.html``, one self-contained page (inline CSS and SVG, a few
lines of JS, no outside resources) built only from the stage manifests of a run.

Per stage: documents and bytes in / kept / rejected, by reason and by source, wall time and
throughput, a link to its ``_manifest.json``; and the stage's plot: quality score histograms
(kept vs rejected), dedup cluster sizes, % dirty per benchmark (with a link to audit.html), and
the mixture as GPT-3's Table 2.2 (target vs realized token shares, epochs). Stages that are not
in the run folder are not shown. Every text that comes from the data is escaped.
"""

from __future__ import annotations

import os
import time

from siftmix import __version__

from .config import ConfigError
from .htmlkit import Series, column_chart, esc, hbar_chart, page
from .stage import MANIFEST, read_manifest

#: the stage folders a report shows, in pipeline order: (folder, stage)
STAGE_FOLDERS = (("00_ingest", "ingest"), ("10_quality", "quality"), ("20_dedup", "dedup"),
                 ("30_decontam", "decontam"), ("30_audit", "audit"), ("40_mix", "mix"))
REPORT = "report.html"
MAX_REASONS = 20  # reasons listed per stage; the rest are summed in one row

_CSS = """h2{margin-top:2em;border-bottom:1px solid #ddd}table.meta td{text-align:left}
td.reasons{text-align:left;font-size:12px}pre{background:#fafafa;border:1px solid #e5e5e5;padding:.5em}"""


class ReportError(ConfigError):
    """RUN_DIR is not a run folder (missing, or no finished stage): a usage error."""


def stage_manifests(run_dir: str) -> dict[str, dict]:
    """{folder: manifest} of the finished stages in ``run_dir``, in pipeline order."""
    return {f: m for f, _ in STAGE_FOLDERS if (m := read_manifest(os.path.join(run_dir, f))) is not None}


def build_report(run_dir: str | os.PathLike) -> str:
    """Write RUN_DIR/report.html from the stage manifests there; returns its path."""
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: no such run folder")
    manifests = stage_manifests(run_dir)
    if not manifests:
        raise ReportError(f"{run_dir}: no finished stage to report (no {MANIFEST} in "
                          f"{', '.join(f for f, _ in STAGE_FOLDERS)})")
    path = os.path.join(run_dir, REPORT)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render(run_dir, manifests))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- formatting

def _n(v) -> str:
    return "—" if v is None else f"{v:,}"


def _mb(b) -> str:
    return "—" if b is None else f"{b / 1e6:,.2f} MB"


def _pct(a, b) -> str:
    return f"{100 * a / b:.1f}%" if b else "—"


def _secs(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


def _k(key: str) -> str:
    """The ``data-k`` attribute that names a number on the page (tests read the DOM by it)."""
    return f' data-k="{esc(key)}"'


def _table(head: list[str], rows: list[str], attrs: str = "") -> str:
    return (f'<table{attrs}><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


# --------------------------------------------------------------------------- page

def _stage_of(folder: str, m: dict) -> str:
    return m.get("stage") or dict(STAGE_FOLDERS)[folder]


def _bytes_in(m: dict, manifests: dict) -> int | None:
    """Bytes a stage read: its own count, else (mix, audit) what its input stage kept."""
    if "bytes_in" in m.get("counts", {}):
        return m["counts"]["bytes_in"]
    prev = manifests.get({s: f for f, s in STAGE_FOLDERS if s != "audit"}.get(m.get("input_stage")))
    return prev.get("counts", {}).get("bytes_kept") if prev else None


def _wall(m: dict) -> float:
    return float(m.get("timings", {}).get("wall_s", 0.0))


def _speed(m: dict, manifests: dict) -> str:
    b, wall = _bytes_in(m, manifests), _wall(m)
    return f"{b / 1e6 / wall:,.2f} MB/s" if b is not None and wall > 0 else "—"


def render(run_dir: str, manifests: dict[str, dict]) -> str:
    total_wall = sum(_wall(m) for m in manifests.values())
    versions = sorted({v for m in manifests.values() if (v := m.get("versions", {}).get("siftmix"))})
    finished = max((m.get("timings", {}).get("finished", 0) for m in manifests.values()), default=0)
    meta = [("run dir", run_dir),
            ("stages", ", ".join(_stage_of(f, m) for f, m in manifests.items())),
            ("siftmix version", f"{', '.join(versions) or 'unknown'} (report by {__version__})"),
            ("total wall time", f"{_secs(total_wall)} (sum over stages)"),
            ("last stage finished", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(finished)) if finished else "—")]
    header = ('<h1>siftmix run report</h1><table class="meta"><tbody>'
              + "".join(f'<tr><th>{esc(k)}</th><td{_k(k.replace(" ", "_"))}>{esc(v)}</td></tr>' for k, v in meta)
              + "</tbody></table>")
    body = [header, "<h2>Stages</h2>", _overview(manifests)]
    body += [_section(run_dir, f, m, manifests) for f, m in manifests.items()]
    return page(f"siftmix run report: {os.path.basename(run_dir)}", "".join(body), css=_CSS)


def _overview(manifests: dict) -> str:
    rows = []
    for folder, m in manifests.items():
        stage, c, h = _stage_of(folder, m), m.get("counts", {}), str(m.get("config_hash", ""))
        rows.append(
            f'<tr><td><a href="#{folder}">{esc(stage)}</a></td><td{_k(stage + ".in")}>{_n(c.get("in"))}</td>'
            f'<td{_k(stage + ".kept")}>{_n(c.get("kept"))}</td><td{_k(stage + ".rejected")}>{_n(c.get("rejected"))}</td>'
            f'<td>{_mb(_bytes_in(m, manifests))}</td><td>{_mb(c.get("bytes_kept"))}</td>'
            f'<td{_k(stage + ".wall_s")}>{_secs(_wall(m))}</td><td>{_speed(m, manifests)}</td>'
            f'<td title="{esc(h)}"><code>{esc(h[:12])}</code></td>'
            f'<td><a href="{folder}/{MANIFEST}">{MANIFEST}</a></td></tr>')
    return _table(["stage", "documents in", "kept", "rejected", "bytes in", "bytes kept", "wall time",
                   "throughput", "config hash", "manifest"], rows, ' id="stages"')


def _reasons_table(stage: str, c: dict) -> str:
    reasons = sorted((c.get("rejected_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
    if not reasons:
        return ""
    rows = [f'<tr><td>{esc(r)}</td><td{_k(f"{stage}.reason.{r}")}>{v:,}</td><td>{_pct(v, c.get("in"))}</td></tr>'
            for r, v in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        rest = reasons[MAX_REASONS:]
        rows.append(f"<tr><td>{len(rest):,} more reasons</td><td>{sum(v for _, v in rest):,}</td>"
                    f'<td>{_pct(sum(v for _, v in rest), c.get("in"))}</td></tr>')
    return "<h3>Rejected by reason</h3>" + _table(["reason", "documents", "% of in"], rows, ' class="sortable"')


def _sources_table(stage: str, c: dict) -> str:
    by = c.get("by_source") or {}
    if not by:
        return ""
    rows = []
    for src, s in by.items():
        rs = sorted((s.get("rejected_by_reason") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        reasons = ", ".join(f"{r} {v:,}" for r, v in rs[:5]) + (f", … ({len(rs) - 5} more)" if len(rs) > 5 else "")
        rows.append(f'<tr><td>{esc(src)}</td><td{_k(f"{stage}.in.{src}")}>{_n(s.get("in"))}</td>'
                    f'<td{_k(f"{stage}.kept.{src}")}>{_n(s.get("kept"))}</td><td>{_n(s.get("rejected"))}</td>'
                    f'<td>{_pct(s.get("kept", 0), s.get("in"))}</td><td class="reasons">{esc(reasons)}</td>'
                    f'<td>{_mb(s.get("bytes_in"))}</td><td>{_mb(s.get("bytes_kept"))}</td><td>{_n(s.get("files"))}</td></tr>')
    return "<h3>By source</h3>" + _table(["source", "in", "kept", "rejected", "% kept", "rejected by reason",
                                          "bytes in", "bytes kept", "files"], rows, ' class="sortable"')


def _section(run_dir: str, folder: str, m: dict, manifests: dict) -> str:
    stage, c = _stage_of(folder, m), m.get("counts", {})
    extra = {"quality": _quality, "dedup": _dedup, "decontam": _decontam, "audit": _decontam, "mix": _mix}.get(stage)
    source = m.get("input_stage") or {"ingest": "the configured sources", "quality": "ingest"}.get(stage)
    parts = [f'<section id="{folder}"><h2>{esc(folder)}: {esc(stage)}</h2>',
             f'<p>wall time {_secs(_wall(m))}, throughput {_speed(m, manifests)}'
             + (f" · input: {esc(source)}" if source else "") + f' · <a href="{folder}/{MANIFEST}">{MANIFEST}</a></p>']
    if stage != "mix":  # mix counts tokens; its table is Table 2.2
        parts += [_reasons_table(stage, c), _sources_table(stage, c)]
    if extra:
        parts.append(extra(run_dir, folder, m))
    return "".join(parts) + "</section>"


# --------------------------------------------------------------------------- stage plots

def _quality(run_dir: str, folder: str, m: dict) -> str:
    out = []
    for scorer, e in (m.get("eval") or {}).items():
        out.append(f"<p>held-out {esc(scorer)}: ROC AUC {e['roc_auc']:.3f}, accuracy {e['accuracy']:.3f}</p>")
    hist = dict(m.get("score_histograms") or {})
    edges = hist.pop("edges", [])
    labels = [f"{e:.2f}" for e in edges[:-1]]
    for src, h in hist.items():
        series = []
        for what, color in (("kept", "#81c784"), ("rejected", "#e57373")):
            counts, total = h[what], sum(h[what])
            tips = [f"{what} {edges[i]:.2f}–{edges[i + 1]:.2f}: {v:,} documents ({_pct(v, total)} of {what})"
                    for i, v in enumerate(counts)]
            series.append(Series(f"{what} ({total:,})", [100 * v / total if total else 0.0 for v in counts], tips, color))
        out.append(f"<h3>Quality scores: {esc(src)}</h3>"
                   + column_chart(labels, series, x_label="quality score", y_label="% of kept / rejected",
                                  fmt=lambda v: f"{v:.0f}%", label_pos=0.0, svg_id=f"quality-hist-{src}"))
    return "".join(out)


def _dedup(run_dir: str, folder: str, m: dict) -> str:
    cl = m.get("clusters")
    if not cl:
        return ""
    sizes = sorted((int(k), v) for k, v in (cl.get("size_histogram") or {}).items())
    summary = _table(["clusters", "documents in clusters", "exact-duplicate clusters", "largest cluster"], [
        f'<tr><td{_k("dedup.n_clusters")}>{_n(cl.get("n_clusters"))}</td>'
        f'<td{_k("dedup.documents_in_clusters")}>{_n(cl.get("documents_in_clusters"))}</td>'
        f'<td{_k("dedup.exact_clusters")}>{_n(cl.get("exact_clusters"))}</td>'
        f'<td>{_n(sizes[-1][0] if sizes else None)}</td></tr>'])
    if not sizes:
        return "<h3>Duplicate clusters</h3>" + summary
    chart = column_chart([str(k) for k, _ in sizes],
                         [Series("clusters", [v for _, v in sizes], [f"{v:,} clusters of {k} documents" for k, v in sizes])],
                         x_label="cluster size (documents)", y_label="clusters", svg_id="dedup-sizes")
    return "<h3>Duplicate clusters</h3>" + summary + chart


def _decontam(run_dir: str, folder: str, m: dict) -> str:
    from siftmix.contamination.report import BENCHMARK_HEAD, benchmark_rows, dirty_chart

    stage, bs = _stage_of(folder, m), m.get("benchmarks") or []
    audit = os.path.join(folder, "audit.html")
    link = f' · <a href="{audit}">audit.html</a> (every dirty example)' if os.path.exists(os.path.join(run_dir, audit)) else ""
    training = "".join(f"<li>{esc(k.replace('_', ' '))}: {esc(f'{v:,}' if isinstance(v, int) else v)}</li>"
                       for k, v in (m.get("training_side") or {}).items())
    return (f"<h3>Contamination per benchmark</h3><p>GPT-3 appendix C: an example is dirty if one of its "
            f"N-grams occurs in the training data{link}</p>"
            f'<table class="sortable">{BENCHMARK_HEAD}<tbody>{benchmark_rows(bs, key=stage)}</tbody></table>'
            + dirty_chart(bs, svg_id=f"{stage}-dirty") + (f"<h3>Training side</h3><ul>{training}</ul>" if training else ""))


def _mix(run_dir: str, folder: str, m: dict) -> str:
    c = m.get("counts", {})
    by = c.get("by_source") or {}
    rows = [f'<tr><td>{esc(s)}</td><td{_k(f"mix.available.{s}")}>{_n(v.get("tokens_available"))}</td>'
            f'<td{_k(f"mix.target.{s}")}>{v.get("target_weight", 0):.1%}</td><td{_k(f"mix.share.{s}")}>{v.get("share", 0):.2%}</td>'
            f'<td>{v.get("planned_epochs", 0):.2f}</td><td{_k(f"mix.epochs.{s}")}>{v.get("epochs", 0):.2f}</td>'
            f'<td{_k(f"mix.tokens.{s}")}>{_n(v.get("tokens"))}</td><td>{_n(v.get("documents"))}</td></tr>'
            for s, v in by.items()]
    rows.append(f'<tr><th>total</th><th>{_n(c.get("tokens_available"))}</th><th>{sum(v.get("target_weight", 0) for v in by.values()):.1%}</th>'
                f'<th>{sum(v.get("share", 0) for v in by.values()):.2%}</th><th></th><th></th>'
                f'<th{_k("mix.tokens")}>{_n(c.get("tokens"))}</th><th>{_n(c.get("rows"))}</th></tr>')
    table = _table(["dataset", "tokens available", "target weight", "realized weight", "planned epochs",
                    "realized epochs", "tokens in mix", "rows"], rows, ' id="table-2-2"')
    names = list(by)
    chart = hbar_chart(names, [Series("target", [100 * by[s].get("target_weight", 0) for s in names]),
                               Series("realized", [100 * by[s].get("share", 0) for s in names])],
                       fmt=lambda v: f"{v:.2f}%", label="target vs realized token share", svg_id="mix-shares")
    printed = f"<details><summary>as printed by the run</summary><pre>{esc(m['table_2_2'])}</pre></details>" if m.get("table_2_2") else ""
    shards = m.get("shards")
    return (f"<h3>Mixture (GPT-3 Table 2.2)</h3><p>{_n(c.get('tokens'))} tokens"
            + (f" in {len(shards):,} shards" if shards is not None else "")
            + f"; {_n(c.get('in'))} pieces in. Weights are shares of training tokens; epochs = tokens in mix / tokens available.</p>"
            + table + chart + printed)
