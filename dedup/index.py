"""The dedup index a run persists, and incremental dedup of new data against such indexes.

A dedup run with ``dedup.index: true`` (the default) writes, inside its committed attempt,
``index/`` over its survivors (the documents of its ``data/`` shards):

- ``index/bands/p<q>.parquet``: the LSH band rows and the exact-hash rows (band ``-1``) of every
  kept document, ``(key, band, doc, exact)``, partitioned like the buckets (``key % P``, P a
  power of two) and sorted by key; ``doc`` = ``shard << 32 | row`` of the document in
  ``data/<shard name>.parquet``.
- ``index/meta/s<shard>.parquet``: ``(doc, id, source, score, exact)`` of the kept documents.
- the manifest's ``index`` entry: partitions, the LSH parameters, the shard names, counts, and
  the earlier indexes it extends (``parts``; ``dedup.update_index``).

Signatures and shingle sets are not stored: a candidate pair with an indexed document is
verified by reading that document's text from the indexed ``data/`` shard (only the row groups
that hold it) and computing both, as for the run's own documents.

``dedup.against: [RUN_DIR or its 20_dedup folder, ...]`` deduplicates a new input against those
indexes (and the earlier indexes each one extends): indexed documents get shard numbers from
``INDEX_BASE`` up, take part in buckets, verification, components and keeper choice, always
win, and are never removed or rewritten. A bucket partition of the new run reads only the index
partitions that can hold its keys, and keeps only index rows whose key the new data has, so the
work grows with the new data (and the index partitions it touches), not with the whole index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import ConfigError
from siftmix.pipeline.core.manifest import read_manifest, stage_path

#: shard numbers of indexed documents start here (a new input has fewer shards)
INDEX_BASE = 1 << 24
ROW_MASK = np.int64(0xFFFFFFFF)
#: the settings that must be equal for two runs' band keys and exact hashes to be comparable
MATCHING = ("exact", "fuzzy", "ngram", "num_perm", "seed", "hash", "scheme", "scope", "bands", "rows")


@dataclass(frozen=True)
class IndexPart:
    """One indexed dedup run, as this run numbers it."""

    stage_dir: str  # RUN_DIR/20_dedup of the indexed run
    root: str  # its committed attempt folder
    partitions: int
    shards: tuple[str, ...]  # data shard names, in index shard order
    offset: int  # this run's shard number of the part's shard 0
    fingerprint: str
    documents: int

    def data_path(self, i: int) -> str:
        return storage.join(self.root, "data", self.shards[i] + ".parquet")

    def meta_path(self, i: int) -> str:
        return storage.join(self.root, "index", "meta", f"s{i:06d}.parquet")

    def band_files(self, q: int, n_parts: int) -> tuple[list[str], bool]:
        """The part's band files that can hold keys of partition ``q`` of ``n_parts`` (both
        powers of two), and whether their rows still need filtering by ``key % n_parts``."""
        if self.partitions >= n_parts:
            return [self._bands(p) for p in range(q, self.partitions, n_parts)], False
        return [self._bands(q % self.partitions)], True

    def _bands(self, p: int) -> str:
        return storage.join(self.root, "index", "bands", f"p{p:05d}.parquet")


def index_stage_dir(path: str) -> str:
    """A run dir or its dedup folder -> the dedup folder (``ConfigError`` when it is neither)."""
    for d in (path, storage.join(path, "20_dedup")):
        m = read_manifest(d)
        if m and m.get("stage") == "dedup":
            return d
    raise ConfigError(f"dedup.against: {path} is not a run dir or dedup folder with a finished dedup stage")


def resolve_parts(against: list[str], params: dict) -> list[IndexPart]:
    """The indexes ``against`` names, each followed by the earlier indexes it extends (each once),
    numbered from ``INDEX_BASE``; their LSH settings must equal ``params``."""
    seen: dict[str, None] = {}

    def visit(d: str) -> None:
        d = d.rstrip("/")
        if d in seen:
            return
        seen[d] = None
        m = read_manifest(d)
        for p in (m.get("index") or {}).get("parts", []):
            visit(p)

    for a in against:
        visit(index_stage_dir(a))
    parts, offset = [], INDEX_BASE
    for d in seen:
        m = read_manifest(d)
        idx = m.get("index") if m else None
        if not idx:
            raise ConfigError(f"dedup.against: {d} has no index (it ran with dedup.index: false); rerun its dedup stage "
                              "with dedup.index: true")
        diff = {k: (idx["params"].get(k), params.get(k)) for k in MATCHING if idx["params"].get(k) != params.get(k)}
        if diff:
            what = ", ".join(f"{k}: {a!r} there, {b!r} here" for k, a, b in ((k, *v) for k, v in diff.items()))
            raise ConfigError(f"dedup.against: {d} was indexed with other LSH settings ({what}); "
                              "the keys would not match")
        parts.append(IndexPart(d, stage_path(d, m, ""), int(idx["partitions"]), tuple(idx["shards"]), offset,
                               m["output_fingerprint"], int(idx["documents"])))
        offset += len(idx["shards"])
    return parts


def part_of(parts: list[IndexPart], shard: int) -> tuple[IndexPart, int]:
    """(part, its own shard number) of a shard number of this run at or above ``INDEX_BASE``."""
    for p in reversed(parts):
        if shard >= p.offset:
            return p, shard - p.offset
    raise KeyError(shard)


def renumber(doc: np.ndarray, offset: int) -> np.ndarray:
    """A part's document numbers (``shard << 32 | row``) -> this run's (shard + offset)."""
    return ((doc >> np.int64(32)) + np.int64(offset)) << np.int64(32) | (doc & ROW_MASK)


#: rows per row group of the index's band files (sorted by key, with key statistics): a lookup
#: reads only the groups whose key range holds a key of the new data
BAND_GROUP_ROWS = 4096


def key_groups(mins: np.ndarray, maxs: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices of the row groups (key ranges [mins[g], maxs[g]]) that hold at least one of
    ``keys`` (sorted)."""
    return np.flatnonzero(np.searchsorted(keys, mins, side="left") < np.searchsorted(keys, maxs, side="right"))


