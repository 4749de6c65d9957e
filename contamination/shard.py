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
from siftmix.pipeline.core.text import ngram_hashes, words

from .appendix_c import (
    NgramIndex,
    benchmark_matches,
    counts_for,
    decontaminate_batch,
    training_collisions,
)


def _repeats_of(w, size: int, uniq: np.ndarray, repeat: list) -> dict[int, set[int]]:
    """{matched n-gram hash: the repeats (epochs) of the rows holding it} (the training mix: one
    row per piece and repeat); one vectorised pass, then a loop over the matches only."""
    hs, first = ngram_hashes(w, size)
    sel = np.isin(hs, uniq)
    out: dict[int, set[int]] = {}
    for hv, d in zip(hs[sel].tolist(), w.doc[first[sel]].tolist()):
        out.setdefault(hv, set()).add(repeat[d])
    return out


def scan_shard(path: str, index: NgramIndex, cfg) -> dict:
    """Pass 1 over one shard: the documents per benchmark 13-gram, and the dirty examples, each
    with the first training document (by id) and a snippet. A shard of the training mix (a
    ``repeat`` column: the epoch in which the row is seen) also gives, per dirty example, the
    epochs in which one of its n-grams is seen."""
    pf = storage.parquet_file(path)
    cols = ["id", "text"] + (["repeat"] if "repeat" in pf.schema_arrow.names else [])
    pair_hashes = []
    dirty: dict[str, dict] = {}
    rows = 0
    for batch in pf.iter_batches(batch_size=cfg.batch_rows, columns=cols):
        t = pa.Table.from_batches([batch])
        rows += t.num_rows
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
        repeat = t["repeat"].to_pylist() if "repeat" in cols else None
        texts = None
        for size, (uniq, docs, firsts) in matches.items():
            keys, benches, examples = index.tables[size]
            lo, hi = np.searchsorted(keys, uniq, "left"), np.searchsorted(keys, uniq, "right")
            epochs = _repeats_of(w, size, uniq, repeat) if repeat is not None else {}
            for hv, doc, fw, a, b in zip(uniq, docs, firsts, lo, hi):  # matched n-grams only (rare)
                seen = epochs.get(int(hv))
                for bi, ex in zip(benches[a:b], examples[a:b]):
                    if not counts_for(index, int(bi), size):
                        continue
                    key = f"{bi}:{ex}"
                    doc_id = ids[doc]
                    if seen is not None and key in dirty:
                        dirty[key]["epochs"] = sorted(set(dirty[key]["epochs"]) | seen)
                    if key in dirty and dirty[key]["doc"] <= doc_id:
                        continue
                    if texts is None:
                        texts = text.to_pylist()
                    s, e = int(w.start[fw]), int(w.end[fw + size - 1])
                    src = texts[doc]
                    a0, b0 = max(0, s - cfg.snippet_chars), min(len(src), e + cfg.snippet_chars)
                    old = dirty.get(key, {}).get("epochs", [])
                    dirty[key] = {"hash": int(hv), "size": int(size), "doc": doc_id, "snippet": src[a0:b0],
                                  "span": [s - a0, e - a0]}
                    if seen is not None:
                        dirty[key]["epochs"] = sorted(set(old) | seen)
    allh = np.concatenate(pair_hashes) if pair_hashes else np.zeros(0, np.uint64)
    uh, cnt = np.unique(allh, return_counts=True)
    return {"file": os.path.basename(path), "hashes": uh.tobytes(), "counts": cnt.astype(np.int64).tobytes(),
            "dirty": dirty, "rows": rows}


def excise_table(t: pa.Table, index: NgramIndex, ignored: np.ndarray, cfg, keep_text: bool = True) -> Processed:
    """One batch: documents with a colliding 13-gram are cut into pieces ``<id>#<k>`` (the cut
    text is rejected as ``<id>#x<k>``, reason ``contaminated:<benchmark>``); a document with too
    many or too short pieces is dropped whole. Counted per document, not per row."""
    exc, info = decontaminate_batch(t.select(["id", "text"]), index, ignored, cfg.window, cfg.min_piece, cfg.max_pieces)
    extra = {"chars_in": pc.sum(pc.utf8_length(t["text"])).as_py() or 0, "chars_rejected": 0, "rows_out": 0,
             "rejected_rows": Counter(), "rejected_in_part": Counter(), "documents_cut": 0, "collisions": info["collisions"], "ignored": info["ignored"]}
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
        else:  # kept in part: counted as kept (in = kept + rejected), and here by reason
            extra["rejected_in_part"][reason] += 1
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
