"""The dedup stage on Ray: exact dedup, MinHash LSH, verification, connected components, keepers.

Every pass is a set of Ray tasks (``map_tasks``); the data moves between passes as Parquet
files hash-partitioned by the next pass's key (a MapReduce shuffle through the stage's
temporary ``_work`` folder, removed on commit). ``P`` partitions, chosen from the document
count alone (never from the workers, so that the output does not depend on them):

1. **sign** (per input shard): signatures, LSH band keys and the normalised-text hash; band rows
   ``(key, band, doc, exact)`` -> ``bands/p<key % P>/``, metadata -> ``meta/<shard>``.
2. **buckets** (per partition): each partition holds whole buckets. Exact buckets give certain
   edges (``edges/exact``); band buckets give candidate pairs -> ``cand/p<hash(a) % P>/``.
3. **verify** (``verify: exact|signature``): per partition the candidates are made unique and
   the documents they name are asked of their shards (``needed/<shard>/``); each shard computes
   those documents' signatures and shingle sets once and sends them to the partitions that
   asked (``provided/p<q>/``); each partition checks its pairs -> ``edges/verified``.
4. **components**: up to ``single_task_max_edges`` edges in one task (scipy), else rounds of
   large-star / small-star (Kiveris et al. 2014), each a shuffle on the node, until every
   component is a star around its smallest document -> ``members/<shard>/``.
5. **keepers**: per shard, members get their id, source and quality score (a lookup by row),
   shuffled on the component root; per partition the keeper is chosen -> ``decisions/<shard>/``
   and ``clusters/clusters-p<partition>.parquet`` (every cluster, one row per member).
6. **apply** (per input shard): ``data/`` and ``rejected/``.

The driver holds no per-document or per-edge state: counts and small histograms only.
Documents are numbered ``shard << 32 | row`` (see :mod:`siftmix.dedup.shard`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.core.hashing import mix64
from siftmix.pipeline.core.htmlkit import Series, column_chart, k, n, table
from siftmix.pipeline.core.shards import (
    PARQUET_OPTIONS,
    Processed,
    ShardRef,
    ShardResult,
    ShardWorker,
    summarize,
)
from siftmix.pipeline.core.stage import ShardStage, StageContext, reasons_text

from .cluster import (
    bucket_candidates,
    choose_keepers,
    components_min_label,
    large_star,
    small_star,
    star_violations,
    unique_edges,
    verify_pairs,
)
from .config import DedupConfig
from .shard import (
    BAND_SCHEMA,
    apply_table,
    decision_arrays,
    dedup_schema,
    gather_sets,
    provide_table,
    reason_kind,
    sign_table,
)

ROW_MASK = np.int64(0xFFFFFFFF)
#: the stage's own shuffle files: hashes neither compress nor dictionary-encode, so neither is tried
WORK_PARQUET = dict(compression="none", use_dictionary=False, write_statistics=False)


# ----------------------------------------------------------------------------- file shuffle helpers

def _files(folder: str) -> list[str]:
    return storage.list_files(folder, ".parquet")


def _read(files: list[str], columns: list[str] | None = None):
    return storage.read_tables(files, columns)


def partition_of(values: np.ndarray, n: int) -> np.ndarray:
    """Partition of each int64/uint64 key: a 64-bit mix, modulo n (stable across runs)."""
    return (mix64(values.astype(np.int64).view(np.uint64)) % np.uint64(n)).astype(np.int64)


def _write(table, path: str) -> None:
    storage.write_table(table, path, **WORK_PARQUET)


def write_partitioned(table, part: np.ndarray, folder_of: Callable[[int], str], name: str) -> int:
    """Write ``table``'s rows to ``folder_of(p)/name`` for each partition p present."""
    if table.num_rows == 0:
        return 0
    order = np.argsort(part, kind="stable")
    table = table.take(pa.array(order))
    part = part[order]
    bounds = np.flatnonzero(np.r_[True, part[1:] != part[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        _write(table.slice(a, b - a), storage.join(folder_of(int(part[a])), name))
    return len(bounds) - 1


def _p(work: str, *parts) -> str:
    return storage.join(work, *parts)


# ----------------------------------------------------------------------------- the passes (Ray tasks)

@dataclass(frozen=True)
class ShardGroup:
    """Consecutive input shards signed by one task: (index, path) each."""

    shards: tuple[tuple[int, str], ...]

    @property
    def path(self) -> str:  # what a failure names
        return self.shards[0][1]


@dataclass(frozen=True)
class Part:
    """One shuffle partition of a pass."""

    partition: int


@dataclass(frozen=True)
class RoundPart:
    """One partition of one round of large-star / small-star."""

    round: int
    partition: int


@dataclass(frozen=True)
class ShardNo:
    """The members of one input shard (by index)."""

    shard: int


@dataclass(frozen=True)
class EdgeFile:
    file: str
    name: str


@dataclass(frozen=True)
class EdgeFiles:
    files: tuple[str, ...]


def _sign_task(task: ShardGroup, params: DedupConfig, work: str, n_parts: int) -> dict:
    """A group of input shards: band rows to ``bands/p<q>/`` (one file per group and partition),
    metadata to ``meta/<shard>``."""

    p = params
    bands, docs, nbytes = [], 0, 0
    for s, path in task.shards:
        pf = storage.parquet_file(path)
        cols = ["id", "source", "text"] + (["quality_score"] if "quality_score" in pf.schema_arrow.names else [])
        metas, rows = [], 0
        for batch in pf.iter_batches(batch_size=p.batch_rows, columns=cols):
            t = pa.Table.from_batches([batch])
            b, m = sign_table(t, s, rows, p)
            bands.append(b)
            metas.append(m)
            rows += t.num_rows
            nbytes += pa.compute.sum(pa.compute.binary_length(t["text"])).as_py() or 0
        if metas:
            storage.write_table(pa.concat_tables(metas), _p(work, "meta", f"s{s:06d}.parquet"), compression="lz4")
        docs += rows
    band = pa.concat_tables(bands) if bands else BAND_SCHEMA.empty_table()
    keys = band["key"].to_numpy()
    write_partitioned(band, (keys % np.uint64(n_parts)).astype(np.int64), lambda q: _p(work, "bands", f"p{q:05d}"),
                      f"s{task.shards[0][0]:06d}.parquet")
    return {"docs": docs, "bytes": nbytes, "band_rows": band.num_rows}


def shard_groups(shards: list[str], target_bytes: int = 32 * 2**20) -> list[list[tuple[int, str]]]:
    """Consecutive input shards grouped into tasks of about ``target_bytes`` (many small shards,
    e.g. one per book, cost a task and a file per partition each); big shards stay alone."""
    groups, cur, size = [], [], 0
    for i, f in enumerate(shards):
        cur.append((i, f))
        size += storage.size(f)
        if size >= target_bytes:
            groups.append(cur)
            cur, size = [], 0
    return groups + ([cur] if cur else [])


def _bucket_task(task: Part, work: str, n_parts: int, max_bucket: int) -> dict:

    q = task.partition
    t = _read(_files(_p(work, "bands", f"p{q:05d}")))
    if t is None:
        return {"exact": 0, "candidates_with_repeats": 0}
    a, b, k = bucket_candidates(t["key"].to_numpy(), t["band"].to_numpy(), t["doc"].to_numpy(), t["exact"].to_numpy(),
                                max_bucket=max_bucket)
    ex = k == 0
    if ex.any():
        _write(pa.table({"a": a[ex], "b": b[ex]}), _p(work, "edges", "exact", f"p{q:05d}.parquet"))
    cand = pa.table({"a": a[~ex], "b": b[~ex]})
    write_partitioned(cand, partition_of(a[~ex], n_parts), lambda r: _p(work, "cand", f"p{r:05d}"), f"from{q:05d}.parquet")
    return {"exact": int(ex.sum()), "candidates_with_repeats": int((~ex).sum())}


def _pairs_task(task: Part, work: str) -> dict:
    """Unique candidate pairs of a partition; ask their documents' shards for them."""

    q = task.partition
    t = _read(_files(_p(work, "cand", f"p{q:05d}")))
    if t is None:
        return {"candidates": 0}
    a, b, _ = unique_edges(t["a"].to_numpy(), t["b"].to_numpy())
    _write(pa.table({"a": a, "b": b}), _p(work, "pairs", f"p{q:05d}.parquet"))
    docs = np.unique(np.concatenate([a, b]))
    write_partitioned(pa.table({"doc": docs}), docs >> np.int64(32), lambda s: _p(work, "needed", f"s{s:06d}"), f"p{q:05d}.parquet")
    return {"candidates": int(len(a))}


def _provide_task(task: ShardRef, params: DedupConfig, work: str) -> dict:
    """Signatures and shingle sets of the documents of one shard that partitions asked for,
    computed once, sent to each asking partition."""

    s = task.index
    asks = {int(storage.basename(f)[1:6]): f for f in _files(_p(work, "needed", f"s{s:06d}"))}
    need = {q: _read([f])["doc"].to_numpy() for q, f in asks.items()}
    docs = np.unique(np.concatenate(list(need.values())))
    prov = provide_table(task.path, docs, params)
    for q, d in need.items():
        sub = prov.take(pa.array(np.searchsorted(docs, d)))
        _write(sub, _p(work, "provided", f"p{q:05d}", f"s{s:06d}.parquet"))
    return {"docs": int(len(docs))}


def _verify_task(task: Part, work: str, mode: str, threshold: float, prefilter: float) -> dict:
    q = task.partition
    pairs = _read([_p(work, "pairs", f"p{q:05d}.parquet")])
    prov = _read(_files(_p(work, "provided", f"p{q:05d}"))).sort_by("doc")
    docs = prov["doc"].to_numpy()
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    ia, ib = np.searchsorted(docs, a), np.searchsorted(docs, b)
    est, jac = verify_pairs(*gather_sets(prov), ia, ib)
    keep = est >= (prefilter if mode == "exact" else threshold)
    if mode == "exact":
        keep &= jac >= threshold
    _write(pa.table({"a": a[keep], "b": b[keep], "est": est[keep], "jaccard": jac[keep]}),
           _p(work, "edges", "verified", f"p{q:05d}.parquet"))
    return {"verified": int(keep.sum()), "below_prefilter": int((est < prefilter).sum())}


def _members_out(work: str, doc: np.ndarray, root: np.ndarray, name: str) -> None:

    write_partitioned(pa.table({"doc": doc, "root": root}), doc >> np.int64(32), lambda s: _p(work, "members", f"s{s:06d}"), name)


def _components_task(task: EdgeFiles, work: str) -> dict:

    t = _read(list(task.files), ["a", "b"])
    nodes, root = components_min_label(t["a"].to_numpy(), t["b"].to_numpy())
    _members_out(work, nodes, root, "p00000.parquet")
    return {"nodes": int(len(nodes)), "edges": int(t.num_rows)}


def _double_task(task: EdgeFile, work: str, n_parts: int) -> dict:

    t = _read([task.file], ["a", "b"])
    a, b = t["a"].to_numpy(), t["b"].to_numpy()
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    write_partitioned(pa.table({"u": u, "v": v}), partition_of(u, n_parts), lambda p: _p(work, "cc", "r0000", f"p{p:05d}"),
                      f"{task.name}.parquet")
    return {}


def _large_star_task(task: RoundPart, work: str, n_parts: int) -> dict:
    """Round r: count the partition's nodes that are not yet in a star, and large-star it."""

    r, p = task.round, task.partition
    t = _read(_files(_p(work, "cc", f"r{r:04d}", f"p{p:05d}")))
    if t is None:
        return {"violations": 0, "edges": 0}
    u, v, _ = unique_edges(t["u"].to_numpy(), t["v"].to_numpy())
    left = star_violations(u, v)
    x, y = large_star(u, v)  # always: another partition may need a next round
    write_partitioned(pa.table({"u": x, "v": y}), partition_of(x, n_parts),
                      lambda k: _p(work, "cc", f"r{r:04d}ls", f"p{k:05d}"), f"from{p:05d}.parquet")
    return {"violations": left, "edges": int(len(u))}


def _small_star_task(task: RoundPart, work: str, n_parts: int) -> dict:

    r, p = task.round, task.partition
    t = _read(_files(_p(work, "cc", f"r{r:04d}ls", f"p{p:05d}")))
    if t is None:
        return {}
    x, y = small_star(t["u"].to_numpy(), t["v"].to_numpy())
    u, v = np.concatenate([x, y]), np.concatenate([y, x])
    write_partitioned(pa.table({"u": u, "v": v}), partition_of(u, n_parts),
                      lambda k: _p(work, "cc", f"r{r + 1:04d}", f"p{k:05d}"), f"from{p:05d}.parquet")
    return {}


def _star_members_task(task: RoundPart, work: str) -> dict:
    """A star forest's partition -> (doc, root): a leaf's root is its one smaller neighbour."""

    r, p = task.round, task.partition
    t = _read(_files(_p(work, "cc", f"r{r:04d}", f"p{p:05d}")))
    if t is None:
        return {"nodes": 0}
    u, v, _ = unique_edges(t["u"].to_numpy(), t["v"].to_numpy())
    d, i = np.unique(u, return_index=True)
    root = np.minimum(d, v[i])  # sorted by (u, v): v[i] is u's smallest neighbour
    _members_out(work, d, root, f"p{p:05d}.parquet")
    return {"nodes": int(len(d))}


def _lookup_task(task: ShardNo, work: str, n_parts: int) -> dict:
    """Members of one shard get their metadata (a lookup by row) and go to their root's partition."""

    s = task.shard
    m = _read(_files(_p(work, "members", f"s{s:06d}")))
    meta = _read([_p(work, "meta", f"s{s:06d}.parquet")])
    rows = (m["doc"].to_numpy() & ROW_MASK).astype(np.int64)
    t = meta.take(pa.array(rows)).append_column("root", m["root"])
    write_partitioned(t, partition_of(m["root"].to_numpy(), n_parts), lambda q: _p(work, "keep", f"p{q:05d}"), f"s{s:06d}.parquet")
    return {}


def _keeper_task(task: Part, work: str, priority: list[str], out_dir: str) -> dict:

    q = task.partition
    t = _read(_files(_p(work, "keep", f"p{q:05d}")))
    if t is None:
        return {"hist": {}, "docs": 0, "fuzzy_clusters": 0}
    rank = {s: i for i, s in enumerate(priority)}
    ids = np.asarray(t["id"].to_pylist(), dtype=np.str_)
    src = t["source"].to_pylist()
    score = t["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    r = choose_keepers(t["root"].to_numpy(), t["doc"].to_numpy(), ids, np.array([rank.get(s, len(rank)) for s in src]),
                       score, t["exact"].to_numpy())
    is_keeper = r["keeper"] == np.arange(t.num_rows)
    keeper_ids = ids[r["keeper"]].astype(object)
    prefix = np.where(r["exact"], "exact_duplicate_of:", "duplicate_of:")
    reason = np.where(is_keeper, None, np.char.add(prefix, ids[r["keeper"]]).astype(object))
    doc = t["doc"].to_numpy()
    dec = pa.table({"doc": doc, "cluster": pa.array(keeper_ids, pa.string()), "reason": pa.array(reason, pa.string())})
    write_partitioned(dec, doc >> np.int64(32), lambda s: _p(work, "decisions", f"s{s:06d}"), f"p{q:05d}.parquet")
    listing = pa.table({"cluster": pa.array(keeper_ids, pa.string()), "id": t["id"], "source": t["source"],
                        "keeper": is_keeper, "reason": pa.array(reason, pa.string()), "size": r["size"],
                        "quality_score": t["score"]}).sort_by([("cluster", "ascending"), ("id", "ascending")])
    storage.write_table(listing, storage.join(out_dir, "clusters", f"clusters-p{q:05d}.parquet"), **PARQUET_OPTIONS)
    fuzzy = len(np.unique(keeper_ids[~is_keeper & ~r["exact"]]))  # clusters holding a near (not exact) duplicate
    hist = Counter(r["size"][is_keeper].tolist())
    return {"hist": {int(k): int(v) for k, v in hist.items()}, "docs": int(t.num_rows), "fuzzy_clusters": int(fuzzy)}


# ----------------------------------------------------------------------------- the stage

def n_partitions(n_docs: int, bands: int, given: int | None) -> int:
    """Shuffle partitions from the document count only (never from the workers): ~64 MiB of
    band rows (26 bytes each) per partition, at least 8."""
    return given or max(8, math.ceil(n_docs * (bands + 1) * 26 / (64 * 2**20)))


def connected_components(mapper: Callable, work: str, edge_files: list[str], n_edges: int, n_parts: int,
                         single_max: int, log: Callable[[str], None]) -> dict:
    """Components of the edges in ``edge_files`` -> ``work/members/<shard>/``; ``mapper(fn, tasks,
    fn_kwargs=...)`` runs the tasks (``StageContext.map``)."""
    if n_edges <= single_max:
        (r,) = list(mapper(_components_task, [EdgeFiles(tuple(edge_files))], fn_kwargs={"work": work}))
        return {"method": "single_task", "rounds": 1, **r}
    kw = {"work": work, "n_parts": n_parts}
    list(mapper(_double_task, [EdgeFile(f, f"e{i:06d}") for i, f in enumerate(edge_files)], fn_kwargs=kw))
    r = 0
    while True:
        res = list(mapper(_large_star_task, [RoundPart(r, p) for p in range(n_parts)], fn_kwargs=kw))
        left = sum(x["violations"] for x in res)
        log(f"dedup: components round {r + 1}: {sum(x['edges'] for x in res):,} directed edges, "
            f"{left:,} nodes not yet in a star")
        if left == 0:
            break
        list(mapper(_small_star_task, [RoundPart(r, p) for p in range(n_parts)], fn_kwargs=kw))
        storage.remove(_p(work, "cc", f"r{r:04d}"))
        storage.remove(_p(work, "cc", f"r{r:04d}ls"))
        r += 1
        if r > 200:
            raise StageError("dedup: connected components did not converge in 200 rounds")
    res = list(mapper(_star_members_task, [RoundPart(r, p) for p in range(n_parts)], fn_kwargs={"work": work}))
    return {"method": "large_star_small_star", "rounds": r + 1, "edges": int(n_edges), "nodes": sum(x["nodes"] for x in res)}


class _ApplyState:
    def __init__(self, decisions, schema):
        self.rows, self.cluster, self.reason = decision_arrays(decisions)
        self.schema, self.first = schema, 0


class ApplyWorker(ShardWorker):
    """The last pass: a shard's kept rows get ``dup_cluster``; its duplicates are rejected."""

    def __init__(self, work: str, keep_text: bool, max_bytes: int):
        self.work, self.keep_text, self.max_bytes = work, keep_text, max_bytes

    def output_schema(self, shard: ShardRef) -> pa.Schema:
        return dedup_schema(storage.parquet_file(shard.path).schema_arrow)

    def open(self, shard: ShardRef) -> _ApplyState:
        dec = _read(_files(_p(self.work, "decisions", f"s{shard.index:06d}")), ["doc", "cluster", "reason"])
        return _ApplyState(dec, self.output_schema(shard))

    def process(self, batch: pa.Table, st: _ApplyState) -> Processed:
        kept, rejected = apply_table(batch, st.first, st.rows, st.cluster, st.reason, st.schema, self.keep_text)
        st.first += batch.num_rows
        return Processed(kept, rejected, reasons=[reason_kind(r) for r in rejected["reason"].to_pylist()])


class DedupStage(ShardStage):
    name = "dedup"
    folder = "20_dedup"
    config_key = "dedup"
    config_model = DedupConfig
    help = """Remove exact and near-duplicate documents (MinHash LSH, GPT-3 appendix A).

    Exact duplicates (equal text after lowercasing and removing punctuation) collapse first; then
    documents whose 5-word shingle sets have Jaccard >= dedup.threshold (0.8) are found by MinHash
    LSH, each candidate checked exactly, and grouped into clusters. One keeper per cluster: source
    priority, then quality score, then smallest id. Within each source by default
    (dedup.scope: cross_source for all together). Writes RUN_DIR/20_dedup (data, rejected with
    duplicate_of:<id>, clusters).

    Examples:

        siftmix dedup configs/demo.yaml

        siftmix dedup configs/gpt3.yaml --workers 32 --force
    """

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "dedup", "dedup": cfg.dedup.model_dump(), "keep_rejected_text": cfg.ingest.keep_rejected_text}

    def order(self, ctx: StageContext, shards: list[ShardRef]) -> list[ShardRef]:
        return shards  # name order (the sign pass groups consecutive shards)

    def prepare(self, ctx: StageContext) -> dict:
        """Every pass up to the keeper decisions (``_work/decisions/<shard>/``)."""
        d = ctx.cfg.dedup
        bands, rows = d.lsh_params()
        params = d.model_copy(update={"bands": bands, "rows": rows})
        shards = ctx.input_shards()
        n_docs = ctx.upstream.kept
        parts = n_partitions(n_docs, bands if d.fuzzy else 0, d.partitions)
        work = ctx.path("_work")
        allp = [Part(q) for q in range(parts)]
        edges = {"exact": 0, "candidates": 0, "verified": 0}
        with ctx.step("sign"):
            total = sum(s.size for s in shards)
            groups = shard_groups([s.path for s in shards], max(1 << 20, min(32 << 20, total // (4 * ctx.cpus()))))
            res = list(ctx.map(_sign_task, [ShardGroup(tuple(g)) for g in groups], label="sign", docs=lambda r: r["docs"],
                               docs_total=n_docs, fn_kwargs={"params": params, "work": work, "n_parts": parts}))
            n_signed, n_bytes = sum(r["docs"] for r in res), sum(r["bytes"] for r in res)
        ctx.log(f"dedup: {n_signed:,} documents signed ({n_bytes / 1e6:.1f} MB, {ctx.timings['sign_s']:.1f}s); LSH {bands} "
                f"bands x {rows} rows, {sum(r['band_rows'] for r in res):,} bucket rows in {parts} partitions")
        with ctx.step("buckets"):
            res = list(ctx.map(_bucket_task, allp, label="buckets", fn_kwargs={"work": work, "n_parts": parts,
                                                                              "max_bucket": d.max_bucket}))
            edges["exact"] = sum(r["exact"] for r in res)
            edges["candidates"] = sum(r["candidates"] for r in ctx.map(_pairs_task, allp, fn_kwargs={"work": work}))
        edge_files = _files(_p(work, "edges", "exact"))
        with ctx.step("verify"):
            edge_files += self._verify(ctx, d, params, work, shards, edges)
        ctx.log(f"dedup: {edges['exact']:,} exact-duplicate edges, {edges['candidates']:,} LSH candidate pairs, "
                f"{edges['verified']:,} verified ({d.verify}); {ctx.timings['buckets_s'] + ctx.timings['verify_s']:.1f}s")
        n_edges = edges["exact"] + edges["verified"]
        cc = {"method": "none", "rounds": 0, "edges": 0, "nodes": 0}
        with ctx.step("components"):
            if n_edges:
                cc = connected_components(ctx.map, work, edge_files, n_edges, parts, d.single_task_max_edges, ctx.log)
        with ctx.step("keepers"):
            clusters = self._keepers(ctx, work, parts, d) if cc["nodes"] else {
                "n_clusters": 0, "documents_in_clusters": 0, "exact_clusters": 0, "size_histogram": {}}
        return {"work": work, "edges": edges, "components": cc, "clusters": clusters, "partitions": parts,
                "bands": bands, "rows": rows}

    def _verify(self, ctx, d: DedupConfig, params: DedupConfig, work: str, shards: list[ShardRef], edges: dict) -> list[str]:
        """Candidate pairs -> verified edges (files); ``edges`` gets the counts."""
        if not edges["candidates"]:
            return []
        if d.verify == "none":
            edges["verified"] = edges["candidates"]
            return _files(_p(work, "pairs"))
        needed = sorted(int(n[1:]) for n in storage.listdir(_p(work, "needed")) if n.startswith("s"))
        res = list(ctx.map(_provide_task, [shards[s] for s in needed], label="verify",
                           fn_kwargs={"params": params, "work": work}))
        edges["documents_checked"] = sum(r["docs"] for r in res)
        asked = [Part(int(storage.basename(f)[1:6])) for f in _files(_p(work, "pairs"))]
        res = list(ctx.map(_verify_task, asked, fn_kwargs={"work": work, "mode": d.verify, "threshold": d.threshold,
                                                           "prefilter": d.prefilter}))
        edges["verified"] = sum(r["verified"] for r in res)
        edges["below_prefilter"] = sum(r["below_prefilter"] for r in res)
        return _files(_p(work, "edges", "verified"))

    def _keepers(self, ctx, work: str, parts: int, d: DedupConfig) -> dict:
        member_shards = sorted(int(n[1:]) for n in storage.listdir(_p(work, "members")) if n.startswith("s"))
        list(ctx.map(_lookup_task, [ShardNo(s) for s in member_shards], fn_kwargs={"work": work, "n_parts": parts}))
        keep = [Part(int(n[1:])) for n in storage.listdir(_p(work, "keep")) if n.startswith("p")]
        res = list(ctx.map(_keeper_task, keep, fn_kwargs={"work": work, "priority": d.source_priority, "out_dir": ctx.tmp}))
        hist: Counter = Counter()
        for r in res:
            hist.update({int(k): v for k, v in r["hist"].items()})
        n_cl = sum(hist.values())
        return {"n_clusters": n_cl, "documents_in_clusters": sum(r["docs"] for r in res),
                "exact_clusters": n_cl - sum(r["fuzzy_clusters"] for r in res),
                "size_histogram": {str(k): v for k, v in sorted(hist.items())}}

    def worker(self, ctx: StageContext, p: dict) -> ApplyWorker:
        return ApplyWorker(p["work"], ctx.cfg.ingest.keep_rejected_text, ctx.cfg.ingest.shard_max_bytes)

    def finish(self, ctx: StageContext, results: list[ShardResult], p: dict) -> dict:
        storage.remove(p["work"])
        counts, clusters = summarize(results), p["clusters"]
        if counts["rejected"] != clusters["documents_in_clusters"] - clusters["n_clusters"]:
            raise StageError(f"dedup: {counts['rejected']} rejected but {clusters['documents_in_clusters']} documents in "
                             f"{clusters['n_clusters']} clusters")
        return {"config": {"dedup": ctx.cfg.dedup.model_dump(), "bands": p["bands"], "rows": p["rows"]},
                "counts": counts, "edges": p["edges"], "components": p["components"], "clusters": clusters,
                "partitions": p["partitions"], "files": [r.to_json() for r in results]}

    def run(self, ctx: StageContext) -> dict:
        p = self.prepare(ctx)
        with ctx.step("apply"):
            results = ctx.map_shards(self.worker(ctx, p), ctx.input_shards(), label="write")
        return self.finish(ctx, results, p)

    def summary(self, m: dict, out_dir: str) -> str:
        c = m["counts"]
        return (f"dedup: {c['in']} documents -> {c['kept']} kept, {c['rejected']} rejected ({reasons_text(c)}); "
                f"{m['clusters']['n_clusters']} clusters; {m['timings']['wall_s']:.1f}s")

    def report(self, run_dir: str, folder: str, m: dict) -> str:
        cl = m.get("clusters")
        if not cl:
            return ""
        sizes = sorted((int(s), v) for s, v in (cl.get("size_histogram") or {}).items())
        summary = table(["clusters", "documents in clusters", "exact-duplicate clusters", "largest cluster"], [
            f'<tr><td{k("dedup.n_clusters")}>{n(cl.get("n_clusters"))}</td>'
            f'<td{k("dedup.documents_in_clusters")}>{n(cl.get("documents_in_clusters"))}</td>'
            f'<td{k("dedup.exact_clusters")}>{n(cl.get("exact_clusters"))}</td>'
            f'<td>{n(sizes[-1][0] if sizes else None)}</td></tr>'])
        if not sizes:
            return "<h3>Duplicate clusters</h3>" + summary
        chart = column_chart([str(s) for s, _ in sizes],
                             [Series("clusters", [v for _, v in sizes], [f"{v:,} clusters of {s} documents" for s, v in sizes])],
                             x_label="cluster size (documents)", y_label="clusters", svg_id="dedup-sizes")
        return "<h3>Duplicate clusters</h3>" + summary + chart


DEDUP = DedupStage()
