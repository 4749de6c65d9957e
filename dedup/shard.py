"""The dedup stage's per-shard work (pure: Parquet in, Parquet out, small dicts back).

Documents are numbered ``shard << 32 | row`` (``shard`` = the input shard's index in name order,
``row`` = its row in that shard): int64 numbers are cheap to shuffle and map straight back to a
row. Pass 1 (:func:`sign_shard`) writes, per shard, the LSH band rows (key, band, doc, exact)
and the documents' metadata (doc, id, source, quality_score, exact); the verification pass
(:func:`provide_shard`) gives signatures and exact shingle sets of just the documents named in
candidate pairs; the last pass (:func:`apply_shard`) writes kept and rejected rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.hashing import mix64
from siftmix.pipeline.core.shards import rejected_rows
from siftmix.pipeline.core.text import single_array, words

from .config import DedupConfig
from .lsh import band_keys
from .minhash import (
    compat_shingle_hashes,
    doc_hashes,
    shingle_hashes,
    shingle_sets,
    signatures,
    signatures_from_words,
)

BAND_SCHEMA = pa.schema([("key", pa.uint64()), ("band", pa.int16()), ("doc", pa.int64()), ("exact", pa.uint64())])
META_SCHEMA = pa.schema([("doc", pa.int64()), ("id", pa.string()), ("source", pa.string()),
                         ("score", pa.float32()), ("exact", pa.uint64())])


def doc_numbers(shard: int, first_row: int, n: int) -> np.ndarray:
    return (np.int64(shard) << np.int64(32)) | (first_row + np.arange(n, dtype=np.int64))


def source_salt(sources: pa.Array, scope: str) -> np.ndarray:
    """Per-document salt of every bucket key: the source's hash (within-source dedup) or 0."""
    if scope == "cross_source":
        return np.zeros(len(sources), np.uint64)
    names = sources.to_pylist()
    table = {s: xxhash.xxh64_intdigest(s.encode()) for s in set(names)}
    return np.fromiter((table[s] for s in names), np.uint64, count=len(names))


def batch_signatures_words(text: pa.Array, w, p: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, shingles per document) of a batch whose words are already scanned."""
    if p.hash == "datasketch":
        h, d = compat_shingle_hashes(text.to_pylist(), p.ngram)
    elif p.scheme == "affine32":
        return signatures_from_words(w, p.ngram, p.num_perm, p.seed)
    else:
        h, d = shingle_hashes(None, p.ngram, w=w)
    return signatures(h, d, w.n_docs, p.num_perm, p.seed, p.scheme), np.bincount(d, minlength=w.n_docs)


def sign_table(t: pa.Table, shard: int, first_row: int, p: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """One batch -> (band rows, metadata rows). Exact buckets have band -1 and a key from the
    normalised-text hash; documents with fewer than ``ngram`` words have no shingles and take
    part in exact dedup only."""
    n = t.num_rows
    text = single_array(t["text"])
    w = words(text, spans=False)
    exact = doc_hashes(w)
    doc = doc_numbers(shard, first_row, n)
    salt = source_salt(single_array(t["source"]), p.scope)
    score = t["quality_score"] if "quality_score" in t.column_names else pa.nulls(n, pa.float32())
    meta = pa.table([pa.array(doc), t["id"], t["source"], score.cast(pa.float32()), pa.array(exact)], schema=META_SCHEMA)
    keys, bands, docs, ex = [], [], [], []
    if p.exact:
        keys.append(mix64(exact ^ salt))
        bands.append(np.full(n, -1, np.int16))
        docs.append(doc)
        ex.append(exact)
    if p.fuzzy:
        sig, n_sh = batch_signatures_words(text, w, p)
        has = n_sh > 0
        k = band_keys(sig[has], p.bands, p.rows, salt[has])
        keys.append(k.ravel())
        bands.append(np.tile(np.arange(p.bands, dtype=np.int16), int(has.sum())))
        docs.append(np.repeat(doc[has], p.bands))
        ex.append(np.repeat(exact[has], p.bands))
    band_rows = pa.table([pa.array(np.concatenate(keys)), pa.array(np.concatenate(bands)),
                          pa.array(np.concatenate(docs)), pa.array(np.concatenate(ex))], schema=BAND_SCHEMA)
    return band_rows, meta


PROVIDED_SCHEMA = pa.schema([("doc", pa.int64()), ("sig", pa.large_binary()), ("sh", pa.large_binary())])


def provide_table(path: str, docs: np.ndarray, p: DedupConfig) -> pa.Table:
    """Signatures (as uint32: legacy values are below 2^32 too) and sorted 64-bit shingle sets
    of the given documents (sorted, unique) of one shard, as binary columns."""
    rows = (docs & np.int64(0xFFFFFFFF)).astype(np.int64)
    text = read_rows(path, rows)
    w = words(text, spans=False)
    sig, _ = batch_signatures_words(text, w, p)
    sig = np.ascontiguousarray(sig.astype(np.uint32))
    vals, off = shingle_sets(w, p.ngram)
    sig_off = np.arange(len(docs) + 1, dtype=np.int64) * sig.shape[1] * 4
    return pa.table([pa.array(docs), _binary(sig_off, sig), _binary(off.astype(np.int64) * 8, vals)], schema=PROVIDED_SCHEMA)


def read_rows(path: str, rows: np.ndarray, column: str = "text") -> pa.Array:
    """``column`` of the given rows (sorted) of a Parquet file, reading only the row groups that
    hold them (the dedup stage writes small row groups, so that a later run deduplicating against
    its index reads little of each indexed shard)."""
    pf = storage.parquet_file(path)
    md = pf.metadata
    bounds = np.r_[0, np.cumsum([md.row_group(i).num_rows for i in range(md.num_row_groups)])]
    groups = np.unique(np.searchsorted(bounds, rows, side="right") - 1)
    t = pf.read_row_groups(groups.tolist(), columns=[column])
    local = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in groups]) if len(groups) else np.zeros(0, np.int64)
    return single_array(t[column].take(pa.array(np.searchsorted(local, rows))))


def gather_sets(prov: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signatures (n, num_perm) uint32, shingle offsets, shingle values) of a provided table."""
    so, sv = unpack_binary(prov["sig"], np.uint32)
    off, vals = unpack_binary(prov["sh"], np.uint64)
    return sv.reshape(prov.num_rows, -1), off, vals


