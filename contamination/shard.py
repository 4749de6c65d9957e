"""The decontamination stage's per-shard work (pure: Parquet in, Parquet out, small dicts back).

Pass 1 (:func:`scan_shard`): which benchmark 13-grams occur in which documents (to count the
documents per 13-gram), and which benchmark examples are dirty, with one training document and
a snippet each. Pass 2 (:func:`excise_table`, one batch): cut the collisions out.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.schema import REJECTED_SCHEMA
from siftmix.pipeline.core.shards import Processed, rejected_rows
from siftmix.pipeline.core.text import words

from .appendix_c import (
    NgramIndex,
    benchmark_matches,
    decontaminate_batch,
    training_collisions,
)


def scan_shard(path: str, index: NgramIndex, cfg) -> dict:
    pf = storage.parquet_file(path)
    pair_hashes = []
    dirty: dict[str, dict] = {}
    for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=["id", "text"]):
        t = pa.Table.from_batches([batch])
        text = t["text"].combine_chunks()
        w = words(text)
        d, _, h, _ = training_collisions(w, index)
        if len(h):
            pairs = np.unique(np.stack([h, d.astype(np.uint64)], axis=1), axis=0)
            pair_hashes.append(pairs[:, 0])
        matches = benchmark_matches(w, index)
        if not matches:
            continue
        ids = t["id"].to_pylist()
        texts = None
        for size, (uniq, docs, firsts) in matches.items():
            keys, benches, examples = index.tables[size]
            lo, hi = np.searchsorted(keys, uniq, "left"), np.searchsorted(keys, uniq, "right")
            for hv, doc, fw, a, b in zip(uniq, docs, firsts, lo, hi):  # matched n-grams only (rare)
                for bi, ex in zip(benches[a:b], examples[a:b]):
                    if index.n[index.names[bi]] != size:
                        continue
                    key = f"{bi}:{ex}"
                    doc_id = ids[doc]
                    if key in dirty and dirty[key]["doc"] <= doc_id:
                        continue
                    if texts is None:
                        texts = text.to_pylist()
                    s, e = int(w.start[fw]), int(w.end[fw + size - 1])
                    src = texts[doc]
                    a0, b0 = max(0, s - cfg.snippet_chars), min(len(src), e + cfg.snippet_chars)
                    dirty[key] = {"hash": int(hv), "doc": doc_id, "snippet": src[a0:b0], "span": [s - a0, e - a0]}
    allh = np.concatenate(pair_hashes) if pair_hashes else np.zeros(0, np.uint64)
    uh, cnt = np.unique(allh, return_counts=True)
    return {"file": os.path.basename(path), "hashes": uh.tobytes(), "counts": cnt.astype(np.int64).tobytes(), "dirty": dirty}


def excise_table(t: pa.Table, index: NgramIndex, ignored: np.ndarray, cfg, keep_text: bool = True) -> Processed:
    """One batch: documents with a colliding 13-gram are cut into pieces ``<id>#<k>`` (the cut
    text is rejected as ``<id>#x<k>``, reason ``contaminated:<benchmark>``); a document with too
    many or too short pieces is dropped whole. Counted per document, not per row."""
    exc, info = decontaminate_batch(t.select(["id", "text"]), index, ignored, cfg.window, cfg.min_piece, cfg.max_pieces)
    extra = {"chars_in": pc.sum(pc.utf8_length(t["text"])).as_py() or 0, "chars_rejected": 0, "rows_out": 0,
             "rejected_rows": Counter(), "documents_cut": 0, "collisions": info["collisions"], "ignored": info["ignored"]}
    by_doc = dict(exc)
    rows, new_ids, new_texts, dropped = [], [], [], Counter()
    r_rows, r_ids, r_reason, r_text = [], [], [], []
    ids = t["id"].to_pylist()
    for i in range(t.num_rows):  # a Python loop per document, not per n-gram: the cutting is in decontaminate_batch
        e = by_doc.get(i)
        if e is None:
            rows.append(i)
            new_ids.append(ids[i])
            new_texts.append(None)  # unchanged
            continue
        extra["documents_cut"] += 1
        reason = f"contaminated:{e.benchmark}"
        for k, piece in enumerate(e.pieces):
            rows.append(i)
            new_ids.append(f"{ids[i]}#{k}")
            new_texts.append(piece)
        if e.dropped or not e.pieces:
            dropped[reason] += 1
        for k, removed in enumerate(e.removed):
            r_rows.append(i)
            r_ids.append(ids[i] if e.dropped else f"{ids[i]}#x{k}")
            r_reason.append(reason)
            r_text.append(removed)
            extra["rejected_rows"][reason] += 1
            extra["chars_rejected"] += len(removed)
    out = t.take(pa.array(rows, pa.int64()))
    if by_doc:
        orig = out["text"].to_pylist()
        merged = [n if n is not None else o for n, o in zip(new_texts, orig)]
        out = out.set_column(out.schema.get_field_index("text"), out.schema.field("text"), pa.array(merged, out.schema.field("text").type))
        out = out.set_column(out.schema.get_field_index("id"), out.schema.field("id"), pa.array(new_ids, pa.string()))
    extra["rows_out"] = out.num_rows
    if r_ids:
        src = t.select([c for c in ("source", "meta") if c in t.column_names]).take(pa.array(r_rows, pa.int64()))
        cut = src.append_column("id", pa.array(r_ids, pa.string())).append_column("text", pa.array(r_text, pa.large_string()))
        rejected = rejected_rows(cut, r_reason, keep_text=keep_text)
    else:
        rejected = REJECTED_SCHEMA.empty_table()
    return Processed(out, rejected, kept_docs=len(set(rows)), reasons=dropped, extra=extra)
