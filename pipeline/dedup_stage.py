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

import glob
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from .config import RunConfig, stable_hash
from .ray_runner import Progress, map_tasks
from .stage import stage_output

ROW_MASK = np.int64(0xFFFFFFFF)
#: the stage's own shuffle files: hashes neither compress nor dictionary-encode, so neither is tried
WORK_PARQUET = dict(compression="none", use_dictionary=False, write_statistics=False)


# ----------------------------------------------------------------------------- file shuffle helpers

def _files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*.parquet")))


def _read(files: list[str], columns: list[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables) if tables else None


def partition_of(values: np.ndarray, n: int) -> np.ndarray:
    """Partition of each int64/uint64 key: a 64-bit mix, modulo n (stable across runs)."""
    from siftmix.dedup.lsh import mix64

    return (mix64(values.astype(np.int64).view(np.uint64)) % np.uint64(n)).astype(np.int64)


def write_partitioned(table, part: np.ndarray, folder_of: Callable[[int], str], name: str) -> int:
    """Write ``table``'s rows to ``folder_of(p)/name`` for each partition p present."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table.num_rows == 0:
        return 0
    order = np.argsort(part, kind="stable")
    table = table.take(pa.array(order))
    part = part[order]
    bounds = np.flatnonzero(np.r_[True, part[1:] != part[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        d = folder_of(int(part[a]))
        os.makedirs(d, exist_ok=True)
        pq.write_table(table.slice(a, b - a), os.path.join(d, name), **WORK_PARQUET)
    return len(bounds) - 1


def _p(work: str, *parts) -> str:
    return os.path.join(work, *map(str, parts))


# ----------------------------------------------------------------------------- the passes (Ray tasks)

def _sign_task(task: dict, params: dict, work: str, n_parts: int) -> dict:
    """A group of input shards: band rows to ``bands/p<q>/`` (one file per group and partition),
    metadata to ``meta/<shard>``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.shard import BAND_SCHEMA, DedupParams, sign_table

    p = DedupParams(**params)
    bands, docs, nbytes = [], 0, 0
    os.makedirs(_p(work, "meta"), exist_ok=True)
    for s, path in task["shards"]:
        pf = pq.ParquetFile(path)
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
            pq.write_table(pa.concat_tables(metas), _p(work, "meta", f"s{s:06d}.parquet"), compression="lz4")
        docs += rows
    band = pa.concat_tables(bands) if bands else BAND_SCHEMA.empty_table()
    keys = band["key"].to_numpy()
    write_partitioned(band, (keys % np.uint64(n_parts)).astype(np.int64), lambda q: _p(work, "bands", f"p{q:05d}"),
                      f"s{task['shards'][0][0]:06d}.parquet")
    return {"docs": docs, "bytes": nbytes, "band_rows": band.num_rows}


def shard_groups(shards: list[str], target_bytes: int = 32 * 2**20) -> list[list[tuple[int, str]]]:
    """Consecutive input shards grouped into tasks of about ``target_bytes`` (many small shards,
    e.g. one per book, cost a task and a file per partition each); big shards stay alone."""
    groups, cur, size = [], [], 0
    for i, f in enumerate(shards):
        cur.append((i, f))
        size += os.path.getsize(f)
        if size >= target_bytes:
            groups.append(cur)
            cur, size = [], 0
    return groups + ([cur] if cur else [])


def _bucket_task(task: dict, work: str, n_parts: int, max_bucket: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.cluster import bucket_candidates

    q = task["partition"]
    t = _read(_files(_p(work, "bands", f"p{q:05d}")))
    if t is None:
        return {"exact": 0, "candidates_with_repeats": 0}
    a, b, k = bucket_candidates(t["key"].to_numpy(), t["band"].to_numpy(), t["doc"].to_numpy(), t["exact"].to_numpy(),
                                max_bucket=max_bucket)
    ex = k == 0
    if ex.any():
        os.makedirs(_p(work, "edges", "exact"), exist_ok=True)
        pq.write_table(pa.table({"a": a[ex], "b": b[ex]}), _p(work, "edges", "exact", f"p{q:05d}.parquet"), **WORK_PARQUET)
    cand = pa.table({"a": a[~ex], "b": b[~ex]})
    write_partitioned(cand, partition_of(a[~ex], n_parts), lambda r: _p(work, "cand", f"p{r:05d}"), f"from{q:05d}.parquet")
    return {"exact": int(ex.sum()), "candidates_with_repeats": int((~ex).sum())}


def _pairs_task(task: dict, work: str) -> dict:
    """Unique candidate pairs of a partition; ask their documents' shards for them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.cluster import unique_edges

    q = task["partition"]
    t = _read(_files(_p(work, "cand", f"p{q:05d}")))
    if t is None:
        return {"candidates": 0}
    a, b, _ = unique_edges(t["a"].to_numpy(), t["b"].to_numpy())
    os.makedirs(_p(work, "pairs"), exist_ok=True)
    pq.write_table(pa.table({"a": a, "b": b}), _p(work, "pairs", f"p{q:05d}.parquet"), **WORK_PARQUET)
    docs = np.unique(np.concatenate([a, b]))
    write_partitioned(pa.table({"doc": docs}), docs >> np.int64(32), lambda s: _p(work, "needed", f"s{s:06d}"), f"p{q:05d}.parquet")
    return {"candidates": int(len(a))}


def _provide_task(task: dict, params: dict, work: str) -> dict:
    """Signatures and shingle sets of the documents of one shard that partitions asked for,
    computed once, sent to each asking partition."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.shard import DedupParams, provide_table

    s = task["shard"]
    asks = {int(os.path.basename(f)[1:6]): f for f in _files(_p(work, "needed", f"s{s:06d}"))}
    need = {q: _read([f])["doc"].to_numpy() for q, f in asks.items()}
    docs = np.unique(np.concatenate(list(need.values())))
    prov = provide_table(task["path"], docs, DedupParams(**params))
    for q, d in need.items():
        sub = prov.take(pa.array(np.searchsorted(docs, d)))
        os.makedirs(_p(work, "provided", f"p{q:05d}"), exist_ok=True)
        pq.write_table(sub, _p(work, "provided", f"p{q:05d}", f"s{s:06d}.parquet"), **WORK_PARQUET)
    return {"docs": int(len(docs))}


def _verify_task(task: dict, work: str, mode: str, threshold: float, prefilter: float) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.cluster import verify_pairs
    from siftmix.dedup.shard import gather_sets

    q = task["partition"]
    pairs = _read([_p(work, "pairs", f"p{q:05d}.parquet")])
    prov = _read(_files(_p(work, "provided", f"p{q:05d}"))).sort_by("doc")
    docs = prov["doc"].to_numpy()
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    ia, ib = np.searchsorted(docs, a), np.searchsorted(docs, b)
    est, jac = verify_pairs(*gather_sets(prov), ia, ib)
    keep = est >= (prefilter if mode == "exact" else threshold)
    if mode == "exact":
        keep &= jac >= threshold
    os.makedirs(_p(work, "edges", "verified"), exist_ok=True)
    pq.write_table(pa.table({"a": a[keep], "b": b[keep], "est": est[keep], "jaccard": jac[keep]}),
                   _p(work, "edges", "verified", f"p{q:05d}.parquet"), **WORK_PARQUET)
    return {"verified": int(keep.sum()), "below_prefilter": int((est < prefilter).sum())}


def _members_out(work: str, doc: np.ndarray, root: np.ndarray, name: str) -> None:
    import pyarrow as pa

    write_partitioned(pa.table({"doc": doc, "root": root}), doc >> np.int64(32), lambda s: _p(work, "members", f"s{s:06d}"), name)


def _components_task(task: dict, work: str) -> dict:
    from siftmix.dedup.cluster import components_min_label

    t = _read(task["files"], ["a", "b"])
    nodes, root = components_min_label(t["a"].to_numpy(), t["b"].to_numpy())
    _members_out(work, nodes, root, "p00000.parquet")
    return {"nodes": int(len(nodes)), "edges": int(t.num_rows)}


def _double_task(task: dict, work: str, n_parts: int) -> dict:
    import pyarrow as pa

    t = _read([task["file"]], ["a", "b"])
    a, b = t["a"].to_numpy(), t["b"].to_numpy()
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    write_partitioned(pa.table({"u": u, "v": v}), partition_of(u, n_parts), lambda p: _p(work, "cc", "r0000", f"p{p:05d}"),
                      f"{task['name']}.parquet")
    return {}


def _large_star_task(task: dict, work: str, n_parts: int) -> dict:
    """Round r: count the partition's nodes that are not yet in a star, and large-star it."""
    import pyarrow as pa
    from siftmix.dedup.cluster import large_star, star_violations, unique_edges

    r, p = task["round"], task["partition"]
    t = _read(_files(_p(work, "cc", f"r{r:04d}", f"p{p:05d}")))
    if t is None:
        return {"violations": 0, "edges": 0}
    u, v, _ = unique_edges(t["u"].to_numpy(), t["v"].to_numpy())
    left = star_violations(u, v)
    x, y = large_star(u, v)  # always: another partition may need a next round
    write_partitioned(pa.table({"u": x, "v": y}), partition_of(x, n_parts),
                      lambda k: _p(work, "cc", f"r{r:04d}ls", f"p{k:05d}"), f"from{p:05d}.parquet")
    return {"violations": left, "edges": int(len(u))}


def _small_star_task(task: dict, work: str, n_parts: int) -> dict:
    import pyarrow as pa
    from siftmix.dedup.cluster import small_star

    r, p = task["round"], task["partition"]
    t = _read(_files(_p(work, "cc", f"r{r:04d}ls", f"p{p:05d}")))
    if t is None:
        return {}
    x, y = small_star(t["u"].to_numpy(), t["v"].to_numpy())
    u, v = np.concatenate([x, y]), np.concatenate([y, x])
    write_partitioned(pa.table({"u": u, "v": v}), partition_of(u, n_parts),
                      lambda k: _p(work, "cc", f"r{r + 1:04d}", f"p{k:05d}"), f"from{p:05d}.parquet")
    return {}


def _star_members_task(task: dict, work: str) -> dict:
    """A star forest's partition -> (doc, root): a leaf's root is its one smaller neighbour."""
    from siftmix.dedup.cluster import unique_edges

    r, p = task["round"], task["partition"]
    t = _read(_files(_p(work, "cc", f"r{r:04d}", f"p{p:05d}")))
    if t is None:
        return {"nodes": 0}
    u, v, _ = unique_edges(t["u"].to_numpy(), t["v"].to_numpy())
    d, i = np.unique(u, return_index=True)
    root = np.minimum(d, v[i])  # sorted by (u, v): v[i] is u's smallest neighbour
    _members_out(work, d, root, f"p{p:05d}.parquet")
    return {"nodes": int(len(d))}


def _lookup_task(task: dict, work: str, n_parts: int) -> dict:
    """Members of one shard get their metadata (a lookup by row) and go to their root's partition."""
    import pyarrow as pa

    s = task["shard"]
    m = _read(_files(_p(work, "members", f"s{s:06d}")))
    meta = _read([_p(work, "meta", f"s{s:06d}.parquet")])
    rows = (m["doc"].to_numpy() & ROW_MASK).astype(np.int64)
    t = meta.take(pa.array(rows)).append_column("root", m["root"])
    write_partitioned(t, partition_of(m["root"].to_numpy(), n_parts), lambda q: _p(work, "keep", f"p{q:05d}"), f"s{s:06d}.parquet")
    return {}


def _keeper_task(task: dict, work: str, priority: list[str], out_dir: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.cluster import choose_keepers
    from siftmix.pipeline.shards import PARQUET_OPTIONS

    q = task["partition"]
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
    os.makedirs(os.path.join(out_dir, "clusters"), exist_ok=True)
    pq.write_table(listing, os.path.join(out_dir, "clusters", f"clusters-p{q:05d}.parquet"), **PARQUET_OPTIONS)
    fuzzy = len(np.unique(keeper_ids[~is_keeper & ~r["exact"]]))  # clusters holding a near (not exact) duplicate
    hist = Counter(r["size"][is_keeper].tolist())
    return {"hist": {int(k): int(v) for k, v in hist.items()}, "docs": int(t.num_rows), "fuzzy_clusters": int(fuzzy)}


def _apply_task(task: dict, work: str, out_dir: str, keep_text: bool, max_bytes: int) -> dict:
    from siftmix.dedup.shard import apply_shard

    out = []
    for s, path in task["shards"]:
        dec = _read(_files(_p(work, "decisions", f"s{s:06d}")), ["doc", "cluster", "reason"])
        out.append(apply_shard(path, s, dec, out_dir, keep_text, max_bytes))
    return {"results": out, "docs_in": sum(r["docs_in"] for r in out)}


# ----------------------------------------------------------------------------- the stage

def dedup_config_hash(cfg: RunConfig) -> str:
    return stable_hash({"stage": "dedup", "dedup": cfg.dedup.model_dump(), "keep_rejected_text": cfg.ingest.keep_rejected_text})


def n_partitions(n_docs: int, bands: int, given: int | None) -> int:
    """Shuffle partitions from the document count only (never from the workers): ~64 MiB of
    band rows (26 bytes each) per partition, at least 8."""
    return given or max(8, math.ceil(n_docs * (bands + 1) * 26 / (64 * 2**20)))


class _Step:
    """Times a pass and turns a failure inside a Ray task into one line for the user."""

    def __init__(self, name: str, timings: dict):
        self.name, self.timings = name, timings

    def __enter__(self):
        self.t0 = time.time()
        return self

    def __exit__(self, typ, err, tb):
        self.timings[f"{self.name}_s"] = round(time.time() - self.t0, 3)
        from .ray_runner import TaskError
        from .runner import StageError

        if isinstance(err, TaskError):
            raise StageError(f"dedup: the {self.name} pass failed: {err}") from err
        return False


def connected_components(work: str, edge_files: list[str], n_edges: int, n_parts: int, single_max: int, workers,
                         log: Callable[[str], None]) -> dict:
    """Components of the edges in ``edge_files`` -> ``work/members/<shard>/``."""
    if n_edges <= single_max:
        (r,) = list(map_tasks(_components_task, [{"files": edge_files}], fn_kwargs={"work": work}))
        return {"method": "single_task", "rounds": 1, **r}
    kw = {"work": work, "n_parts": n_parts}
    list(map_tasks(_double_task, [{"file": f, "name": f"e{i:06d}"} for i, f in enumerate(edge_files)], workers=workers, fn_kwargs=kw))
    r = 0
    while True:
        res = list(map_tasks(_large_star_task, [{"round": r, "partition": p} for p in range(n_parts)], workers=workers, fn_kwargs=kw))
        left = sum(x["violations"] for x in res)
        log(f"dedup: components round {r + 1}: {sum(x['edges'] for x in res):,} directed edges, "
            f"{left:,} nodes not yet in a star")
        if left == 0:
            break
        list(map_tasks(_small_star_task, [{"round": r, "partition": p} for p in range(n_parts)], workers=workers, fn_kwargs=kw))
        shutil.rmtree(_p(work, "cc", f"r{r:04d}"), ignore_errors=True)
        shutil.rmtree(_p(work, "cc", f"r{r:04d}ls"), ignore_errors=True)
        r += 1
        if r > 200:
            raise RuntimeError("connected components did not converge in 200 rounds")
    res = list(map_tasks(_star_members_task, [{"round": r, "partition": p} for p in range(n_parts)], workers=workers,
                         fn_kwargs={"work": work}))
    return {"method": "large_star_small_star", "rounds": r + 1, "edges": int(n_edges), "nodes": sum(x["nodes"] for x in res)}


def run_dedup(cfg: RunConfig, *, force: bool = False, workers: int | None = None, console=None,
              log: Callable[[str], None] = print, progress: bool = True) -> dict:
    import ray
    from siftmix.dedup.shard import DedupParams

    from .runner import StageError, finished, shard_sources, stage_dir, stage_input, summarize

    prev, in_dir, m_in = stage_input(cfg, "dedup")
    out_dir = stage_dir(cfg, "dedup")
    chash, fp = dedup_config_hash(cfg), m_in["output_fingerprint"]
    if m := finished("dedup", out_dir, chash, fp, force, log):
        return m
    d = cfg.dedup
    bands, rows = d.lsh_params()
    params = DedupParams(ngram=d.ngram, num_perm=d.num_perm, seed=d.seed, scheme=d.scheme, hash=d.hash, bands=bands,
                         rows=rows, scope=d.scope, exact=d.exact, fuzzy=d.fuzzy, batch_rows=d.batch_rows).to_dict()
    workers = workers or cfg.ray.workers
    shards = [os.path.join(in_dir, "data", f) for f in sorted(shard_sources(m_in))]
    parts = n_partitions(m_in["counts"]["kept"], bands if d.fuzzy else 0, d.partitions)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    timings: dict[str, float] = {}
    edge_stats = {"exact": 0, "candidates": 0, "verified": 0}

    def run(fn, tasks, label=None, docs_key=None, **kw):
        bar = Progress(f"dedup: {label}", len(tasks), console=console, enabled=progress and label is not None, unit="tasks",
                       docs_total=m_in["counts"]["kept"] if docs_key else None)
        try:
            for r in map_tasks(fn, tasks, workers=workers, fn_kwargs=kw):
                bar.advance(docs=r.get(docs_key, 0) if docs_key else 0)
                yield r
        finally:
            bar.close()

    with stage_output(out_dir) as out:
        work = out.path("_work")
        allp = [{"partition": q} for q in range(parts)]
        with _Step("sign", timings):
            groups = shard_groups(shards, max(1 << 20, min(32 << 20, sum(map(os.path.getsize, shards)) // (4 * cpus))))
            res = list(run(_sign_task, [{"shards": g} for g in groups], "sign", "docs",
                           params=params, work=work, n_parts=parts))
            n_docs, n_bytes = sum(r["docs"] for r in res), sum(r["bytes"] for r in res)
        log(f"dedup: {n_docs:,} documents signed ({n_bytes / 1e6:.1f} MB, {timings['sign_s']:.1f}s); LSH {bands} bands x "
            f"{rows} rows, {sum(r['band_rows'] for r in res):,} bucket rows in {parts} partitions")
        with _Step("buckets", timings):
            res = list(run(_bucket_task, allp, "buckets", work=work, n_parts=parts, max_bucket=d.max_bucket))
            edge_stats["exact"] = sum(r["exact"] for r in res)
            res = list(run(_pairs_task, allp, None, work=work))
            edge_stats["candidates"] = sum(r["candidates"] for r in res)
        edge_files = _files(_p(work, "edges", "exact"))
        with _Step("verify", timings):
            if edge_stats["candidates"] and d.verify == "none":
                edge_files += _files(_p(work, "pairs"))
                edge_stats["verified"] = edge_stats["candidates"]
            elif edge_stats["candidates"]:
                needed = sorted(int(os.path.basename(x)[1:]) for x in glob.glob(_p(work, "needed", "s*")))
                res = list(run(_provide_task, [{"path": shards[s], "shard": s} for s in needed], "verify",
                               params=params, work=work))
                edge_stats["documents_checked"] = sum(r["docs"] for r in res)
                asked = [{"partition": int(os.path.basename(f)[1:6])} for f in _files(_p(work, "pairs"))]
                res = list(run(_verify_task, asked, None, work=work, mode=d.verify, threshold=d.threshold, prefilter=d.prefilter))
                edge_stats["verified"] = sum(r["verified"] for r in res)
                edge_stats["below_prefilter"] = sum(r["below_prefilter"] for r in res)
                edge_files += _files(_p(work, "edges", "verified"))
        log(f"dedup: {edge_stats['exact']:,} exact-duplicate edges, {edge_stats['candidates']:,} LSH candidate pairs, "
            f"{edge_stats['verified']:,} verified ({d.verify}); {timings['buckets_s'] + timings['verify_s']:.1f}s")
        n_edges = edge_stats["exact"] + edge_stats["verified"]
        cc = {"method": "none", "rounds": 0, "edges": 0, "nodes": 0}
        clusters = {"n_clusters": 0, "documents_in_clusters": 0, "exact_clusters": 0, "size_histogram": {}}
        with _Step("components", timings):
            if n_edges:
                cc = connected_components(work, edge_files, n_edges, parts, d.single_task_max_edges, workers, log)
        with _Step("keepers", timings):
            if cc["nodes"]:
                member_shards = sorted(int(os.path.basename(x)[1:]) for x in glob.glob(_p(work, "members", "s*")))
                list(run(_lookup_task, [{"shard": s} for s in member_shards], None, work=work, n_parts=parts))
                res = list(run(_keeper_task, [{"partition": int(os.path.basename(x)[1:])} for x in sorted(glob.glob(_p(work, "keep", "p*")))],
                               None, work=work, priority=d.source_priority, out_dir=out.tmp))
                hist: Counter = Counter()
                for r in res:
                    hist.update({int(k): v for k, v in r["hist"].items()})
                n_cl = sum(hist.values())
                clusters = {"n_clusters": n_cl, "documents_in_clusters": sum(r["docs"] for r in res),
                            "exact_clusters": n_cl - sum(r["fuzzy_clusters"] for r in res),
                            "size_histogram": {str(k): v for k, v in sorted(hist.items())}}
        with _Step("apply", timings):
            results = [r for x in run(_apply_task, [{"shards": g} for g in groups], "write", "docs_in",
                               work=work, out_dir=out.tmp, keep_text=cfg.ingest.keep_rejected_text,
                               max_bytes=cfg.ingest.shard_max_bytes) for r in x["results"]]
        shutil.rmtree(work, ignore_errors=True)
        results.sort(key=lambda r: r["file"])
        counts = summarize(results)
        if counts["in"] != counts["kept"] + counts["rejected"] or counts["in"] != m_in["counts"]["kept"]:
            raise StageError(f"dedup: counts do not add up ({m_in['counts']['kept']} from {prev}, {counts['in']} in, "
                             f"{counts['kept']} kept, {counts['rejected']} rejected)")
        if counts["rejected"] != clusters["documents_in_clusters"] - clusters["n_clusters"]:
            raise StageError(f"dedup: {counts['rejected']} rejected but {clusters['documents_in_clusters']} documents in "
                             f"{clusters['n_clusters']} clusters")
        manifest = out.commit({
            "stage": "dedup", "config_hash": chash, "input_fingerprint": fp, "input_stage": prev,
            "config": {"dedup": d.model_dump(), "bands": bands, "rows": rows},
            "counts": counts, "edges": edge_stats, "components": cc, "clusters": clusters,
            "partitions": parts, "timings": timings, "files": results,
        })
    log(f"dedup: {counts['in']} documents -> {counts['kept']} kept, {counts['rejected']} rejected "
        f"({', '.join(f'{k} {v}' for k, v in counts['rejected_by_reason'].items()) or 'none'}); "
        f"{clusters['n_clusters']} clusters; {manifest['timings']['wall_s']:.1f}s")
    return manifest
