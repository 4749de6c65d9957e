"""The ingest stage: every input file through the readers and the normaliser, one Ray task each."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import InputError, StageError
from siftmix.pipeline.core.schema import DOC_SCHEMA, RAW_SCHEMA
from siftmix.pipeline.core.shards import (
    PARQUET_OPTIONS,
    Processed,
    ShardResult,
    ShardWorker,
    rejected_rows,
    run_shard,
    summarize,
)
from siftmix.pipeline.core.stage import Stage, StageContext, reasons_text

from .config import IngestConfig, SourceConfig
from .normalize import IngestTask, iter_columns, normalize_batch, raw_table
from .readers import SUFFIXES, ReadFailure, source_files


def plan(cfg) -> list[IngestTask]:
    """One task per input file of every source (a source without files is a one-line error).
    A listed file that does not exist stops the stage (``on_missing: fail``) or becomes a task
    whose one record is rejected as ``missing_file`` (``on_missing: reject``)."""
    tasks = []
    for src in cfg.sources:
        files = source_files(src)
        if not files:
            raise StageError(f"source {src.name!r}: no input files of a known format in {', '.join(src.paths)}")
        infos = storage.stat_many([f[0] for f in files])
        for i, ((path, rel, fmt), info) in enumerate(zip(files, infos)):
            if info is None and src.on_missing == "fail":
                raise InputError(f"source {src.name!r}: {path}: no such file (set on_missing: reject to count it "
                                 "as a rejected row and go on)")
            tasks.append(IngestTask(path=path, rel=rel, fmt=fmt, source=src.name, index=i,
                                    size=info.size if info else 0, version=info.version if info else None))
    return tasks


def _missing_file(task: IngestTask) -> pa.Table:
    """The one rejected record of a listed file that does not exist."""
    from .readers import derived_id

    meta = json.dumps({"file": task.rel, "error": f"no such file: {task.path}"}, ensure_ascii=False)
    return pa.table({"id": [derived_id(task.source, task.rel, "missing")], "source": [task.source], "text": [None],
                     "url": [None], "meta": [meta], "error": ["missing_file"]}, schema=RAW_SCHEMA)


class IngestWorker(ShardWorker):
    """Reads one input file in batches of raw records and normalises them; a file that cannot
    be read at all stops the stage with one line naming the file and the record."""

    single_file = False      # shards roll over past ingest.shard_max_bytes: <source>-<file>-<part>
    count_bytes_in = False   # bytes in: the input file's size

    def __init__(self, sources: dict[str, SourceConfig], cfg: IngestConfig):
        self.sources, self.cfg = sources, cfg
        self.max_bytes = cfg.shard_max_bytes

    def output_schema(self, task: IngestTask) -> pa.Schema:
        return DOC_SCHEMA

    def file_name(self, task: IngestTask) -> str:
        return task.rel

    def batches(self, task: IngestTask) -> Iterator[pa.Table]:
        n = 0
        if task.version is None:
            yield _missing_file(task)
            return
        try:
            for records in iter_columns(task, self.sources[task.source], self.cfg):
                batch = raw_table(records, task.source, self.cfg.on_bad_encoding)
                n += len(records)
                yield batch
        except InputError:
            raise
        except Exception as err:  # the disk failed, or a bug: one line naming file and record
            if isinstance(err, ReadFailure):
                n, err = err.records, err.cause
            if isinstance(err, OSError):
                what = f"{err.strerror or err}" + (f": {err.filename}" if getattr(err, "filename", None) else "")
            else:
                what = f"{type(err).__name__}: {err}"
            raise InputError(f"{task.path}: after record {n}: {what}") from None

    def open(self, task: IngestTask) -> list:
        return []  # the id hashes of the kept documents, batch by batch

    def process(self, batch: pa.Table, state: list) -> Processed:
        kept, rejected = normalize_batch(batch, self.cfg)
        state.append(id_hashes(kept["id"].to_pylist()))
        return Processed(kept, rejected)

    def side_results(self, state: list) -> dict:
        return {"id_hashes": np.concatenate(state) if state else np.empty(0, np.uint64)}


# --------------------------------------------------------------------------- ids unique per source

def id_hashes(ids: list[str]) -> np.ndarray:
    """xxh64 of each id (uint64): a compact key for finding ids that two files share (here, not
    in core.hashing, whose numba import would cost every ingest worker half a second)."""
    return np.fromiter((xxhash.xxh64_intdigest(i.encode("utf-8", "surrogatepass")) for i in ids),
                       dtype=np.uint64, count=len(ids))


def _drop_ids_task(task: dict) -> dict:
    """Move the documents whose id an earlier file of the source used from this file's data
    shards to a new rejected shard (reason duplicate_id, meta.error naming the first file)."""
    first: dict[str, str] = task["first"]
    drop = pa.array(sorted(first), pa.string())
    moved, shards, chars, nbytes = [], [], 0, 0
    for sh in task["shards"]:
        path = storage.join(task["data_dir"], sh["file"])
        t = storage.read_table(path)
        m = pc.is_in(t["id"], value_set=drop)
        if not pc.any(m).as_py():
            shards.append(sh)
            continue
        gone = t.filter(m)
        chars += pc.sum(pc.utf8_length(gone["text"])).as_py()
        nbytes += pc.sum(pc.binary_length(gone["text"])).as_py()
        metas = []
        for doc_id, meta in zip(gone["id"].to_pylist(), gone["meta"].to_pylist()):
            d = json.loads(meta) if meta else {}
            d["error"] = f"id {doc_id!r} is used first in file {first[doc_id]}"
            metas.append(json.dumps(d, ensure_ascii=False, separators=(",", ":")))
        gone = gone.set_column(gone.schema.get_field_index("meta"), "meta", pa.array(metas, pa.string()))
        moved.append(rejected_rows(gone, ["duplicate_id"] * gone.num_rows, keep_text=task["keep_text"]))
        rest = t.filter(pc.invert(m))
        storage.remove(path)
        if rest.num_rows:
            storage.write_table(rest, path, **PARQUET_OPTIONS)
            shards.append({"file": sh["file"], "rows": rest.num_rows})
    table = pa.concat_tables(moved)
    name = f"{task['prefix']}-{task['part']:04d}.parquet"
    storage.write_table(table, storage.join(task["rejected_dir"], name), **PARQUET_OPTIONS)
    return {"key": task["key"], "moved": table.num_rows, "chars": chars, "bytes": nbytes, "shards": shards,
            "rejected_shard": {"file": name, "rows": table.num_rows}}


def unique_ids(ctx: StageContext, tasks: list[IngestTask], results: list[ShardResult]) -> list[ShardResult]:
    """Ids are unique per source across its files: a document whose id an earlier file of the
    same source (in file order) used is rejected as ``duplicate_id`` (within a file, the
    readers do it). The workers return the kept ids' hashes; files are rewritten only where two
    files share an id, which is rare, and a shared hash is checked against the ids themselves."""
    order = {(t.source, t.rel): t for t in tasks}
    by_source: dict[str, list[ShardResult]] = {}
    for r in results:
        if r.shards:
            by_source.setdefault(r.source, []).append(r)
    hashes = {(r.source, r.file): r.side["id_hashes"] for rs in by_source.values() if len(rs) > 1 for r in rs}
    fixes = []
    for source, rs in by_source.items():
        if len(rs) < 2:
            continue
        rs = sorted(rs, key=lambda r: order[(source, r.file)].index)
        u, counts = np.unique(np.concatenate([hashes[(source, r.file)] for r in rs]), return_counts=True)
        shared = u[counts > 1]
        if not shared.size:
            continue
        seen: dict[str, str] = {}
        for r in rs:
            h = hashes[(source, r.file)]
            hit = np.flatnonzero(np.isin(h, shared))
            if not hit.size:
                continue
            ids = storage.read_tables([ctx.path("data", sh["file"]) for sh in r.shards], ["id"])["id"]
            candidates = ids.take(pa.array(hit)).to_pylist()
            first = {i: seen[i] for i in candidates if i in seen}
            for i in candidates:
                seen.setdefault(i, r.file)
            if first:
                fixes.append((r, first))
    if not fixes:
        return results
    jobs = []
    for r, first in fixes:
        task = order[(r.source, r.file)]
        parts = [int(sh["file"].removesuffix(".parquet").rsplit("-", 1)[1]) for sh in r.rejected_shards]
        jobs.append({"key": [r.source, r.file], "first": first, "shards": list(r.shards), "prefix": task.name,
                     "part": max(parts, default=-1) + 1, "data_dir": ctx.path("data"),
                     "rejected_dir": ctx.path("rejected"), "keep_text": ctx.cfg.ingest.keep_rejected_text})
    done = {tuple(o["key"]): o for o in ctx.map(_drop_ids_task, jobs, label="duplicate ids", unit="files")}
    out = []
    for r in results:
        o = done.get((r.source, r.file))
        if o is None:
            out.append(r)
            continue
        rejected = dict(r.rejected)
        rejected["duplicate_id"] = rejected.get("duplicate_id", 0) + o["moved"]
        out.append(dataclasses.replace(
            r, kept=r.kept - o["moved"], rejected=dict(sorted(rejected.items())), chars_kept=r.chars_kept - o["chars"],
            bytes_kept=r.bytes_kept - o["bytes"], shards=tuple(o["shards"]),
            rejected_shards=(*r.rejected_shards, o["rejected_shard"])))
    return out


def ingest_file(task: IngestTask, src: SourceConfig, cfg: IngestConfig, out_dir: str) -> ShardResult:
    """One input file into ``out_dir/data`` and ``out_dir/rejected``, in this process (no Ray):
    the stage's work for one task. A file that cannot be read raises :class:`InputError`."""
    if not task.size or task.version is None:
        info = storage.stat(task.path)
        task = dataclasses.replace(task, size=info.size if info else 0, version=info.version if info else None)
    return run_shard(IngestWorker({src.name: src}, cfg), task, out_dir)


