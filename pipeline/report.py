"""The run report: ``RUN_DIR/report.html``, one self-contained page (inline CSS and SVG, a few
lines of JS, no outside resources) built only from the stage manifests of a run.

Per stage: documents and bytes in / kept / rejected, by reason and by source, wall time and
throughput, a link to its ``_manifest.json``; and the stage's own section from its report hook
(:meth:`Stage.report`: quality score histograms, dedup cluster sizes, % dirty per benchmark, the
mixture as GPT-3's Table 2.2). The stages and their folders come from the registry. Stages that are not
in the run folder are not shown. Every text that comes from the data is escaped.
"""

from __future__ import annotations

import os
import time

from siftmix import __version__

from . import registry
from .core import storage
from .core.errors import ConfigError
from .core.htmlkit import esc, page
from .core.htmlkit import k as _k
from .core.htmlkit import mb as _mb
from .core.htmlkit import n as _n
from .core.htmlkit import pct as _pct
from .core.htmlkit import secs as _secs
from .core.htmlkit import table as _table
from .core.manifest import MANIFEST, read_manifest


def stage_folders() -> list[tuple[str, str]]:
    """The stage folders a report shows, in pipeline order: (folder, stage), from the registry."""
    return [(st.folder, st.name) for st in registry.all_stages()]


REPORT = "report.html"
MAX_REASONS = 20  # reasons listed per stage; the rest are summed in one row

_CSS = """h2{margin-top:2em;border-bottom:1px solid #ddd}table.meta td{text-align:left}
td.reasons{text-align:left;font-size:12px}pre{background:#fafafa;border:1px solid #e5e5e5;padding:.5em}"""


class ReportError(ConfigError):
    """RUN_DIR is not a run folder (missing, or no finished stage): a usage error."""


def stage_manifests(run_dir: str) -> dict[str, dict]:
    """{folder: manifest} of the finished stages in ``run_dir``, in pipeline order."""
    return {f: m for f, _ in stage_folders() if (m := read_manifest(storage.join(run_dir, f))) is not None}


def build_report(run_dir: str | os.PathLike) -> str:
    """Write RUN_DIR/report.html from the stage manifests there; returns its path."""
    run_dir = str(run_dir) if storage.is_url(run_dir) else os.path.abspath(run_dir)
    if not storage.isdir(run_dir):
        raise ReportError(f"{run_dir}: no such run folder")
    manifests = stage_manifests(run_dir)
    if not manifests:
        raise ReportError(f"{run_dir}: no finished stage to report (no {MANIFEST} in "
                          f"{', '.join(f for f, _ in stage_folders())})")
    path = storage.join(run_dir, REPORT)
    if storage.is_url(path):  # one PUT: never half there
        storage.write_text(path, render(run_dir, manifests))
        return path
    tmp = f"{path}.tmp-{os.getpid()}"
    storage.write_text(tmp, render(run_dir, manifests))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- page

def _stage_of(folder: str, m: dict) -> str:
    return m.get("stage") or dict(stage_folders())[folder]


def _bytes_in(m: dict, manifests: dict) -> int | None:
    """Bytes a stage read: its own count, else (mix, audit) what its input stage kept."""
    if "bytes_in" in m.get("counts", {}):
        return m["counts"]["bytes_in"]
    prev = manifests.get({st.name: st.folder for st in registry.STAGES}.get(m.get("input_stage")))
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
    return page(f"siftmix run report: {storage.basename(run_dir)}", "".join(body), css=_CSS)


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


def _earlier_stage(st, manifests: dict) -> str | None:
    """For a manifest that does not name its input: the last stage before it present in the run."""
    return registry.stage_before(st.name, {m.get("stage") for m in manifests.values()}) if st is not None else None


def _section(run_dir: str, folder: str, m: dict, manifests: dict) -> str:
    stage, c = _stage_of(folder, m), m.get("counts", {})
    try:
        st = registry.get(stage)
    except KeyError:  # a folder left by a stage that is no longer registered: counts only
        st = None
    source = m.get("input_stage") or ("the configured sources" if st is not None and not st.reads_upstream
                                      else _earlier_stage(st, manifests))
    parts = [f'<section id="{folder}"><h2>{esc(folder)}: {esc(stage)}</h2>',
             f'<p>wall time {_secs(_wall(m))}, throughput {_speed(m, manifests)}'
             + (f" · input: {esc(source)}" if source else "") + f' · <a href="{folder}/{MANIFEST}">{MANIFEST}</a></p>']
    if "kept" in c:  # mix counts tokens; its table is Table 2.2
        parts += [_reasons_table(stage, c), _sources_table(stage, c)]
    if st is not None:
        parts.append(st.report(run_dir, folder, m))
    return "".join(parts) + "</section>"
