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
5. **keepers**: per shard, members get their id, source, quality score (a lookup by row) and the
   signature and shingle set the verify pass computed (``sets/<shard>``), shuffled on the
   component root; per partition each component is visited in keeper order and a member is
   removed only if its exact Jaccard with an already kept member is >= the threshold, else it is
   kept and starts its own cluster (``cluster.keeper_verified``) -> ``decisions/<shard>/`` and
   ``clusters/clusters-p<partition>.parquet`` (every cluster, one row per member), plus the
   precision figures (similarity histogram, a seeded sample of clusters checked pair by pair).
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
from siftmix.pipeline.core.hashing import hash01, mix64, stable_hash
from siftmix.pipeline.core.htmlkit import Series, column_chart, esc, k, n, pct, table
from siftmix.pipeline.core.shards import (
    PARQUET_OPTIONS,
    Processed,
    ShardRef,
    ShardResult,
    ShardWorker,
    summarize,
)
from siftmix.pipeline.core.stage import ShardStage, StageContext, reasons_text
from siftmix.pipeline.core.text import words

from .cluster import (
    _group_starts,
    all_pair_jaccards,
    bucket_candidates,
    components_min_label,
    keeper_order,
    keeper_verified,
    large_star,
    small_star,
    star_violations,
    unique_edges,
    verify_pairs,
)
from .config import DedupConfig
from .index import (
    BAND_GROUP_ROWS,
    INDEX_BASE,
    MATCHING,
    IndexPart,
    index_rows,
    part_of,
    resolve_parts,
    survivors,
)
from .minhash import shingle_sets
from .shard import (
    BAND_SCHEMA,
    apply_table,
    decision_arrays,
    dedup_schema,
    gather_sets,
    provide_table,
    reason_kind,
    sign_table,
    unpack_binary,
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
    if not task.shards:  # an idle worker: load what the later passes run (imports, compiled code) meanwhile
        return _warm_up(p)
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


def _warm_up(p: DedupConfig) -> dict:
    """What a worker that gets no shard to sign does: the first call of each compiled function of
    the later passes in this process (numba loads its cache once per process, ~0.1-0.5 s each), so
    that a small input (an incremental batch) does not pay it inside the bucket and verify passes."""
    t = pa.table({"id": ["w0", "w1"], "source": ["s", "s"], "text": ["a b c d e f g h", "a b c d e f g x"]})
    band, _ = sign_table(t, 0, 0, p)
    bucket_candidates(band["key"].to_numpy(), band["band"].to_numpy(), band["doc"].to_numpy(), band["exact"].to_numpy())
    vals, off = shingle_sets(words(t["text"].combine_chunks(), spans=False), p.ngram)
    verify_pairs(np.zeros((2, 4), np.uint32), off, vals, np.array([0]), np.array([1]))
    keeper_verified(np.array([0, 2]), np.array([1, 2], np.uint64), np.arange(2), None, off, vals, 0.5)
    partition_of(np.arange(4), 2)
    return {"docs": 0, "bytes": 0, "band_rows": 0}


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


INDEXED = np.int64(INDEX_BASE) << np.int64(32)  # document numbers of indexed documents start here


def _bucket_task(task: Part, work: str, n_parts: int, max_bucket: int, parts: tuple[IndexPart, ...] = ()) -> dict:
    """A partition's buckets -> exact edges and candidate pairs; with indexes (``dedup.against``),
    their rows of the keys this partition holds join the buckets (pairs of two indexed documents
    are not looked at again)."""
    q = task.partition
    t = _read(_files(_p(work, "bands", f"p{q:05d}")))
    if t is None:
        return {"exact": 0, "candidates_with_repeats": 0, "index_rows": 0, "index_groups": (0, 0)}
    n_index, groups_read, groups_there = 0, 0, 0
    if parts:
        idx, groups_read, groups_there = index_rows(list(parts), q, n_parts, np.unique(t["key"].to_numpy()))
        if idx is not None:
            n_index = idx.num_rows
            t = pa.concat_tables([t, idx.select(t.column_names).cast(t.schema)])
    a, b, k = bucket_candidates(t["key"].to_numpy(), t["band"].to_numpy(), t["doc"].to_numpy(), t["exact"].to_numpy(),
                                max_bucket=max_bucket)
    if n_index:
        new = a < INDEXED  # a < b: a pair with a new document has it as a
        a, b, k = a[new], b[new], k[new]
    ex = k == 0
    if ex.any():
        _write(pa.table({"a": a[ex], "b": b[ex]}), _p(work, "edges", "exact", f"p{q:05d}.parquet"))
    cand = pa.table({"a": a[~ex], "b": b[~ex]})
    write_partitioned(cand, partition_of(a[~ex], n_parts), lambda r: _p(work, "cand", f"p{r:05d}"), f"from{q:05d}.parquet")
    return {"exact": int(ex.sum()), "candidates_with_repeats": int((~ex).sum()), "index_rows": n_index,
            "index_groups": (groups_read, groups_there)}


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
    _write(prov, _p(work, "sets", f"s{s:06d}.parquet"))  # for the keeper pass (sorted by doc)
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


def _lookup_task(task: ShardNo, work: str, n_parts: int, parts: tuple[IndexPart, ...] = ()) -> dict:
    """Members of one shard get their metadata (a lookup by row; an indexed shard's from its
    index) and, where the verify pass computed them, their signature and shingle set; they go
    to their root's partition."""

    s = task.shard
    m = _read(_files(_p(work, "members", f"s{s:06d}")))
    if s >= INDEX_BASE:
        part, i = part_of(list(parts), s)
        meta = _read([part.meta_path(i)])
    else:
        meta = _read([_p(work, "meta", f"s{s:06d}.parquet")])
    d = m["doc"].to_numpy()
    rows = (d & ROW_MASK).astype(np.int64)
    t = meta.take(pa.array(rows))
    t = t.set_column(t.schema.get_field_index("doc"), "doc", m["doc"]).append_column("root", m["root"])
    sets_file = _p(work, "sets", f"s{s:06d}.parquet")
    sets = _read([sets_file]) if storage.exists(sets_file) else None
    if sets is not None and sets.num_rows:
        sd = sets["doc"].to_numpy()
        i = np.minimum(np.searchsorted(sd, d), len(sd) - 1)
        idx = pa.array(i, mask=sd[i] != d)
        t = t.append_column("sig", sets["sig"].take(idx)).append_column("sh", sets["sh"].take(idx))
    else:
        t = t.append_column("sig", pa.nulls(len(d), pa.large_binary())).append_column("sh", pa.nulls(len(d), pa.large_binary()))
    write_partitioned(t, partition_of(m["root"].to_numpy(), n_parts), lambda q: _p(work, "keep", f"p{q:05d}"), f"s{s:06d}.parquet")
    return {}


SIM_BINS = 100  # the precision histogram: similarity of each removed document with its kept partner, in 0.01 bins
SAMPLE_MEMBERS = 50  # a sampled cluster's pairs: all pairs of its first members


@dataclass(frozen=True)
class KeeperParams:
    priority: tuple[str, ...]
    verify: str
    threshold: float
    max_component: int
    max_compare: int
    sample: int
    seed: int


def _share_sets(comp_starts: np.ndarray, exact: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Each member's shingle-set row: its own, else that of a member of its component with the
    same normalised text (exact-only members were never asked for theirs), else -1."""
    n = len(exact)
    comp = np.repeat(np.arange(len(comp_starts) - 1), np.diff(comp_starts))
    order = np.lexsort((~has, exact, comp))
    c, e = comp[order], exact[order]
    new = np.ones(n, bool)
    new[1:] = (c[1:] != c[:-1]) | (e[1:] != e[:-1])
    rep = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    out = np.empty(n, np.int64)
    out[order] = np.where(has[rep], rep, -1)
    return out


def _sample_clusters(gids: np.ndarray, keeper_of: np.ndarray, group_size: np.ndarray, ids: np.ndarray,
                     src: np.ndarray, exact: np.ndarray, sim: np.ndarray, set_of: np.ndarray, off: np.ndarray, vals: np.ndarray, kp: KeeperParams) -> list[dict]:
    """The clusters (by keeper row) with the smallest ``hash01(seed, id)``: every pair of their
    (first ``SAMPLE_MEMBERS``) members checked exactly."""
    if not kp.sample or not len(gids):
        return []
    h = hash01(kp.seed, "dedup-precision-sample", ids[gids].tolist())
    pick = np.argsort(h, kind="stable")[: kp.sample]
    members_of = np.argsort(keeper_of, kind="stable")
    starts = np.searchsorted(keeper_of[members_of], gids[pick])
    out = []
    for g, hv, st in zip(gids[pick], h[pick], starts):
        size = int(group_size[g])
        mem = members_of[st:st + size]  # keeper first (it precedes its duplicates)
        mem = mem[:SAMPLE_MEMBERS]
        jac = all_pair_jaccards(mem, set_of, off, vals)
        a, b = np.triu_indices(len(mem), 1)
        jac = np.where(exact[mem[a]] == exact[mem[b]], 1.0, jac)  # the same normalised text
        known = ~np.isnan(jac)
        out.append({"h": float(hv), "cluster": str(ids[g]), "source": str(src[g]), "size": size,
                    "pairs_checked": int(known.sum()), "pairs_at_least_threshold": int((jac[known] >= kp.threshold).sum()),
                    "min_jaccard": round(float(jac[known].min()), 4) if known.any() else None,
                    "members": [{"id": str(ids[i]), "jaccard_to_keeper": None if i == g else round(float(sim[i]), 4)}
                                for i in mem[:10]]})
    return out


def _keeper_task(task: Part, work: str, kp: KeeperParams, out_dir: str) -> dict:
    """Keeper-verified removal in each component of the partition (``cluster.keeper_verified``):
    decisions per shard, the cluster listing, and the precision figures of the partition."""

    q = task.partition
    t = _read(_files(_p(work, "keep", f"p{q:05d}")))
    if t is None:
        return {"hist": {}, "docs": 0, "fuzzy_clusters": 0}
    rank = {s: i for i, s in enumerate(kp.priority)}
    ids0 = np.asarray(t["id"].to_pylist(), dtype=np.str_)
    src_rank = np.array([rank.get(x, len(rank)) for x in t["source"].to_pylist()])
    src_rank = np.where(t["doc"].to_numpy() >= INDEXED, -1, src_rank)  # indexed documents first: they always win
    score0 = t["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    order = keeper_order(t["root"].to_numpy(), ids0, src_rank, score0)
    t, ids = t.take(pa.array(order)), ids0[order]
    n = t.num_rows
    pinned = t["doc"].to_numpy() >= INDEXED
    comp_starts = _group_starts(t["root"].to_numpy())
    exact = t["exact"].to_numpy()
    off, vals = unpack_binary(t["sh"], np.uint64)  # a member without a set: an empty range
    has = t["sh"].is_valid().to_numpy(zero_copy_only=False)
    if kp.verify == "none":  # no similarity to verify with: every member duplicates its component's keeper
        first = np.repeat(comp_starts[:-1], np.diff(comp_starts))
        partner = np.where((first == np.arange(n)) | pinned, -1, first)
        r = {"partner": partner, "sim": np.full(n, np.nan), "exact": exact == exact[first],
             "capped": np.zeros(n, bool)}
        r["sim"][r["exact"] & (partner >= 0)] = 1.0
        set_of = np.full(n, -1, np.int64)
    else:
        set_of = _share_sets(comp_starts, exact, has)
        sig = None
        if kp.verify == "signature":
            sv = unpack_binary(t["sig"], np.uint32)[1]
            sig = np.zeros((n, len(sv) // max(1, int(has.sum()))), np.uint32)
            sig[has] = sv.reshape(int(has.sum()), -1)
        r = keeper_verified(comp_starts, exact, set_of, sig, off, vals, kp.threshold,
                            use_signature=kp.verify == "signature", max_component=kp.max_component,
                            max_compare=kp.max_compare, pinned=pinned)
    partner, sim = r["partner"], r["sim"]
    removed = partner >= 0
    keeper_of = np.where(removed, partner, np.arange(n))
    group_size = np.bincount(keeper_of, minlength=n)
    size = group_size[keeper_of]
    in_cluster = size >= 2
    src = np.asarray(t["source"].to_pylist(), dtype=object)
    prefix = np.where(r["exact"], "exact_duplicate_of:", "duplicate_of:")
    reason = np.where(removed, np.char.add(prefix, ids[keeper_of]).astype(object), None)
    cluster_ids = ids[keeper_of].astype(object)
    sel = pa.array(np.flatnonzero(in_cluster))
    mine = in_cluster & ~pinned  # decisions for this run's documents only: indexed ones are never rewritten
    doc = t["doc"].to_numpy()[mine]
    sim32 = pa.array(np.where(removed, sim, np.nan).astype(np.float32), from_pandas=True)
    dec = pa.table({"doc": doc, "cluster": pa.array(cluster_ids[mine], pa.string()),
                    "reason": pa.array(reason[mine], pa.string()), "sim": sim32.take(pa.array(np.flatnonzero(mine)))})
    write_partitioned(dec, doc >> np.int64(32), lambda s: _p(work, "decisions", f"s{s:06d}"), f"p{q:05d}.parquet")
    comp_keeper = np.repeat(ids[comp_starts[:-1]], np.diff(comp_starts)).astype(object)
    comp_size = np.repeat(np.diff(comp_starts), np.diff(comp_starts))
    listing = pa.table({"cluster": pa.array(cluster_ids[in_cluster], pa.string()), "id": t["id"].take(sel),
                        "source": t["source"].take(sel), "keeper": ~removed[in_cluster],
                        "reason": pa.array(reason[in_cluster], pa.string()), "size": size[in_cluster],
                        "jaccard": sim32.take(sel), "quality_score": t["score"].take(sel),
                        "component": pa.array(comp_keeper[in_cluster], pa.string()), "component_size": comp_size[in_cluster],
                        "indexed": pinned[in_cluster]}).sort_by([("cluster", "ascending"), ("id", "ascending")])
    storage.write_table(listing, storage.join(out_dir, "clusters", f"clusters-p{q:05d}.parquet"), **PARQUET_OPTIONS)
    is_keeper = ~removed & in_cluster
    fuzzy = len(np.unique(keeper_of[removed & ~r["exact"]]))  # clusters holding a near (not exact) duplicate
    kept_per_comp = np.add.reduceat((~removed).astype(np.int64), comp_starts[:-1]) if n else np.zeros(0, np.int64)
    capped_comp = np.add.reduceat(r["capped"].astype(np.int64), comp_starts[:-1]) > 0 if n else np.zeros(0, bool)
    near = removed & ~r["exact"]
    bins = np.minimum((np.nan_to_num(sim[near]) * SIM_BINS).astype(np.int64), SIM_BINS - 1)
    sample = _sample_clusters(np.flatnonzero(is_keeper), keeper_of, group_size, ids, src, exact, sim, set_of, off, vals, kp)
    return {"hist": {int(k): int(v) for k, v in Counter(size[is_keeper].tolist()).items()},
            "docs": int(in_cluster.sum()), "fuzzy_clusters": int(fuzzy),
            "components": int(len(comp_starts) - 1), "split_components": int((kept_per_comp > 1).sum()),
            "kept_by_verification": int((kept_per_comp - 1).sum()),
            "capped_components": int(capped_comp.sum()), "capped_members": int(r["capped"].sum()),
            "removed_exact": int((removed & r["exact"]).sum()), "removed_near": int(near.sum()),
            "removed_against_index": int((removed & pinned[keeper_of]).sum()),
            "sim_hist": {int(k): int(v) for k, v in zip(*np.unique(bins, return_counts=True))},
            "sample": sample}


# ----------------------------------------------------------------------------- the index (dedup/index.py)

def _index_meta_task(task: ShardNo, work: str, out_dir: str) -> dict:
    """A shard's kept documents' metadata, numbered by their row in its data shard -> the index;
    its removed documents -> ``removed/`` (for the band pass)."""
    s = task.shard
    meta_file = _p(work, "meta", f"s{s:06d}.parquet")
    if not storage.exists(meta_file):
        return {"docs": 0}
    meta = _read([meta_file])
    dec = _read(_files(_p(work, "decisions", f"s{s:06d}")), ["doc", "reason"])
    removed = np.zeros(0, np.int64)
    if dec is not None:
        removed = np.sort(dec.filter(pa.compute.is_valid(dec["reason"]))["doc"].to_numpy())
        if len(removed):
            _write(pa.table({"doc": removed}), _p(work, "removed", f"s{s:06d}.parquet"))
    keep, doc = survivors(meta["doc"].to_numpy(), removed)
    t = meta.filter(pa.array(keep))
    t = t.set_column(0, "doc", pa.array(doc[keep]))
    storage.write_table(t, storage.join(out_dir, "index", "meta", f"s{s:06d}.parquet"), compression="lz4")
    return {"docs": int(t.num_rows)}


def _index_bands_task(task: Part, work: str, out_dir: str) -> dict:
    """A partition's band rows of the kept documents, renumbered and sorted by key -> the index."""
    q = task.partition
    t = _read(_files(_p(work, "bands", f"p{q:05d}")))
    if t is None:
        return {"rows": 0, "bytes": 0}
    rem = _read(_files(_p(work, "removed")))
    removed = np.sort(rem["doc"].to_numpy()) if rem is not None else np.zeros(0, np.int64)
    keep, doc = survivors(t["doc"].to_numpy(), removed)
    t = t.filter(pa.array(keep))
    t = t.set_column(t.schema.get_field_index("doc"), "doc", pa.array(doc[keep])).sort_by("key")
    path = storage.join(out_dir, "index", "bands", f"p{q:05d}.parquet")
    storage.write_table(t, path, **{**WORK_PARQUET, "write_statistics": ["key"]}, row_group_size=BAND_GROUP_ROWS)
    return {"rows": int(t.num_rows), "bytes": int(t.nbytes)}


def build_index(mapper: Callable, work: str, out_dir: str, shards: list[ShardRef], n_parts: int,
                params: DedupConfig, parts: list[str]) -> dict:
    """The run's index (``index/`` beside ``data/``) from the shuffle files still in ``work``;
    returns the manifest's ``index`` entry."""
    res = list(mapper(_index_meta_task, [ShardNo(s.index) for s in shards], fn_kwargs={"work": work, "out_dir": out_dir}))
    bands = list(mapper(_index_bands_task, [Part(q) for q in range(n_parts)], fn_kwargs={"work": work, "out_dir": out_dir}))
    return {"partitions": n_parts, "params": {k: getattr(params, k) for k in MATCHING},
            "shards": [s.name for s in shards], "documents": sum(r["docs"] for r in res),
            "band_rows": sum(r["rows"] for r in bands), "bytes": sum(r["bytes"] for r in bands), "parts": parts}


def lsh_config(d: DedupConfig) -> DedupConfig:
    """The config with its bands x rows resolved."""
    bands, rows = d.lsh_params()
    return d.model_copy(update={"bands": bands, "rows": rows})


# ----------------------------------------------------------------------------- the stage

def n_partitions(n_docs: int, bands: int, given: int | None) -> int:
    """Shuffle partitions from the document count only (never from the workers): ~64 MiB of
    band rows (26 bytes each) per partition, at least 8, a power of two (so that the index
    partitions of runs of other sizes nest: ``key % P``)."""
    if given:
        return given
    n = max(8, math.ceil(n_docs * (bands + 1) * 26 / (64 * 2**20)))
    return 1 << (n - 1).bit_length()


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
        self.rows, self.cluster, self.reason, self.sim = decision_arrays(decisions)
        self.schema, self.first = schema, 0


class ApplyWorker(ShardWorker):
    """The last pass: a shard's kept rows get ``dup_cluster``; its duplicates are rejected."""

    #: small row groups (~0.5 MB of text; +2% file size, full reads ~1.3x slower than 4096 rows,
    #: measured on a 52 MB shard): a run deduplicating against this one's index reads only the
    #: row groups of the indexed documents it has to verify (``shard.read_rows``)
    row_group_rows = 64

    def __init__(self, work: str, keep_text: bool, max_bytes: int):
        self.work, self.keep_text, self.max_bytes = work, keep_text, max_bytes

    def output_schema(self, shard: ShardRef) -> pa.Schema:
        return dedup_schema(storage.parquet_file(shard.path).schema_arrow)

    def open(self, shard: ShardRef) -> _ApplyState:
        dec = _read(_files(_p(self.work, "decisions", f"s{shard.index:06d}")), ["doc", "cluster", "reason", "sim"])
        return _ApplyState(dec, self.output_schema(shard))

    def process(self, batch: pa.Table, st: _ApplyState) -> Processed:
        kept, rejected = apply_table(batch, st.first, st.rows, st.cluster, st.reason, st.sim, st.schema, self.keep_text)
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
    LSH, each candidate checked exactly, and grouped into components. In each component, in keeper
    order (source priority, then quality score, then smallest id), a document is removed only if
    its exact Jaccard with a document already kept is >= the threshold; else it is kept too.
    Within each source by default (dedup.scope: cross_source for all together). Writes
    RUN_DIR/20_dedup (data, rejected with duplicate_of:<id> and the Jaccard as score, clusters,
    and index/ for deduplicating later dumps against this one: dedup.against).

    Examples:

        siftmix dedup configs/demo.yaml

        siftmix dedup configs/gpt3.yaml --workers 32 --force
    """

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "dedup", "dedup": cfg.dedup.model_dump(), "keep_rejected_text": cfg.ingest.keep_rejected_text}

    def input_fingerprint(self, cfg, upstream) -> str:
        """The upstream's output, and the indexes deduplicated against (a changed index reruns)."""
        fp = upstream.manifest["output_fingerprint"]
        if not cfg.dedup.against:
            return fp
        parts = resolve_parts(cfg.dedup.against, lsh_config(cfg.dedup).model_dump())
        return stable_hash([fp, *[(x.stage_dir, x.fingerprint) for x in parts]])

    def order(self, ctx: StageContext, shards: list[ShardRef]) -> list[ShardRef]:
        return shards  # name order (the sign pass groups consecutive shards)

    def prepare(self, ctx: StageContext) -> dict:
        """Every pass up to the keeper decisions (``_work/decisions/<shard>/``)."""
        d = ctx.cfg.dedup
        params = lsh_config(d)
        bands, rows = params.bands, params.rows
        index = tuple(resolve_parts(d.against, params.model_dump())) if d.against else ()
        if index:
            ctx.log(f"dedup: against {len(index)} index(es), {sum(x.documents for x in index):,} indexed documents: "
                    + ", ".join(x.stage_dir for x in index))
        shards = ctx.input_shards()
        n_docs = ctx.upstream.kept
        parts = n_partitions(n_docs, bands if d.fuzzy else 0, d.partitions)
        work = ctx.path("_work")
        allp = [Part(q) for q in range(parts)]
        edges = {"exact": 0, "candidates": 0, "verified": 0}
        with ctx.step("sign"):
            total = sum(s.size for s in shards)
            groups = shard_groups([s.path for s in shards], max(1 << 20, min(32 << 20, total // (4 * ctx.cpus()))))
            tasks = [ShardGroup(tuple(g)) for g in groups]
            tasks += [ShardGroup(())] * max(0, ctx.cpus() - len(tasks))  # warm the workers that would idle
            res = list(ctx.map(_sign_task, tasks, label="sign", docs=lambda r: r["docs"],
                               docs_total=n_docs, fn_kwargs={"params": params, "work": work, "n_parts": parts}))
            n_signed, n_bytes = sum(r["docs"] for r in res), sum(r["bytes"] for r in res)
        ctx.log(f"dedup: {n_signed:,} documents signed ({n_bytes / 1e6:.1f} MB, {ctx.timings['sign_s']:.1f}s); LSH {bands} "
                f"bands x {rows} rows, {sum(r['band_rows'] for r in res):,} bucket rows in {parts} partitions")
        with ctx.step("buckets"):
            res = list(ctx.map(_bucket_task, allp, label="buckets", fn_kwargs={"work": work, "n_parts": parts,
                                                                              "max_bucket": d.max_bucket, "parts": index}))
            edges["exact"] = sum(r["exact"] for r in res)
            if index:  # the index's band rows joined, and its row groups read of those there
                edges["index_rows_read"] = sum(r["index_rows"] for r in res)
                edges["index_band_groups_read"] = sum(r["index_groups"][0] for r in res)
                edges["index_band_groups"] = sum(r["index_groups"][1] for r in res)
            edges["candidates"] = sum(r["candidates"] for r in ctx.map(_pairs_task, allp, fn_kwargs={"work": work}))
        edge_files = _files(_p(work, "edges", "exact"))
        with ctx.step("verify"):
            edge_files += self._verify(ctx, d, params, work, shards, edges, index)
        ctx.log(f"dedup: {edges['exact']:,} exact-duplicate edges, {edges['candidates']:,} LSH candidate pairs, "
                f"{edges['verified']:,} verified ({d.verify}); {ctx.timings['buckets_s'] + ctx.timings['verify_s']:.1f}s")
        n_edges = edges["exact"] + edges["verified"]
        cc = {"method": "none", "rounds": 0, "edges": 0, "nodes": 0}
        with ctx.step("components"):
            if n_edges:
                cc = connected_components(ctx.map, work, edge_files, n_edges, parts, d.single_task_max_edges, ctx.log)
        with ctx.step("keepers"):
            clusters = self._keepers(ctx, work, parts, d, index) if cc["nodes"] else {
                "n_clusters": 0, "documents_in_clusters": 0, "exact_clusters": 0, "size_histogram": {}}
        return {"work": work, "edges": edges, "components": cc, "clusters": clusters, "partitions": parts,
                "bands": bands, "rows": rows, "params": params, "index_parts": index}

    def _verify(self, ctx, d: DedupConfig, params: DedupConfig, work: str, shards: list[ShardRef], edges: dict,
                index: tuple[IndexPart, ...]) -> list[str]:
        """Candidate pairs -> verified edges (files); ``edges`` gets the counts."""
        if not edges["candidates"]:
            return []
        if d.verify == "none":
            edges["verified"] = edges["candidates"]
            return _files(_p(work, "pairs"))
        needed = sorted(int(n[1:]) for n in storage.listdir(_p(work, "needed")) if n.startswith("s"))
        def ref(s: int) -> ShardRef:  # an input shard, or an indexed run's data shard
            if s < INDEX_BASE:
                return shards[s]
            part, i = part_of(list(index), s)
            return ShardRef(path=part.data_path(i), name=part.shards[i], source="", index=s, size=0)

        res = list(ctx.map(_provide_task, [ref(s) for s in needed], label="verify",
                           fn_kwargs={"params": params, "work": work}))
        edges["documents_checked"] = sum(r["docs"] for r in res)
        asked = [Part(int(storage.basename(f)[1:6])) for f in _files(_p(work, "pairs"))]
        res = list(ctx.map(_verify_task, asked, fn_kwargs={"work": work, "mode": d.verify, "threshold": d.threshold,
                                                           "prefilter": d.prefilter}))
        edges["verified"] = sum(r["verified"] for r in res)
        edges["below_prefilter"] = sum(r["below_prefilter"] for r in res)
        return _files(_p(work, "edges", "verified"))

    def _keepers(self, ctx, work: str, parts: int, d: DedupConfig, index: tuple[IndexPart, ...]) -> dict:
        member_shards = sorted(int(n[1:]) for n in storage.listdir(_p(work, "members")) if n.startswith("s"))
        list(ctx.map(_lookup_task, [ShardNo(s) for s in member_shards], fn_kwargs={"work": work, "n_parts": parts,
                                                                                 "parts": index}))
        keep = [Part(int(n[1:])) for n in storage.listdir(_p(work, "keep")) if n.startswith("p")]
        kp = KeeperParams(tuple(d.source_priority), d.verify, d.threshold, d.max_component, d.max_compare,
                          d.sample_clusters, ctx.cfg.seed)
        res = list(ctx.map(_keeper_task, keep, fn_kwargs={"work": work, "kp": kp, "out_dir": ctx.tmp}))
        hist: Counter = Counter()
        sims: Counter = Counter()
        for r in res:
            hist.update({int(k): v for k, v in r["hist"].items()})
            sims.update({int(k): v for k, v in r.get("sim_hist", {}).items()})
        n_cl = sum(hist.values())
        total = {k: sum(r.get(k, 0) for r in res) for k in ("components", "split_components", "kept_by_verification",
                                                            "capped_components", "capped_members", "removed_exact",
                                                            "removed_near", "removed_against_index")}
        sample = sorted((x for r in res for x in r.get("sample", [])), key=lambda x: (x["h"], x["cluster"]))[:d.sample_clusters]
        for x in sample:
            x.pop("h")
        precision = {
            "rule": d.verify if d.verify != "none" else "none (components, unverified)",
            **total,
            "similarity_histogram": {f"{k / SIM_BINS:.2f}": v for k, v in sorted(sims.items())},
            "sample": sample,
            "sample_pairs_checked": sum(x["pairs_checked"] for x in sample),
            "sample_pairs_at_least_threshold": sum(x["pairs_at_least_threshold"] for x in sample),
        }
        return {"n_clusters": n_cl, "documents_in_clusters": sum(r["docs"] for r in res),
                "exact_clusters": n_cl - sum(r["fuzzy_clusters"] for r in res),
                "size_histogram": {str(k): v for k, v in sorted(hist.items())}, "precision": precision}

    def worker(self, ctx: StageContext, p: dict) -> ApplyWorker:
        return ApplyWorker(p["work"], ctx.cfg.ingest.keep_rejected_text, ctx.cfg.ingest.shard_max_bytes)

    def finish(self, ctx: StageContext, results: list[ShardResult], p: dict) -> dict:
        d = ctx.cfg.dedup
        index = None
        if d.index:
            with ctx.step("index"):
                index = build_index(ctx.map, p["work"], ctx.tmp, ctx.input_shards(), p["partitions"], p["params"],
                                    [x.stage_dir for x in p["index_parts"]] if d.update_index else [])
            ctx.log(f"dedup: index of {index['documents']:,} documents, {index['band_rows']:,} band rows "
                    f"({index['bytes'] / 1e6:.1f} MB); {ctx.timings['index_s']:.1f}s")
        storage.remove(p["work"])
        counts, clusters = summarize(results), p["clusters"]
        if "precision" in clusters:
            clusters["precision"]["removal_rate_by_source"] = {
                src: round(c["rejected"] / c["in"], 6) if c["in"] else 0.0 for src, c in sorted(counts["by_source"].items())}
        if counts["rejected"] != clusters["documents_in_clusters"] - clusters["n_clusters"]:
            raise StageError(f"dedup: {counts['rejected']} rejected but {clusters['documents_in_clusters']} documents in "
                             f"{clusters['n_clusters']} clusters")
        out = {"config": {"dedup": ctx.cfg.dedup.model_dump(), "bands": p["bands"], "rows": p["rows"]},
               "counts": counts, "edges": p["edges"], "components": p["components"], "clusters": clusters,
               "partitions": p["partitions"], "files": [r.to_json() for r in results]}
        if index is not None:
            out["index"] = index
        if p["index_parts"]:
            out["against"] = [{"stage_dir": x.stage_dir, "documents": x.documents, "fingerprint": x.fingerprint}
                              for x in p["index_parts"]]
        return out

    def run(self, ctx: StageContext) -> dict:
        p = self.prepare(ctx)
        with ctx.step("apply"):
            results = ctx.map_shards(self.worker(ctx, p), ctx.input_shards(), label="write")
        return self.finish(ctx, results, p)

    def summary(self, m: dict, out_dir: str) -> str:
        c = m["counts"]
        return (f"dedup: {c['in']} documents -> {c['kept']} kept, {c['rejected']} rejected ({reasons_text(c)}); "
                f"{m['clusters']['n_clusters']} clusters" + (
                    f", {m['clusters']['precision']['kept_by_verification']} kept by keeper verification"
                    if m["clusters"].get("precision") else "") + f"; {m['timings']['wall_s']:.1f}s")

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
        out = "<h3>Duplicate clusters</h3>" + summary
        if sizes:
            out += column_chart([str(s) for s, _ in sizes],
                                [Series("clusters", [v for _, v in sizes], [f"{v:,} clusters of {s} documents" for s, v in sizes])],
                                x_label="cluster size (documents)", y_label="clusters", svg_id="dedup-sizes")
        return out + self._precision_report(m)

    @staticmethod
    def _precision_report(m: dict) -> str:
        """How precise the removal was: the rule, what verification kept, the similarity of each
        removed document with its kept partner, removal rates per source, the checked sample."""
        p = (m.get("clusters") or {}).get("precision")
        if not p:
            return ""
        t = m["config"]["dedup"]["threshold"]
        head = table(["rule", "removed: exact", "removed: near", "components", "split by verification",
                      "kept by verification", "capped components (members)"], [
            f'<tr><td>{esc(p["rule"])}, threshold {t}</td><td{k("dedup.removed_exact")}>{n(p["removed_exact"])}</td>'
            f'<td{k("dedup.removed_near")}>{n(p["removed_near"])}</td><td>{n(p["components"])}</td>'
            f'<td>{n(p["split_components"])}</td><td{k("dedup.kept_by_verification")}>{n(p["kept_by_verification"])}</td>'
            f'<td{k("dedup.capped_components")}>{n(p["capped_components"])} ({n(p["capped_members"])})</td></tr>'])
        out = ("<h3>Dedup precision</h3><p>A document is removed only when its similarity with a document already "
               "kept in its component is at least the threshold; a member with no such kept partner is kept "
               "(<em>kept by verification</em>: documents that connected components alone would have removed).</p>" + head)
        hist = p.get("similarity_histogram") or {}
        if hist:
            labels = list(hist)
            out += column_chart(labels, [Series("removed near-duplicates", list(hist.values()),
                                                [f"{v:,} removed with similarity {x}-{float(x) + 0.01:.2f}" for x, v in hist.items()])],
                                x_label="exact Jaccard with the kept partner", y_label="documents", svg_id="dedup-similarity")
        rows = [f'<tr><td>{esc(s)}</td><td>{n(c["in"])}</td><td>{n(c["rejected"])}</td><td>{pct(c["rejected"], c["in"])}</td></tr>'
                for s, c in sorted(m["counts"].get("by_source", {}).items())]
        out += "<h4>Removal rate per source</h4>" + table(["source", "in", "removed", "rate"], rows)
        sample = p.get("sample") or []
        if sample:
            rows = [f'<tr><td>{esc(x["cluster"])}</td><td>{esc(x["source"])}</td><td>{n(x["size"])}</td>'
                    f'<td>{n(x["pairs_checked"])}</td><td>{n(x["pairs_at_least_threshold"])}</td>'
                    f'<td>{"-" if x["min_jaccard"] is None else x["min_jaccard"]}</td></tr>' for x in sample]
            out += (f"<h4>A seeded sample of {len(sample)} clusters, every pair checked exactly</h4>"
                    f'<p{k("dedup.sample_pairs")}>{n(p["sample_pairs_at_least_threshold"])} of {n(p["sample_pairs_checked"])} '
                    f"pairs at or above the threshold (pairs of two removed members need not be).</p>"
                    + table(["cluster (keeper)", "source", "size", "pairs checked", "pairs >= threshold", "min Jaccard"], rows))
        return out


DEDUP = DedupStage()
