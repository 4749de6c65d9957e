"""The decontamination stage's per-shard work (pure: Parquet in, Parquet out, small dicts back).

Pass 1 (:func:`scan_shard`): which benchmark 13-grams occur in which documents (to count the
documents per 13-gram), and which benchmark examples are dirty, with one training document and
a snippet each. Pass 2 (:func:`excise_shard`): cut the collisions out.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .appendix_c import (
    NgramIndex,
    benchmark_matches,
    decontaminate_batch,
    training_collisions,
)
from .ngrams import words


def scan_shard(path: str, index: NgramIndex, cfg) -> dict:
    pf = pq.ParquetFile(path)
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


def excise_shard(path: str, out_dir: str, index: NgramIndex, ignored: np.ndarray, cfg, keep_text: bool = True,
                 max_bytes: int = 256 * 2**20) -> dict:
    from siftmix.pipeline.schema import REJECTED_SCHEMA
    from siftmix.pipeline.shards import ShardWriter, file_stats

    pf = pq.ParquetFile(path)
    name = os.path.basename(path).removesuffix(".parquet")
    data = ShardWriter(os.path.join(out_dir, "data"), name, pf.schema_arrow, max_bytes)
    rej = ShardWriter(os.path.join(out_dir, "rejected"), name, REJECTED_SCHEMA, max_bytes)
    st = file_stats(path, chars_in=0, chars_rejected=0, rows_out=0, rejected_rows=Counter(), documents_cut=0,
                    collisions=0, ignored=0)
    for batch in pf.iter_batches(batch_size=cfg.batch_rows):
        t = pa.Table.from_batches([batch])
        if st["source"] is None and t.num_rows:
            st["source"] = t["source"][0].as_py()
        exc, info = decontaminate_batch(t.select(["id", "text"]), index, ignored, cfg.window, cfg.min_piece, cfg.max_pieces)
        st["collisions"] += info["collisions"]
        st["ignored"] += info["ignored"]
        st["docs_in"] += t.num_rows
        st["bytes_in"] += pc.sum(pc.binary_length(t["text"])).as_py() or 0
        st["chars_in"] += pc.sum(pc.utf8_length(t["text"])).as_py() or 0
        by_doc = dict(exc)
        rows, new_ids, new_texts = [], [], []
        r_ids, r_src, r_reason, r_text, r_meta = [], [], [], [], []
        ids = t["id"].to_pylist()
        for i in range(t.num_rows):
            e = by_doc.get(i)
            if e is None:
                rows.append(i)
                new_ids.append(ids[i])
                new_texts.append(None)  # unchanged
                continue
            st["documents_cut"] += 1
            reason = f"contaminated:{e.benchmark}"
            for k, piece in enumerate(e.pieces):
                rows.append(i)
                new_ids.append(f"{ids[i]}#{k}")
                new_texts.append(piece)
            if e.dropped or not e.pieces:
                st["rejected"][reason] += 1
            for k, removed in enumerate(e.removed):
                r_ids.append(ids[i] if e.dropped else f"{ids[i]}#x{k}")
                r_src.append(t["source"][i].as_py())
                r_reason.append(reason)
                r_text.append(removed if keep_text else None)
                r_meta.append(t["meta"][i].as_py() if "meta" in t.column_names else None)
                st["rejected_rows"][reason] += 1
                st["chars_rejected"] += len(removed)
        out = t.take(pa.array(rows, pa.int64()))
        if by_doc:
            orig = out["text"].to_pylist()
            merged = [n if n is not None else o for n, o in zip(new_texts, orig)]
            out = out.set_column(out.schema.get_field_index("text"), out.schema.field("text"), pa.array(merged, out.schema.field("text").type))
            out = out.set_column(out.schema.get_field_index("id"), out.schema.field("id"), pa.array(new_ids, pa.string()))
        st["kept"] += len(set(rows))
        st["rows_out"] += out.num_rows
        if out.num_rows:
            st["chars_kept"] += pc.sum(pc.utf8_length(out["text"])).as_py()
            st["bytes_kept"] += pc.sum(pc.binary_length(out["text"])).as_py()
        data.write(out)
        if r_ids:
            rej.write(pa.table({"id": r_ids, "source": r_src, "reason": r_reason,
                                "score": pa.nulls(len(r_ids), pa.float32()),
                                "text": pa.array(r_text, pa.large_string()), "meta": pa.array(r_meta, pa.string())},
                               schema=REJECTED_SCHEMA))
    st["shards"] = data.close()
    st["rejected_shards"] = rej.close()
    st["rejected"] = dict(sorted(st["rejected"].items()))
    st["rejected_rows"] = dict(sorted(st["rejected_rows"].items()))
    return st
