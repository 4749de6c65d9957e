"""Decontamination benchmark: the training-side scan with the 14 real benchmarks loaded.

    python -m bench.bench_decontam [--mb 32]

siftmix: pass 1 (collisions + document counts + benchmark side) and pass 2 (excision) on one core,
over real crawl text from ../shared/data/cc (repeated to --mb), with planted benchmark passages.
reference: a brute-force appendix C script (Python sets of word 13-grams, the test oracle's
method) on the same documents. lm-evaluation-harness's janitor is not installed here (its
dependencies would pull a second torch/transformers stack into the venv), so the brute-force
script is the comparison the issue allows. Also: index build time and memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import time
import tracemalloc

import numpy as np
import pyarrow as pa

from bench.common import ROOT, write_result

SHARED = ROOT.parent / "shared" / "data"


def brute_force(docs: list[str], benches) -> int:
    from siftmix.pipeline.core.text import is_punct

    grams = set()
    for b in benches:
        for t in b.texts:
            ws = ["".join(c for c in tok if not is_punct(c)) for tok in t.lower().split()]
            ws = [w for w in ws if w]
            grams.update(tuple(ws[i:i + 13]) for i in range(len(ws) - 12))
    cut = 0
    for text in docs:
        toks = [(m.start(), m.end(), "".join(c for c in m.group().lower() if not is_punct(c))) for m in re.finditer(r"\S+", text)]
        toks = [t for t in toks if t[2]]
        spans = [(toks[i][0], toks[i + 12][1]) for i in range(len(toks) - 12)
                 if tuple(t[2] for t in toks[i:i + 13]) in grams]
        if spans:
            removed = np.zeros(len(text), bool)
            for s, e in spans:
                removed[max(0, s - 200):e + 200] = True
            cut += 1
    return cut


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=32)
    ap.add_argument("--reference-mb", type=float, default=4, help="text the (slow) brute-force script runs on")
    ap.add_argument("--name", default="decontam", help="result file: bench/results/NAME.json")
    args = ap.parse_args(argv)
    from siftmix.contamination.appendix_c import (
        NgramIndex,
        decontaminate_batch,
        doc_counts,
        training_collisions,
    )
    from siftmix.contamination.benchmarks import load_benchmarks
    from siftmix.contamination.config import DecontamConfig
    from siftmix.pipeline.core.text import words

    t0 = time.perf_counter()
    benches = load_benchmarks([str(SHARED / "benchmarks")])
    load_s = time.perf_counter() - t0
    tracemalloc.start()
    t0 = time.perf_counter()
    index = NgramIndex.build(benches)
    build_s = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    base = []
    for f in sorted((SHARED / "cc").glob("*.jsonl.gz")):
        if "dclm" not in f.name:
            base += [json.loads(x)["text"] for x in gzip.open(f)]
    rng = np.random.default_rng(0)
    docs, size = [], 0
    while size < args.mb * 1e6:
        for t in base:
            if rng.random() < 0.01:  # plant a benchmark passage in 1% of documents
                b = benches[rng.integers(len(benches))]
                t = t + "\n" + b.texts[rng.integers(len(b.texts))]
            docs.append(t)
            size += len(t.encode())
            if size >= args.mb * 1e6:
                break
    cfg = DecontamConfig()
    table = pa.table({"id": [str(i) for i in range(len(docs))], "text": pa.array(docs, pa.large_string())})

    def siftmix_scan():
        cut = 0
        hs = []
        for start in range(0, table.num_rows, cfg.batch_rows):
            t = table.slice(start, cfg.batch_rows)
            w = words(t["text"])
            d, _, h, _ = training_collisions(w, index)
            hs.append(doc_counts(d, h)[0])
        ignored = np.zeros(0, np.uint64)
        for start in range(0, table.num_rows, cfg.batch_rows):
            exc, _ = decontaminate_batch(table.slice(start, cfg.batch_rows), index, ignored)
            cut += len(exc)
        return cut

    t0 = time.perf_counter()
    cut = siftmix_scan()
    ours_s = time.perf_counter() - t0
    ref_docs, ref_size = [], 0
    for t in docs:
        ref_docs.append(t)
        ref_size += len(t.encode())
        if ref_size >= args.reference_mb * 1e6:
            break
    t0 = time.perf_counter()
    ref_cut = brute_force(ref_docs, benches)
    ref_s = time.perf_counter() - t0
    res = {"benchmarks": len(benches), "examples": sum(len(b.texts) for b in benches),
           "index": {"load_s": round(load_s, 2), "build_s": round(build_s, 2), "ngrams_13": int(len(index.tables[13][0])),
                     "bytes": int(sum(a.nbytes for t in index.tables.values() for a in t)), "build_peak_python_bytes": int(peak)},
           "siftmix": {"text_mb": round(size / 1e6, 1), "documents": len(docs), "documents_cut": cut,
                       "wall_s": round(ours_s, 2), "mb_s_per_core": round(size / 1e6 / ours_s, 2),
                       "note": "both passes (collisions + counts, then excision) on one core"},
           "brute_force_reference": {"text_mb": round(ref_size / 1e6, 1), "documents": len(ref_docs), "documents_cut": ref_cut,
                                     "wall_s": round(ref_s, 2), "mb_s_per_core": round(ref_size / 1e6 / ref_s, 3)},
           "command": f"python -m bench.bench_decontam --mb {args.mb}"}
    res["audit"] = audit_extras(table, benches, cfg)
    res["speedup_vs_reference"] = round(res["siftmix"]["mb_s_per_core"] / res["brute_force_reference"]["mb_s_per_core"], 1)
    res["target_speedup"] = 30
    print(json.dumps(res, indent=1))
    print("wrote", write_result(args.name, res))
    return res


def audit_extras(table, benches, cfg) -> dict:
    """The audit's pass 1 (benchmark side, one Parquet shard, one core) with the paper's rule and
    with ``short_examples: whole`` (every short length is one more n-gram size to hash), and the
    audit's outputs over the 14 sets: clean subsets, Table C.1 (one 0/1 and one bootstrap metric)."""
    import tempfile

    import pyarrow.parquet as pq
    from siftmix.contamination.appendix_c import NgramIndex
    from siftmix.contamination.benchmarks import write_subsets
    from siftmix.contamination.scores import Scores, table_c1
    from siftmix.contamination.shard import scan_shard

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/shard.parquet"
        pq.write_table(table, path)
        mb = sum(len(t.encode()) for t in table["text"].to_pylist()) / 1e6
        for mode in ("ignore", "whole"):
            index = NgramIndex.build(benches, short=mode)
            t0 = time.perf_counter()
            r = scan_shard(path, index, cfg)
            wall = time.perf_counter() - t0
            out[f"scan_{mode}"] = {"wall_s": round(wall, 2), "mb_s_per_core": round(mb / wall, 2), "dirty": len(r["dirty"]),
                                   "ngram_sizes": sorted(int(k) for k in index.tables)}
        out["whole_vs_ignore_wall"] = round(out["scan_whole"]["wall_s"] / out["scan_ignore"]["wall_s"], 2)
        rng = np.random.default_rng(0)
        dirty = {b.name: set(rng.choice(len(b.ids), max(1, len(b.ids) // 20), replace=False).tolist()) for b in benches}
        t0 = time.perf_counter()
        for b in benches:
            write_subsets(b, dirty[b.name], f"{tmp}/audit")
        out["clean_subsets_s"] = round(time.perf_counter() - t0, 2)
        scores = Scores({b.name: {"acc": {i: float(rng.random() < 0.5) for i in range(len(b.ids))},
                                  "f1": {i: float(rng.random()) for i in range(len(b.ids))}} for b in benches})
        t0 = time.perf_counter()
        rows = table_c1(scores, dirty, seed=0)
        out["table_c1_s"] = round(time.perf_counter() - t0, 2)
        out["table_c1_rows"] = len(rows)
        out["examples_scored"] = sum(len(b.ids) for b in benches)
    return out


if __name__ == "__main__":
    main()
