"""A persisted n-gram index of a finished stage's documents, and the appendix C audit against it.

``siftmix index build RUN_DIR --stage mix -o INDEX`` (:class:`IndexStage`, run by the runner:
resume, manifest, progress, one-line errors) indexes every n-gram (appendix C words, the hashes
of :mod:`siftmix.pipeline.core.text`, the ones the scan-based audit uses) of the stage's
documents; the training mix counts each document once (its rows of repeat 0). Two passes of
Ray tasks, so that no process holds the whole index:

1. map, one task per shard: the shard's n-grams of each size as records (hash u64, document u32
   local to the shard, character offset u32), sorted, in ``runs/<shard>-n<size>.bin``; the
   shard's documents (row, scan batch, id) in ``docs/<shard>.parquet``;
2. reduce, one task per (size, hash prefix): the slice of every shard's run for that prefix
   (ranged reads), the global document number added, sorted by (hash, document, offset):
   ``n<size>/p<prefix>.hash.npy`` (u64) and ``n<size>/p<prefix>.ref.npy`` (doc u32, offset u32),
   memory-mappable with ``np.load(mmap_mode="r")``. The runs are removed.

The manifest records the n-grams per size, the documents, the bytes per n-gram, the config and
the output fingerprint of the stage it was built from (its input fingerprint: an unchanged stage
is not indexed again).

:class:`IndexAuditStage` (``siftmix audit -b BENCH --index INDEX -o OUT``) runs the benchmark
side of appendix C against the index: each benchmark N-gram's postings come from the hash
partitions, the documents per 13-gram (the >10-document boilerplate count) from the postings,
and each dirty example's training snippet from the one row its document reference names. It
chooses the training document of a dirty example as the scan does (the lowest id among the first
rows holding a matched n-gram in each scan batch of ``batch_rows`` rows), so that on the same
data and batch size the audit equals the scan-based one (tested).
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.config import Strict
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.core.manifest import read_manifest, stage_path
from siftmix.pipeline.core.shards import ShardRef
from siftmix.pipeline.core.stage import Stage, StageContext
from siftmix.pipeline.core.text import ngram_hashes, words

from .appendix_c import TRAIN_N, benchmark_sizes, counts_for
from .config import DecontamConfig
from .stage import DecontamStage, benchmark_side, write_audit

INDEX_VERSION = 2  # 2: docs/<shard>.parquet carries the source
MAX_OFFSET = 2**32 - 1  # character offsets are u32


class StaleIndexError(StageError):
    """The indexed stage changed (or is gone) since the index was built: its texts cannot be read by reference."""
RUN_DTYPE = np.dtype([("h", "<u8"), ("d", "<u4"), ("o", "<u4")])
REF_DTYPE = np.dtype([("d", "<u4"), ("o", "<u4")])


class IndexConfig(Strict):
    """What ``siftmix index build`` indexes and how it lays the index out."""

    sizes: list[int] = Field(default_factory=lambda: list(range(8, 14)),
                             description="n-gram sizes (13 always; the audit needs each benchmark's N, 8-13 by default)")
    partitions: int = Field(16, ge=1, le=4096, description="hash-prefix partitions (a power of two)")
    batch_rows: int = Field(2048, gt=0, description="rows read per batch (the scan batch the audit emulates)")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(s < 1 or s > 64 for s in v):
            raise ValueError("n-gram sizes are 1 to 64")
        return sorted(set(v) | {TRAIN_N})

    @field_validator("partitions")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"partitions must be a power of two (got {v})")
        return v


# --------------------------------------------------------------------------- pure parts

def batch_grams(texts, docs: np.ndarray, sizes: list[int]) -> dict[int, np.ndarray]:
    """Every n-gram of each size of a batch as RUN_DTYPE records (hash, document number from
    ``docs`` per text, character offset of its first word), unsorted."""
    w = words(texts)
    out = {}
    for size in sizes:
        h, first = ngram_hashes(w, size)
        rec = np.empty(len(h), RUN_DTYPE)
        rec["h"], rec["d"], rec["o"] = h, docs[w.doc[first]], w.start[first]
        out[size] = rec
    return out


def sort_records(rec: np.ndarray) -> np.ndarray:
    """Records sorted by (hash, document, offset). They come in (document, offset) order (a
    shard's words in order; the runs of the shards in shard order, whose documents follow each
    other), so a stable sort by hash alone is enough (a third of a 3-key lexsort's time)."""
    return rec[np.argsort(rec["h"], kind="stable")]


def prefix_bounds(hashes: np.ndarray, partitions: int) -> np.ndarray:
    """Start of each hash-prefix partition in sorted ``hashes`` (partitions + 1 positions)."""
    bits = partitions.bit_length() - 1
    if bits == 0:
        return np.array([0, len(hashes)], np.int64)
    edges = np.array([k << (64 - bits) for k in range(partitions)], np.uint64)
    b = np.searchsorted(hashes, edges, "left").astype(np.int64)
    return np.append(b, len(hashes))


def partition_of(hashes: np.ndarray, partitions: int) -> np.ndarray:
    bits = partitions.bit_length() - 1
    return np.zeros(len(hashes), np.int64) if bits == 0 else (hashes >> np.uint64(64 - bits)).astype(np.int64)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (np.unique hashes or sorts again: 10x slower)."""
    if len(a) == 0:
        return a
    keep = np.ones(len(a), bool)
    keep[1:] = a[1:] != a[:-1]
    return a[keep]


def _save(path: str, arr: np.ndarray) -> None:
    storage.write_array(path, np.ascontiguousarray(arr), npy=True)


def load_array(path: str) -> np.ndarray:
    """An index file: memory-mapped on local disk, read whole from object storage."""
    if storage.is_url(path):
        return np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False)


# --------------------------------------------------------------------------- build tasks

def _map_shard(shard: ShardRef, out: str, sizes: list[int], partitions: int, batch_rows: int) -> dict:
    pf = storage.parquet_file(shard.path)
    names = pf.schema_arrow.names
    cols = ["id", "text"] + [c for c in ("source", "repeat") if c in names]
    parts: dict[int, list] = {s: [] for s in sizes}
    ids, sources, rows, batches, nbytes, row0, n_doc = [], [], [], [], 0, 0, 0
    for bno, batch in enumerate(pf.iter_batches(batch_size=batch_rows, columns=cols)):
        t = pa.Table.from_batches([batch])
        keep = np.ones(t.num_rows, bool)
        if "repeat" in cols:  # the training mix: each document (piece) once, at its first repeat
            keep = np.asarray(t["repeat"].to_numpy(zero_copy_only=False)) == 0
        sel = np.nonzero(keep)[0]
        texts = t["text"].combine_chunks().take(pa.array(sel, pa.int64()))
        nbytes += texts.nbytes
        longest = pc.max(pc.utf8_length(texts)).as_py() if len(texts) else 0
        if longest and longest > MAX_OFFSET:
            i = int(np.argmax(pc.utf8_length(texts).to_numpy(zero_copy_only=False)))
            raise StageError(f"index: document {t['id'][int(sel[i])].as_py()!r} in {shard.path} has {longest:,} "
                             f"characters; the index's character offsets are u32 (at most {MAX_OFFSET:,})")
        local = np.full(t.num_rows, 0, np.uint32)
        local[sel] = np.arange(n_doc, n_doc + len(sel), dtype=np.uint32)
        for size, rec in batch_grams(texts, local[sel], sizes).items():
            parts[size].append(rec)
        ids.extend(t["id"].take(pa.array(sel, pa.int64())).to_pylist())
        if "source" in cols:
            sources.extend(t["source"].take(pa.array(sel, pa.int64())).to_pylist())
        rows.append(sel + row0)
        batches.append(np.full(len(sel), bno, np.int32))
        row0 += t.num_rows
        n_doc += len(sel)
    bounds, counts = {}, {}
    for size in sizes:
        rec = sort_records(np.concatenate(parts[size]) if parts[size] else np.zeros(0, RUN_DTYPE))
        storage.write_array(storage.join(out, "runs", f"{shard.index:05d}-n{size}.bin"), rec)
        bounds[size], counts[size] = prefix_bounds(rec["h"], partitions).tolist(), len(rec)
    docs = pa.table({"row": pa.array(np.concatenate(rows) if rows else np.zeros(0, np.int64), pa.int64()),
                     "batch": pa.array(np.concatenate(batches) if batches else np.zeros(0, np.int32), pa.int32()),
                     "id": pa.array(ids, pa.string()),
                     "source": pa.array(sources if "source" in cols else [shard.source] * len(ids), pa.string())})
    storage.write_table(docs, storage.join(out, "docs", f"{shard.index:05d}.parquet"))
    return {"index": shard.index, "docs": n_doc, "rows": row0, "bounds": bounds, "counts": counts, "bytes": nbytes}


def _read_slice(path: str, lo: int, hi: int) -> np.ndarray:
    if hi <= lo:
        return np.zeros(0, RUN_DTYPE)
    with storage.open_read(path, random_access=True) as fh:
        fh.seek(lo * RUN_DTYPE.itemsize)
        data = fh.read((hi - lo) * RUN_DTYPE.itemsize)
    return np.frombuffer(data, RUN_DTYPE)


def _reduce_part(task: tuple, out: str) -> dict:
    size, k, runs = task  # runs: [(run path, lo, hi, document base)]
    pieces = []
    for path, lo, hi, base in runs:
        rec = _read_slice(path, lo, hi).copy()
        rec["d"] += np.uint32(base)
        pieces.append(rec)
    rec = sort_records(np.concatenate(pieces)) if pieces else np.zeros(0, RUN_DTYPE)
    ref = np.empty(len(rec), REF_DTYPE)
    ref["d"], ref["o"] = rec["d"], rec["o"]
    _save(storage.join(out, f"n{size}", f"p{k:04d}.hash.npy"), rec["h"])
    _save(storage.join(out, f"n{size}", f"p{k:04d}.ref.npy"), ref)
    return {"size": size, "part": k, "ngrams": len(rec)}


# --------------------------------------------------------------------------- the stage

def committed_shards(stage_dir: str) -> tuple[dict, list[ShardRef]]:
    """A finished stage's manifest and its committed data shards (``shards/`` of the mix,
    ``data/`` of the others), in name order."""
    m = read_manifest(stage_dir)
    if m is None:
        raise StageError(f"index: {stage_dir} is not a finished stage folder (run the stage first)")
    sub = "shards/" if m.get("stage") == "mix" else "data/"
    outs = sorted((o for o in m.get("outputs", []) if o["path"].startswith(sub) and o["path"].endswith(".parquet")),
                  key=lambda o: o["path"])
    return m, [ShardRef(path=stage_path(stage_dir, m, o["path"]), name=storage.basename(o["path"]).removesuffix(".parquet"),
                        source=m.get("stage", "stage"), index=i, size=o["size"]) for i, o in enumerate(outs)]


class IndexStage(Stage):
    """The n-gram index of a finished stage (not in the registry: ``siftmix index build``)."""

    name = "index"
    folder = "index"
    reads_upstream = False
    counts_follow_input = False
    help = "Build a persisted n-gram index of a finished stage's documents."

    def __init__(self, stage_dir: str, config: IndexConfig | None = None):
        self.stage_dir = stage_dir.rstrip("/")
        self.config = config or IndexConfig()

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "index", "version": INDEX_VERSION, "index": self.config.model_dump(),
                "stage_dir": self.stage_dir}

    def input_fingerprint(self, cfg, upstream) -> str:
        return committed_shards(self.stage_dir)[0]["output_fingerprint"]

    def run(self, ctx: StageContext) -> dict:
        c = self.config
        m, shards = committed_shards(self.stage_dir)
        with ctx.step("map"):
            res = sorted(ctx.map(_map_shard, shards, label="index: map", unit="shards",
                                 nbytes=lambda r: r["bytes"], total_bytes=sum(s.size for s in shards),
                                 fn_kwargs={"out": ctx.tmp, "sizes": c.sizes, "partitions": c.partitions,
                                            "batch_rows": c.batch_rows}), key=lambda r: r["index"])
        base = np.concatenate([[0], np.cumsum([r["docs"] for r in res])]).astype(np.int64)
        if base[-1] >= 2**32:
            raise StageError(f"index: {base[-1]:,} documents; the index holds at most 2^32 - 1")
        tasks = [(size, k, [(storage.join(ctx.tmp, "runs", f"{r['index']:05d}-n{size}.bin"), r["bounds"][size][k],
                             r["bounds"][size][k + 1], int(base[i])) for i, r in enumerate(res)])
                 for size in c.sizes for k in range(c.partitions)]
        with ctx.step("reduce"):
            red = list(ctx.map(_reduce_part, tasks, label="index: sort", unit="partitions", fn_kwargs={"out": ctx.tmp}))
        storage.remove(storage.join(ctx.tmp, "runs"))
        ngrams = {str(s): sum(r["ngrams"] for r in red if r["size"] == s) for s in c.sizes}
        shard_list = [{"index": s.index, "name": s.name, "path": storage.relpath(s.path, self.stage_dir),
                       "docs": r["docs"], "rows": r["rows"], "base": int(base[i])}
                      for i, (s, r) in enumerate(zip(shards, res))]
        storage.write_json(storage.join(ctx.tmp, "shards.json"), shard_list)
        text_bytes = sum(r["bytes"] for r in res)
        total = sum(ngrams.values())
        files_bytes = sum(storage.size(storage.join(ctx.tmp, f"n{s}", f"p{k:04d}.{kind}.npy"))
                          for s in c.sizes for k in range(c.partitions) for kind in ("hash", "ref"))
        n_docs = int(base[-1])
        return {"counts": {"in": n_docs, "kept": n_docs, "rejected": 0},
                "config": {"index": c.model_dump()},
                "index": {"version": INDEX_VERSION, "sizes": c.sizes, "partitions": c.partitions,
                          "documents": n_docs, "ngrams": ngrams, "ngrams_total": total, "bytes": files_bytes,
                          "bytes_per_ngram": round(files_bytes / total, 3) if total else 0.0,
                          "text_bytes": text_bytes, "hash": "appendix C words, FNV-1a + polynomial (core.text)",
                          "layout": {"hash": "n<size>/p<prefix>.hash.npy (u64, sorted)",
                                     "ref": "n<size>/p<prefix>.ref.npy (doc u32, char offset u32)",
                                     "docs": "docs/<shard>.parquet (row, batch, id, source)",
                                     "shards": "shards.json"}},
                "source_stage": {"dir": self.stage_dir, "stage": m.get("stage"),
                                 "output_fingerprint": m["output_fingerprint"]}}

    def summary(self, m: dict, out_dir: str) -> str:
        i = m["index"]
        return (f"index: {i['ngrams_total']:,} n-grams (sizes {i['sizes'][0]}-{i['sizes'][-1]}) of {i['documents']:,} "
                f"documents, {i['bytes'] / 2**20:.1f} MiB ({i['bytes_per_ngram']} bytes per n-gram): {out_dir}")


# --------------------------------------------------------------------------- reading an index

class Index:
    """A built index (its committed manifest), read lazily: partitions are memory-mapped on first
    use and kept (read whole from object storage). Safe to share between threads (the service)."""

    def __init__(self, index_dir: str):
        self.dir = index_dir.rstrip("/")
        m = read_manifest(self.dir)
        if m is None or m.get("stage") != "index":
            raise StageError(f"audit: {index_dir} is not a finished index (run `siftmix index build` first)")
        self.manifest, self.info = m, m["index"]
        self.sizes, self.partitions = self.info["sizes"], self.info["partitions"]
        self.batch_rows = int((m.get("config") or {}).get("index", {}).get("batch_rows", IndexConfig().batch_rows))
        self.stage_dir = m["source_stage"]["dir"]
        self.shards = storage.read_json(self.path("shards.json"))
        self._docs = None
        self._groups: dict = {}
        self._arrays: dict = {}
        self._stage_ok = False
        self._lock = threading.Lock()

    def path(self, *parts) -> str:
        return stage_path(self.dir, self.manifest, *parts)

    def _array(self, size: int, k: int, kind: str) -> np.ndarray:
        key = (size, k, kind)
        a = self._arrays.get(key)
        if a is None:
            a = load_array(self.path(f"n{size}", f"p{int(k):04d}.{kind}.npy"))
            with self._lock:
                a = self._arrays.setdefault(key, a)
        return a

    def open_all(self) -> None:
        """Open (memory-map) every partition now, and read the documents table (a service's start-up)."""
        for size in self.sizes:
            for k in range(self.partitions):
                self._array(size, k, "hash"), self._array(size, k, "ref")
        self.docs()

    def postings(self, size: int, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash, document, offset) of every occurrence of the given hashes (sorted, unique), by hash."""
        hs, ds, os_ = [], [], []
        bounds = prefix_bounds(hashes, self.partitions)
        for k in range(self.partitions):
            q = hashes[bounds[k]:bounds[k + 1]]
            if not len(q):
                continue
            keys = self._array(size, k, "hash")
            if not len(keys):
                continue
            lo = np.searchsorted(keys, q, "left")
            hit = keys[np.minimum(lo, len(keys) - 1)] == q  # most benchmark n-grams are in no document
            if not hit.any():
                continue
            q, lo = q[hit], lo[hit]
            n = np.searchsorted(keys, q, "right") - lo
            ref = self._array(size, k, "ref")
            pos = np.repeat(lo - np.cumsum(np.append(0, n[:-1])), n) + np.arange(int(n.sum()))
            r = ref[pos]
            hs.append(np.repeat(q, n))
            ds.append(np.asarray(r["d"]))
            os_.append(np.asarray(r["o"]))
        if not hs:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint32), np.zeros(0, np.uint32)
        return np.concatenate(hs), np.concatenate(ds), np.concatenate(os_)

    def docs(self) -> dict:
        """Per global document number: shard position, row, scan batch, id, source."""
        if self._docs is None:
            shard, row, batch, ids, sources = [], [], [], [], []
            for i, s in enumerate(self.shards):
                t = storage.read_table(self.path("docs", f"{s['index']:05d}.parquet"))
                shard.append(np.full(t.num_rows, i, np.int32))
                row.append(t["row"].to_numpy())
                batch.append(t["batch"].to_numpy())
                ids.extend(t["id"].to_pylist())
                src = t["source"].to_pylist() if "source" in t.column_names else [None] * t.num_rows
                sources.extend(src)

            def cat(xs, dt):
                return np.concatenate(xs) if xs else np.zeros(0, dt)

            docs = {"shard": cat(shard, np.int32), "row": cat(row, np.int64), "batch": cat(batch, np.int32),
                    "id": np.array(ids, dtype=object), "source": np.array(sources, dtype=object)}
            with self._lock:
                if self._docs is None:
                    self._docs = docs
        return self._docs

    def ref(self, doc: int) -> dict:
        """Where one document is: its id, source, shard (path in the indexed stage) and row."""
        d = self.docs()
        s = self.shards[int(d["shard"][doc])]
        return {"doc": int(doc), "id": d["id"][doc], "source": d["source"][doc] or self.manifest["source_stage"]["stage"],
                "shard": s["path"], "row": int(d["row"][doc])}

    def check_stage(self) -> None:
        """The indexed stage is still the one the index was built from (its output fingerprint),
        so that document references name the same rows; checked once, before the first text read."""
        if self._stage_ok:
            return
        want = self.manifest["source_stage"]["output_fingerprint"]
        m = read_manifest(self.stage_dir)
        if m is None or m.get("output_fingerprint") != want:
            now = "is gone" if m is None else f"has output fingerprint {m.get('output_fingerprint')}"
            raise StaleIndexError(f"index: the indexed stage {self.stage_dir} {now}, not {want} as when the index at "
                                  f"{self.dir} was built; rebuild the index (siftmix index build)")
        self._stage_ok = True

    def text(self, doc: int) -> str:
        """The text of one document, by its reference (one row group of one shard; the last
        few row groups read are kept, for dirty examples in the same documents)."""
        self.check_stage()
        d = self.docs()
        s = self.shards[int(d["shard"][doc])]
        path = storage.join(self.stage_dir, s["path"])
        row = int(d["row"][doc])
        pf = storage.parquet_file(path)
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row < start + n:
                with self._lock:  # the row-group cache, shared by the service's threads
                    col = self._groups.get((path, g))
                if col is None:  # read outside the lock: other threads' reads go on
                    col = pf.read_row_group(g, columns=["text"])["text"]
                    with self._lock:
                        while len(self._groups) >= 8:
                            self._groups.pop(next(iter(self._groups)))
                        self._groups[(path, g)] = col
                return col[row - start].as_py()
            start += n
        raise StageError(f"audit: row {row} is not in {s['path']} (the stage changed since the index was built)")

    def snippet(self, doc: int, offset: int, size: int, chars: int) -> dict:
        """The training text around the ``size``-gram at character ``offset`` of a document:
        ``snippet`` (up to ``chars`` characters on each side) and the n-gram's ``span`` in it."""
        src = self.text(doc)
        w = words([src])
        f = int(np.searchsorted(w.start, offset))
        if f + size > len(w.start) or int(w.start[f]) != offset:
            raise ValueError(f"no {size}-gram starts at character {offset} of document {doc}")
        s, e = int(w.start[f]), int(w.end[f + size - 1])
        a0, b0 = max(0, s - chars), min(len(src), e + chars)
        return {"snippet": src[a0:b0], "span": [s - a0, e - a0]}


def index_matches(idx: Index, bench_index, snippet_chars: int, max_docs: int) -> tuple[dict, dict]:
    """The benchmark side against a built index: (dirty examples as the scan reports them,
    the training side's counts)."""
    need = sorted(set(benchmark_sizes(bench_index)) | {TRAIN_N})
    missing = [s for s in need if s not in idx.sizes]
    if missing:
        raise StageError(f"audit: the index at {idx.dir} has no {', '.join(map(str, missing))}-grams (it has "
                         f"{', '.join(map(str, idx.sizes))}); rebuild it with those sizes")
    docs = idx.docs()
    # the training side: documents per benchmark 13-gram (the boilerplate rule)
    q13 = sorted_unique(bench_index.tables[TRAIN_N][0])  # the tables are sorted by hash
    h, d, _ = idx.postings(TRAIN_N, q13)
    pairs = np.unique(np.stack([h, d.astype(np.uint64)], axis=1), axis=0) if len(h) else np.zeros((0, 2), np.uint64)
    uh, per = np.unique(pairs[:, 0], return_counts=True)
    training = {"documents_in": len(docs["id"]), "colliding_13grams": int(len(uh)),
                "ngrams_ignored_as_boilerplate": int(np.sum(per > max_docs))}
    # candidates as the scan sees them: per (hash, scan batch), the first row holding it
    gb = docs["shard"].astype(np.int64) << 32 | docs["batch"].astype(np.int64)
    cands = []  # (id, shard, batch, size, hash, doc, first offset in the doc)
    for size in benchmark_sizes(bench_index):
        keys, benches, examples = bench_index.tables[size]
        h, d, o = idx.postings(size, sorted_unique(keys))
        if not len(h):
            continue
        order = np.lexsort((o, d, gb[d], h))
        h, d, o = h[order], d[order], o[order]
        first = np.ones(len(h), bool)
        first[1:] = (h[1:] != h[:-1]) | (gb[d[1:]] != gb[d[:-1]])
        for hv, dv, ov in zip(h[first].tolist(), d[first].tolist(), o[first].tolist()):  # matched n-grams only
            a, b = np.searchsorted(keys, np.uint64(hv), "left"), np.searchsorted(keys, np.uint64(hv), "right")
            for bi, ex in zip(benches[a:b].tolist(), examples[a:b].tolist()):
                if counts_for(bench_index, bi, size):
                    cands.append((docs["id"][dv], int(docs["shard"][dv]), int(docs["batch"][dv]), size, hv, dv, ov,
                                  f"{bi}:{ex}"))
    best: dict[str, tuple] = {}
    for c in sorted(cands, key=lambda c: c[:5]):
        best.setdefault(c[7], c)
    dirty = {}
    for key, (doc_id, _, _, size, hv, dv, ov, _) in best.items():
        dirty[key] = {"hash": int(hv), "size": int(size), "doc": doc_id, **idx.snippet(dv, ov, size, snippet_chars)}
    return dirty, training


def lookup(idx: Index, p: dict, d: DecontamConfig) -> dict:
    """The benchmark side ``p`` (:func:`~.stage.benchmark_side`) against the index: ``p`` with the
    dirty examples and the training side's counts, ready for :func:`~.stage.write_audit`."""
    if d.batch_rows != idx.batch_rows:
        raise StageError(f"audit: decontam.batch_rows is {d.batch_rows} but the index at {idx.dir} was built with "
                         f"batch_rows {idx.batch_rows}; the audit by index equals the scan only with the same batch "
                         f"(set decontam.batch_rows: {idx.batch_rows})")
    dirty, training = index_matches(idx, p["index"], d.snippet_chars, d.max_docs)
    return {**p, "dirty": dirty, "training": training, "rows": training["documents_in"]}


def audit_by_index(idx: Index, benches: list, d: DecontamConfig, folder: str, seed: int = 0, log=None,
                   subsets: bool = True) -> dict:
    """The whole audit of loaded benchmarks against a loaded index, written into ``folder``
    (audit.json, .md, .html, and with ``subsets`` clean/, dirty/); returns audit.json's dict. The
    same three steps as :class:`IndexAuditStage` (benchmark side, lookup, reports); ``siftmix
    serve`` runs this."""
    p = lookup(idx, benchmark_side(benches, d, "audit", log), d)
    return write_audit(p, p["training"], d.model_dump(), seed, folder, subsets=subsets)


class IndexAuditStage(DecontamStage):
    """``siftmix audit -b BENCH --index INDEX -o OUT``: the audit against a built index, without
    reading the training text (only each dirty example's one training row)."""

    reads_upstream = False
    counts_follow_input = False

    def __init__(self, index_dir: str):
        super().__init__(audit_only=True)
        self.index_dir = index_dir.rstrip("/")
        self.help = "Report which benchmark examples occur in an indexed stage (siftmix index build)."

    def _index(self) -> Index:
        return Index(self.index_dir)

    def hash_inputs(self, cfg) -> dict:
        return {**super().hash_inputs(cfg), "index": self.index_dir}

    def input_fingerprint(self, cfg, upstream) -> str:
        return self._index().manifest["output_fingerprint"]

    def prepare(self, ctx: StageContext) -> dict:
        p = self.load(ctx)
        with ctx.step("lookup"):
            return lookup(self._index(), p, ctx.cfg.decontam)

    def run(self, ctx: StageContext) -> dict:
        p = self.prepare(ctx)
        return self.finish(ctx, [], p)
