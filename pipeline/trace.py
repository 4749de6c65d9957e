"""``siftmix trace RUN_DIR ID``: what happened to one document at each stage of a run.

It reads the committed stage outputs through :mod:`.core.storage` (a run dir on disk or on
object storage) and reads as little as it can:

- **ingest**: the document's shard is not known yet. Every ingest shard's Parquet footer is read
  (one small ranged read each); only the row groups whose ``id`` statistics (min, max) admit the
  id are read, and of them only the ``id`` column until the row is found.
- **every later shard stage**: a document keeps its shard name from ingest to decontam, and each
  manifest's per-file entries name the data and rejected shards written for each input shard,
  so the trace reads those two shards only (same row-group pruning).
- **mix**: the stage's ``locate`` hook (:meth:`siftmix.mixing.stage.MixStage.locate`) computes
  pieces, repeats and shuffle keys from the plan in the manifest and reads the one shard whose
  key range holds each appearance.

Per stage the result says: kept; rejected with its reason and score (``duplicate_of`` names the
kept document); cut into pieces (which ones, and which parts were removed, why); or not reached.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from . import registry
from .core import storage
from .core.errors import InputError
from .core.manifest import read_manifest, stage_path

_SHOWN = ("quality_score", "dup_cluster", "url", "meta", "score", "reason")


def _row_groups(path: str, doc_id: str) -> tuple[object, list[tuple[int, int]]]:
    """The Parquet file and the (row group, first row) pairs whose id statistics admit ``doc_id``."""
    pf = storage.parquet_file(path)
    md = pf.metadata
    col = pf.schema_arrow.get_field_index("id")
    out, start = [], 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        st = rg.column(col).statistics if col >= 0 else None
        # ids from doc_id to doc_id#<anything> (its pieces) may be in this row group
        if st is None or not st.has_min_max or (st.min <= doc_id + "#\U0010ffff" and st.max >= doc_id):
            out.append((g, start))
        start += rg.num_rows
    return pf, out


def find_rows(path: str, doc_id: str) -> list[dict]:
    """Rows of one shard whose id is ``doc_id`` or one of its pieces (``doc_id#...``), with their
    row number in the shard; the text is replaced by its length (and kept as ``_text``)."""
    pf, groups = _row_groups(path, doc_id)
    rows = []
    for g, start in groups:
        ids = pf.read_row_group(g, columns=["id"])["id"]
        hit = pc.or_(pc.equal(ids, doc_id), pc.starts_with(ids, doc_id + "#"))
        idx = pc.indices_nonzero(hit).to_pylist()
        if not idx:
            continue
        t = pf.read_row_group(g).take(pa.array(idx))
        for i, r in zip(idx, t.to_pylist()):
            text = r.pop("text", None)
            rows.append({"id": r["id"], "source": r.get("source"), "row": start + i,
                         **{k: r[k] for k in _SHOWN if r.get(k) is not None},
                         "chars": len(text) if text is not None else None, "_text": text})
    return rows


def _read(stage_dir: str, m: dict, sub: str, names: list[str], doc_id: str) -> list[dict]:
    out = []
    for name in names:
        for r in find_rows(stage_path(stage_dir, m, sub, name), doc_id):
            out.append({**r, "shard": name})
    return out


def _search(job: tuple[str, str, str]) -> list[dict]:
    path, name, doc_id = job
    return [{**r, "shard": name} for r in find_rows(path, doc_id)]


def _cluster(stage_dir: str, m: dict, doc_id: str) -> dict | None:
    """The duplicate cluster the document is in, when the stage lists cluster files
    (``clusters/*.parquet`` in its manifest's outputs: one row per member): its keeper and every
    member with its Jaccard to the keeper and its reason. These files hold only the documents
    in clusters, a small part of the stage's output."""
    files = [o["path"] for o in m.get("outputs", []) if o["path"].startswith("clusters/") and o["path"].endswith(".parquet")]
    if not files:
        return None
    cols = ["cluster", "id", "keeper", "reason", "jaccard"]
    tables = [storage.read_table(stage_path(stage_dir, m, f)) for f in files]
    t = pa.concat_tables([x.select([c for c in cols if c in x.column_names]) for x in tables if "cluster" in x.column_names])
    mine = t.filter(pc.equal(t["id"], doc_id))
    if mine.num_rows == 0:
        return None
    cid = mine["cluster"][0].as_py()
    members = t.filter(pc.equal(t["cluster"], cid)).to_pylist()
    keeper = next((r["id"] for r in members if r.get("keeper")), None)
    return {"cluster": cid, "keeper": keeper, "members": members}


def _entries(m: dict) -> list[dict]:
    return m.get("files") or []


def _describe(kept: list[dict], rejected: list[dict], doc_id: str) -> dict:
    """What one shard stage did to the document, from its rows in the data and rejected shards."""
    if not kept and not rejected:
        return {"status": "not reached"}
    out: dict = {}
    whole_kept = [r for r in kept if r["id"] == doc_id]
    whole_rej = [r for r in rejected if r["id"] == doc_id]
    if whole_kept and not rejected and len(kept) == 1:
        out["status"] = "kept"
    elif whole_rej:
        r = whole_rej[0]
        out.update(status="rejected", reason=r["reason"], score=r.get("score"))
        kind, _, other = r["reason"].partition(":")
        if kind.endswith("duplicate_of") and other:
            out["duplicate_of"] = other
    else:
        out["status"] = "cut" if kept else "removed"
        out["pieces"] = [r["id"] for r in kept]
        out["removed"] = [{"id": r["id"], "reason": r["reason"], "chars": r.get("chars")} for r in rejected]
    out["rows"] = [{k: v for k, v in r.items() if k != "_text"} for r in kept + rejected]
    return out


def trace(run_dir: str, doc_id: str, workers: int = 8) -> dict:
    """The document's path through every finished stage of ``run_dir`` (see the module doc)."""
    stages = [(s, storage.join(run_dir, s.folder)) for s in registry.STAGES]
    found = [(s, d, m) for s, d in stages if (m := read_manifest(d)) is not None]
    if not found:
        raise InputError(f"trace: no finished stage in {run_dir} (no _manifest.json in "
                         f"{', '.join(s.folder for s, _ in stages)})")
    result = {"run_dir": run_dir, "id": doc_id, "stages": []}
    shards: list[str] | None = None  # the document's input shard names for the next stage
    kept_rows: list[dict] = []
    read_count = 0
    for stage, stage_dir, m in found:
        step = {"stage": stage.name, "folder": stage.folder}
        if _entries(m) and shards is None:  # the first shard stage: search every shard
            jobs = [("data", sh["file"]) for e in _entries(m) for sh in e.get("shards", [])]
            jobs += [("rejected", sh["file"]) for e in _entries(m) for sh in e.get("rejected_shards", [])]
            with ThreadPoolExecutor(max(1, workers)) as pool:
                hits = list(pool.map(_search, [(stage_path(stage_dir, m, sub, name), name, doc_id)
                                               for sub, name in jobs]))
            kept = [r for (sub, _), h in zip(jobs, hits) if sub == "data" for r in h]
            rejected = [r for (sub, _), h in zip(jobs, hits) if sub == "rejected" for r in h]
            read_count = len(jobs)
            step["searched_shards"] = len(jobs)
            if not kept and not rejected:
                raise InputError(f"trace: no document with id {doc_id!r} in {stage_dir} "
                                 f"({len(jobs)} shards searched)")
            src = {e["file"]: e for e in _entries(m) for sh in e.get("shards", []) + e.get("rejected_shards", [])
                   if sh["file"] in {r["shard"] for r in kept + rejected}}
            step["input_files"] = sorted(src)
        elif _entries(m):  # later shard stages: the same-named shards, from the manifest
            by_file = {e["file"]: e for e in _entries(m)}
            mine = [by_file[s] for s in (shards or []) if s in by_file]
            data = [sh["file"] for e in mine for sh in e.get("shards", [])]
            rej = [sh["file"] for e in mine for sh in e.get("rejected_shards", [])]
            kept = _read(stage_dir, m, "data", data, doc_id)
            rejected = _read(stage_dir, m, "rejected", rej, doc_id)
            step["shards_read"] = len(data) + len(rej)
            read_count += len(data) + len(rej)
        elif hasattr(stage, "locate"):  # not one shard in, one shard out (mix)
            step["placed"] = stage.locate(stage_dir, m, [
                {"id": r["id"], "source": r["source"], "text": r["_text"]} for r in kept_rows])
            step["status"] = "in the mix" if any(p["repeats"] for p in step["placed"]) else (
                "not in the mix (0 repeats drawn)" if step["placed"] else "not reached")
            result["stages"].append(step)
            continue
        else:
            continue
        step.update(_describe(kept, rejected, doc_id))
        if kept or rejected:
            cl = _cluster(stage_dir, m, doc_id)
            if cl:
                step["cluster"] = cl
        shards = sorted({r["shard"] for r in kept})
        kept_rows = kept
        result["stages"].append(step)
    result["shards_read_before_mix"] = read_count
    return result


def _fmt_score(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def format_text(t: dict) -> str:
    """The trace for a terminal: one block per stage."""
    lines = [f"trace {t['id']} in {t['run_dir']}"]
    for s in t["stages"]:
        head = f"{s['stage']:<10} {s['status']}"
        if s["status"] == "rejected":
            head += f": {s['reason']}"
            if s.get("score") is not None:
                head += f" (score {_fmt_score(s['score'])})"
            if s.get("duplicate_of"):
                head += f"; a duplicate of {s['duplicate_of']}"
        lines.append(head)
        for r in s.get("rows", []):
            extra = ", ".join(f"{k} {_fmt_score(r[k])}" for k in ("quality_score", "dup_cluster") if r.get(k) is not None)
            lines.append(f"             {r['id']}: {s['folder']}/{'rejected' if 'reason' in r else 'data'}/{r['shard']} "
                         f"row {r['row']}, {r.get('chars')} chars" + (f", {extra}" if extra else "")
                         + (f", {r['reason']}" if "reason" in r and s["status"] != "rejected" else ""))
        if s.get("cluster"):
            c = s["cluster"]
            others = [r for r in c["members"] if r["id"] != t["id"]]
            me = next((r for r in c["members"] if r["id"] == t["id"]), {})
            if me.get("jaccard") is not None:
                lines.append(f"             Jaccard {me['jaccard']:.3f} to the keeper")
            lines.append(f"             duplicate cluster {c['cluster']} ({len(c['members'])} documents), keeper {c['keeper']}: "
                         + "; ".join(f"{r['id']}" + (f" (Jaccard {r['jaccard']:.3f} to the keeper)" if r.get("jaccard") is not None else "")
                                     for r in others))
        if s.get("input_files"):
            lines.append(f"             from input file {', '.join(s['input_files'])} ({s['searched_shards']} shards searched)")
        for p in s.get("placed", []):
            lines.append(f"             piece {p['piece']} ({p['chars']} chars): {p['repeats']} appearance(s)")
            for a in p["appearances"]:
                where = (f"{a['shard']} row {a['row']}" + (f", {a['bin']} tokens [{a['token_offset']}, "
                                                           f"{a['token_offset'] + a['tokens']})" if "bin" in a else "")
                         if a.get("shard") else "not found")
                lines.append(f"               repeat {a['repeat']}: {where}")
    return "\n".join(lines)


def format_json(t: dict) -> str:
    return json.dumps(t, indent=2, default=str)