class IngestStage(Stage):
    name = "ingest"
    folder = "00_ingest"
    config_key = "ingest"
    config_model = IngestConfig
    reads_upstream = False
    help = """Ingest raw files (WET, WARC, JSONL[.gz|.zst], Parquet, .txt folders) into Parquet documents."""

    def check(self, cfg) -> None:
        """The inputs resolve: every source names at least one file of a known format."""
        for src in cfg.sources:
            if not source_files(src):
                what = "a known format (" + ", ".join(SUFFIXES) + ")" if src.format == "auto" else src.format
                raise ValueError(f"source {src.name!r}: no input file of {what} in {', '.join(src.paths)}")

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "ingest", "sources": [s.model_dump() for s in cfg.sources], "ingest": cfg.ingest.model_dump()}

    def input_fingerprint(self, cfg, upstream) -> str:
        tasks = plan(cfg)
        return storage.fingerprint_infos([t.path for t in tasks], [None if t.version is None else
                                         storage.objstore.Info(t.path, t.size, t.version) for t in tasks], missing_ok=True)

    def run(self, ctx: StageContext) -> dict:
        cfg = ctx.cfg
        worker = IngestWorker({s.name: s for s in cfg.sources}, cfg.ingest)
        # biggest files first: better load balance (the output does not depend on the order)
        tasks = sorted(plan(cfg), key=lambda t: -t.size)
        results = sorted(ctx.map_shards(worker, tasks, unit="files"), key=lambda r: (r.source, r.file))
        results = unique_ids(ctx, tasks, results)
        return {"config": {"sources": [s.model_dump() for s in cfg.sources], "ingest": cfg.ingest.model_dump()},
                "counts": summarize(results), "files": [r.to_json() for r in results],
                "ray": {"workers": ctx.workers}}

    def summary(self, manifest: dict, out_dir: str) -> str:
        c = manifest["counts"]
        return (f"ingest: {c['in']} records -> {c['kept']} documents kept, {c['rejected']} rejected "
                f"({reasons_text(c)}); {c['bytes_in'] / 1e6:.1f} MB in {manifest['timings']['wall_s']:.1f}s")


INGEST = IngestStage()