def read_key_groups(path: str, keys: np.ndarray) -> tuple[pa.Table | None, int, int]:
    """(the rows of the row groups of a band file whose key range holds one of ``keys`` (sorted),
    the groups read, the groups in the file). A file without key statistics (an index written
    before they were) is read whole."""
    pf = storage.parquet_file(path)
    md = pf.metadata
    col = pf.schema_arrow.get_field_index("key")
    stats = [md.row_group(g).column(col).statistics for g in range(md.num_row_groups)]
    if not md.num_row_groups or any(st is None or not st.has_min_max for st in stats):
        return pf.read(), md.num_row_groups, md.num_row_groups
    groups = key_groups(np.array([st.min for st in stats], np.uint64), np.array([st.max for st in stats], np.uint64),
                        keys)
    return (pf.read_row_groups(groups.tolist()) if len(groups) else None), len(groups), md.num_row_groups


def index_rows(parts: list[IndexPart], q: int, n_parts: int, keys: np.ndarray) -> tuple[pa.Table | None, int, int]:
    """The band rows of every part that partition ``q`` needs: keys present in ``keys`` (the
    new data's, sorted unique), documents renumbered; and (row groups read, row groups there):
    only the groups whose key range holds a new key are read, so that a small batch against a
    big index reads a little of it."""
    out, read, there = [], 0, 0
    for part in parts:
        files, filt = part.band_files(q, n_parts)
        for f in files:
            if not storage.exists(f):
                continue
            t, n_read, n_groups = read_key_groups(f, keys)
            read, there = read + n_read, there + n_groups
            if t is None:
                continue
            k = t["key"].to_numpy()
            hit = np.isin(k, keys, assume_unique=False)
            if filt:
                hit &= (k % np.uint64(n_parts)) == np.uint64(q)
            if not hit.any():
                continue
            t = t.filter(pa.array(hit))
            out.append(t.set_column(t.schema.get_field_index("doc"), "doc",
                                    pa.array(renumber(t["doc"].to_numpy(), part.offset))))
    return (pa.concat_tables(out) if out else None), read, there


def survivors(doc: np.ndarray, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the documents not in ``removed`` (sorted), their numbers in the data shards:
    the row minus the removed rows before it in the same shard)."""
    i = np.searchsorted(removed, doc)
    gone = (i < len(removed)) & (removed[np.minimum(i, max(len(removed) - 1, 0))] == doc) if len(removed) else np.zeros(len(doc), bool)
    shard_start = np.searchsorted(removed, (doc >> np.int64(32)) << np.int64(32))
    return ~gone, doc - (i - shard_start)