def _binary(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    """A large_binary array over a flat buffer without copying per row."""
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1,
                                            [None, pa.py_buffer(offsets), pa.py_buffer(values.view(np.uint8))])


def unpack_binary(arr: pa.Array, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(element offsets, values) of a large_binary column of packed ``dtype`` arrays."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    bufs = arr.buffers()
    size = np.dtype(dtype).itemsize
    off = np.frombuffer(bufs[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    base = off[0]
    vals = data[base:off[-1]].view(dtype)
    return (off - base) // size, vals


def dedup_schema(in_schema: pa.Schema) -> pa.Schema:
    base = in_schema.remove(in_schema.get_field_index("dup_cluster")) if "dup_cluster" in in_schema.names else in_schema
    return base.append(pa.field("dup_cluster", pa.string(), nullable=True))


def apply_table(t: pa.Table, first_row: int, decided_rows: np.ndarray, cluster: np.ndarray, reason: np.ndarray,
                sim: np.ndarray, schema: pa.Schema, keep_text: bool) -> tuple[pa.Table, pa.Table]:
    """Mark one batch: rows in a cluster get ``dup_cluster`` (the keeper's id); rows with a
    reason (``exact_duplicate_of:<id>`` / ``duplicate_of:<id>``) go to the rejected table, their
    ``score`` the similarity with the kept document they duplicate (exact Jaccard, 1.0 for an
    exact duplicate)."""
    n = t.num_rows
    lo, hi = np.searchsorted(decided_rows, [first_row, first_row + n])
    local = decided_rows[lo:hi] - first_row
    cl = np.full(n, None, object)
    rs = np.full(n, None, object)
    sc = np.full(n, np.nan, np.float32)
    cl[local] = cluster[lo:hi]
    rs[local] = reason[lo:hi]
    sc[local] = sim[lo:hi]
    rej_mask = np.zeros(n, bool)
    rej_mask[local] = np.fromiter((r is not None for r in reason[lo:hi]), bool, count=hi - lo)
    if "dup_cluster" in t.column_names:
        t = t.drop_columns(["dup_cluster"])
    out = t.append_column("dup_cluster", pa.array(cl, pa.string())).select(schema.names).cast(schema)
    score = pa.array(sc, pa.float32(), from_pandas=True)
    rej = rejected_rows(t, pa.array(rs, pa.string()), keep_text=keep_text, score=score, mask=pa.array(rej_mask))
    return out.filter(pa.array(~rej_mask)), rej


def reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def decision_arrays(decisions: pa.Table | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cluster ids, reasons, similarities) of one shard's decided documents, sorted by row."""
    if decisions is None or decisions.num_rows == 0:
        return np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, object), np.zeros(0, np.float32)
    decisions = decisions.sort_by("doc")
    rows = (decisions["doc"].to_numpy() & np.int64(0xFFFFFFFF)).astype(np.int64)
    sim = decisions["sim"].to_numpy(zero_copy_only=False).astype(np.float32)
    return (rows, np.asarray(decisions["cluster"].to_pylist(), object), np.asarray(decisions["reason"].to_pylist(), object),
            sim)
