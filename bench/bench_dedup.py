"""Fuzzy dedup benchmark: MinHash signature speed and end-to-end near-duplicate removal vs peers.

    python -m bench.bench_dedup [--quick] [--mb 64] [--sig-mb 24] [--datatrove-sig-mb 4] [--datatrove-mb 16]

Corpus: real documents from ../shared/data (the document files of cc/, reference/, lowquality/ and
neardup/; NFC, trimmed, at least 200 characters, so that siftmix ingest keeps every one), shuffled
with a fixed seed, plus planted near-duplicates: 10% of the documents get one or two copies with
word edits (substitute, delete or insert a random corpus word) at a rate drawn from RATES. Written
as JSONL shards (bench/work/dedup-corpus-<MB>MB/jsonl), one source, so every method dedups the
whole corpus. The benchmark skips (with a message) where ../shared/data is absent.

1. Signatures, single process, one thread (RAYON/NUMBA/OMP threads = 1, Arrow CPU count 1), on
   the first --sig-mb of the corpus, 5-word shingles, 128 permutations, seed 1. MB/s per core =
   text MB / the best wall time of --repeat runs; MB per CPU second (``time.process_time``) is
   given too, as it moves less when the shared machine is busy:
   * siftmix: ``batch_signatures`` on Arrow batches of 2048 documents (fast default hash; its
     word scan and shingle hashing are inside the figure);
   * datasketch 2.0: ``MinHash.bulk`` (scheme="affine32") per 2048 documents;
   * rensa: ``RMinHash(128, 1).update(shingles).digest()`` per document, and its bulk
     ``RMinHash.digest_matrix_from_token_sets`` per 2048 documents;
   * datatrove: ``MinhashDedupSignature`` (16 buckets x 8 hashes = 128, its default 64-bit xxhash,
     its own spaCy word tokenizer and text normalisation) run in bench/.peers-venv (``make
     bench-peers``) on the first --datatrove-sig-mb of the same documents (it is slow), timed
     inside that subprocess:
     ``step.run`` over in-memory documents (shingling, hashing, writing and sorting its bucket
     files), and the bare ``get_shingles`` + ``get_signature`` loop.
   datasketch and rensa need Python shingles: their figures include a plain Python shingler
   (``str.lower``, delete the punctuation siftmix deletes, ``split``, join 5 words: the same
   shingles as siftmix's normalised words, checked on the slice), and for datasketch the
   ``str.encode`` of each shingle. The shingling time alone is reported too.
2. End to end on the whole corpus with 2 workers (or --workers), each method a subprocess: wall
   time (process start to exit, imports included), MB/s of document text, and from psutil polling
   of the process tree (every 0.2 s) its peak memory (sum of RSS, and sum of PSS, which counts
   shared pages once) and its CPU seconds (user + system, as last seen per process):
   (a) rensa signatures (bulk API, a process pool over shards) + datasketch ``MinHashLSH``
       (threshold 0.8, 128 permutations: it picks 9 bands x 13 rows) + candidate check (estimated
       Jaccard >= 0.8) + union-find, kept documents written as JSONL; once more with siftmix's
       default banding (16 x 8) as a control: same parameters, another implementation;
   (b) the same with datasketch ``MinHash.bulk`` signatures;
   (c) datatrove's 4-step MinHash pipeline (signatures -> buckets -> cluster -> filter,
       ``LocalPipelineExecutor``, tasks = shards, 2 workers; its default 14 buckets x 8 hashes,
       5-grams; no candidate check), kept and removed documents written as JSONL. It is slow (spaCy tokens), so
       it runs on the first --datatrove-mb of the corpus: the same generator and seed, so that
       corpus is a subset of the big one (same documents, same planted copies), and its quality is
       compared with every method's clusters restricted to that subset;
   (d) siftmix: ``siftmix run CONFIG.yaml`` with ``stages: [ingest, dedup]`` (the stage's own
       ``timings.wall_s`` and the whole command). Skipped while the dedup stage is not built.
   Quality: each method's removed documents and clusters; pair precision and recall against exact
   5-gram Jaccard >= 0.8 (siftmix's normalised shingles, 64-bit hashed) over a pool made of every
   planted family's pairs and every pair that any method put in one cluster (pooled evaluation:
   a similar pair that no method found and nobody planted is not counted). A cluster's pairs all
   count, so a chain A~B~C whose ends are under 0.8 lowers precision even when each link is true;
   ``clustered_docs_with_a_true_partner`` (share of clustered documents with at least one member
   of their cluster at Jaccard >= 0.8) is given beside it, and the removal figures: removed
   documents whose kept document (the cluster's first) is under 0.8 (``removal_precision``), and
   true pairs of which both documents were kept (``true_pairs_both_kept``).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

from bench.common import ROOT, WORK, write_result

SHARED = ROOT.parent / "shared" / "data"
DOC_DIRS = ("cc", "reference", "lowquality", "neardup")
MIN_CHARS = 200
RATES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1)
PLANT_FRACTION = 0.1
THRESHOLD, NUM_PERM, NGRAM, SEED = 0.8, 128, 5, 1
BATCH = 2048
DATATROVE_BANDS = (14, 8)  # datatrove's MinhashConfig default (112 hashes)
PEERS_VENV = ROOT / "bench" / ".peers-venv"
ONE_THREAD = {"RAYON_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ----------------------------------------------------------------------------------------- corpus
def real_documents() -> list[tuple[str, str]] | None:
    """(id, text) of every usable real document in ../shared/data, in a fixed order."""
    if not SHARED.is_dir():
        return None
    out, seen = [], set()
    for sub in DOC_DIRS:
        for f in sorted((SHARED / sub).glob("*.jsonl.gz")):
            stem = f.name.removesuffix(".jsonl.gz")
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    d = json.loads(line)
                    t = d.get("text")
                    if not isinstance(t, str):
                        continue
                    t = unicodedata.normalize("NFC", t.replace("\r\n", "\n").replace("\r", "\n")).strip()
                    try:
                        t.encode("utf-8")
                    except UnicodeEncodeError:  # lone surrogates: ingest would repair them, peers not
                        continue
                    key = f"{stem}:{d.get('id', i)}"
                    if len(t) < MIN_CHARS or key in seen:
                        continue
                    seen.add(key)
                    out.append((key, t))
    return out


def edit_words(text: str, rate: float, rng: np.random.Generator, vocab: list[str]) -> str:
    """A near-duplicate: each word is edited with probability ``rate`` (substituted, deleted, or
    followed by an inserted word, one third each); whitespace between words is kept."""
    parts = re.split(r"(\s+)", text)
    words, seps = parts[0::2], parts[1::2]
    n = len(words)
    k = int(rng.binomial(n, rate))
    for p, op in zip(rng.choice(n, size=k, replace=False), rng.integers(0, 3, size=k)):
        w = vocab[int(rng.integers(len(vocab)))]
        if op == 0:
            words[p] = w
        elif op == 1:
            words[p] = ""
        else:
            words[p] = words[p] + " " + w
    out = []
    for i, w in enumerate(words):
        out.append(w)
        if i < len(seps):
            out.append(seps[i])
    return "".join(out).strip()


def build_corpus(mb: float, seed: int = 0, shards: int = 8) -> Path | None:
    """Write (once) the benchmark corpus of about ``mb`` MB of text; returns its folder."""
    folder = WORK / f"dedup-corpus-{mb:g}MB-seed{seed}"
    if (folder / "truth.json").exists():
        return folder
    docs = real_documents()
    if docs is None:
        return None
    rng = np.random.default_rng(seed)
    vocab_rng = np.random.default_rng(seed + 1)
    vocab = sorted({w for i in vocab_rng.choice(len(docs), size=min(200, len(docs)), replace=False)
                    for w in docs[i][1].split() if w.isalpha() and len(w) < 15})
    target = mb * 1e6
    out: list[tuple[str, str]] = []
    families: list[list] = []
    size = 0
    # Past the real documents (about 70 MB), each further pass re-uses them with half of their
    # words replaced by corpus words (Jaccard ~0.02 to the original: new documents with real
    # word statistics, not duplicates), so that 1 GB corpora can be built for the scale figures.
    def stream():
        for cycle in range(10**6):
            for i in rng.permutation(len(docs)):
                key, text = docs[i]
                if cycle == 0:
                    yield key, text
                else:
                    yield f"{key}#v{cycle}", edit_words(text, 0.5, rng, vocab)

    for key, text in stream():
        out.append((key, text))
        size += len(text.encode())
        if rng.random() < PLANT_FRACTION:
            for k in range(int(rng.integers(1, 3))):
                rate = RATES[int(rng.integers(len(RATES)))]
                cid = f"{key}#copy{k}@{rate}"
                copy = edit_words(text, rate, rng, vocab)
                if len(copy) < MIN_CHARS:
                    continue
                out.append((cid, copy))
                families.append([key, cid, rate])
                size += len(copy.encode())
        if size >= target:
            break
    order = rng.permutation(len(out))
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "jsonl").mkdir(parents=True)
    files = [open(tmp / "jsonl" / f"part-{s:05d}.jsonl", "w", encoding="utf-8") for s in range(shards)]
    for j, i in enumerate(order):
        key, text = out[i]
        files[j % shards].write(json.dumps({"id": key, "text": text}, ensure_ascii=False) + "\n")
    for f in files:
        f.close()
    (tmp / "truth.json").write_text(json.dumps({
        "seed": seed, "documents": len(out), "bytes": size, "planted_copies": len(families), "rates": RATES,
        "plant_fraction": PLANT_FRACTION, "real_documents_available": len(docs), "families": families}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read_corpus(folder: Path) -> tuple[list[str], list[str]]:
    """ids and texts in shard order (shard 0 first)."""
    ids, texts = [], []
    for f in sorted((folder / "jsonl").glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                ids.append(d["id"])
                texts.append(d["text"])
    return ids, texts


# ------------------------------------------------------------------------------------- shingling
def punct_chars() -> str:
    """The characters siftmix's words lose (contamination.ngrams.is_punct), as one string."""
    from siftmix.pipeline.core.text import is_punct

    return "".join(chr(c) for c in range(0x3012) if is_punct(chr(c)))


def make_shingler(punct: str, n: int = NGRAM):
    """The plain Python shingler a peer's user writes: the same shingles as siftmix's
    ``shingle_strings`` (lowercase, punctuation deleted, whitespace split, n words joined)."""
    table = {ord(c): None for c in punct}

    def shingles(text: str) -> list[str]:
        ws = text.lower().translate(table).split()
        return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]

    return shingles


# ------------------------------------------------------------------------------ signature speed
DATATROVE_SIG = r'''
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

path, out, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(x)["text"] for x in open(path, encoding="utf-8")]
cfg = MinhashConfig(n_grams=5, num_buckets=16, hashes_per_bucket=8, seed=1)
step = MinhashDedupSignature(output_folder=out, config=cfg, language="en")
step.get_signature(step.get_shingles("warm up the spacy tokenizer with a few words of text here"))
run_s, loop_s, run_c, loop_c = [], [], [], []
for _ in range(repeat):
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    t0, c0 = time.perf_counter(), time.process_time()
    step.run(iter(docs), rank=0, world_size=1)
    run_s.append(time.perf_counter() - t0)
    run_c.append(time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    for t in texts:
        s = step.get_shingles(t)
        if s.size:
            step.get_signature(s)
    loop_s.append(time.perf_counter() - t0)
    loop_c.append(time.process_time() - c0)
from importlib.metadata import version
print(json.dumps({"run_s": [min(run_s), min(run_c)], "loop_s": [min(loop_s), min(loop_c)], "documents": len(texts),
                  "versions": {p: version(p) for p in ("datatrove", "spacy", "xxhash", "numpy")}}))
'''


def siftmix_lsh_params() -> tuple[int, int]:
    """The dedup stage's default (bands, rows) for 0.8 / 128: chosen for recall (candidates are verified)."""
    try:
        from siftmix.dedup.config import DedupConfig

        return tuple(DedupConfig().lsh_params())
    except (ImportError, AttributeError):
        return (16, 8)


def peers_python() -> Path | None:
    py = PEERS_VENV / "bin" / "python"
    return py if py.exists() else None


def signature_speed(ids: list[str], texts: list[str], sig_mb: float, dt_sig_mb: float, repeat: int) -> dict:
    import pyarrow as pa
    from datasketch import MinHash
    from rensa import RMinHash
    from siftmix.dedup.minhash import batch_signatures, shingle_strings

    pa.set_cpu_count(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    sl, size = [], 0
    for t in texts:
        if size >= sig_mb * 1e6:
            break
        sl.append(t)
        size += len(t.encode())
    mb, n = size / 1e6, len(sl)
    sh = make_shingler(punct_chars())
    check = sl[:300]
    same = sum(sh(t) == shingle_strings(t) for t in check)

    def best(fn) -> tuple[float, float]:
        """(smallest wall time, smallest CPU time of this process) of ``repeat`` runs."""
        ts, cs = [], []
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            ts.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
        return min(ts), min(cs)

    arr = pa.array(sl, pa.large_string())
    batch_signatures(arr.slice(0, 16))  # numba compile / cache load outside the timing

    def ours():
        for s in range(0, n, BATCH):
            batch_signatures(arr.slice(s, BATCH), n=NGRAM, num_perm=NUM_PERM, seed=SEED, scheme="affine32")

    def shingle_only():
        for t in sl:
            sh(t)

    def shingle_encode():
        for t in sl:
            [x.encode() for x in sh(t)]

    def datasketch_bulk():
        for s in range(0, n, BATCH):
            MinHash.bulk([[x.encode() for x in sh(t)] for t in sl[s:s + BATCH]], num_perm=NUM_PERM, seed=SEED,
                         scheme="affine32")

    def rensa_per_doc():
        for t in sl:
            m = RMinHash(NUM_PERM, SEED)
            m.update(sh(t))
            m.digest()

    def rensa_bulk():
        for s in range(0, n, BATCH):
            RMinHash.digest_matrix_from_token_sets([sh(t) for t in sl[s:s + BATCH]], NUM_PERM, SEED)

    # the affine32 family of datasketch on the same shingles equals siftmix's compatible mode
    few = sl[:20]
    ds_equal = bool(np.array_equal(
        np.array([m.hashvalues for m in MinHash.bulk([[x.encode() for x in sh(t)] for t in few], num_perm=NUM_PERM,
                                                     seed=SEED, scheme="affine32")], np.uint32),
        batch_signatures(few, compatible=True)))

    def fig(times, what, mb=mb, n=n):
        seconds, cpu = times
        return {"seconds": round(seconds, 3), "mb_s_per_core": round(mb / seconds, 2), "docs_s_per_core": round(n / seconds),
                "cpu_s": round(cpu, 3), "mb_per_cpu_s": round(mb / cpu, 2), "counted": what}

    res = {"text_mb": round(mb, 2), "documents": n, "repeat": repeat,
           "peer_shingler_equals_siftmix_shingles": f"{same}/{len(check)} documents",
           "datasketch_affine32_equals_siftmix_compatible": ds_equal, "methods": {}}
    m = res["methods"]
    m["siftmix"] = fig(best(ours), "batch_signatures on Arrow batches of 2048: word scan, shingle hashes, 128 permutations (numba)")
    print("  siftmix", m["siftmix"], flush=True)
    m["python_shingling_only"] = fig(best(shingle_only), "the peers' Python shingler alone (not a method)")
    m["python_shingling_and_encode"] = fig(best(shingle_encode), "the shingler + str.encode per shingle (datasketch's input)")
    m["datasketch"] = fig(best(datasketch_bulk), "Python shingling + encode + MinHash.bulk(scheme='affine32') per 2048 documents")
    print("  datasketch", m["datasketch"], flush=True)
    m["rensa"] = fig(best(rensa_per_doc), "Python shingling + RMinHash(128, 1).update(shingles).digest() per document")
    m["rensa_bulk"] = fig(best(rensa_bulk), "Python shingling + RMinHash.digest_matrix_from_token_sets per 2048 documents")
    print("  rensa", m["rensa"], m["rensa_bulk"], flush=True)
    py = peers_python()
    if py is None:
        res["datatrove"] = {"skipped": f"no {PEERS_VENV} (run `make bench-peers`)"}
    else:
        dt_sl, dt_size = [], 0
        for t in sl:
            if dt_size >= dt_sig_mb * 1e6:
                break
            dt_sl.append(t)
            dt_size += len(t.encode())
        path = WORK / "dedup-sig-datatrove.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for t in dt_sl:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        outdir = WORK / "dedup-sig-datatrove-out"
        shutil.rmtree(outdir, ignore_errors=True)
        p = subprocess.run([str(py), "-c", DATATROVE_SIG, str(path), str(outdir), str(repeat)], capture_output=True, text=True,
                           env={**os.environ, **ONE_THREAD}, cwd=WORK)
        if p.returncode != 0:
            raise RuntimeError(f"datatrove signature run failed:\n{p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        dmb = dt_size / 1e6
        res["datatrove_slice"] = {"text_mb": round(dmb, 2), "documents": len(dt_sl), "repeat": repeat, "versions": r["versions"]}
        for key, t, what in (("datatrove", r["run_s"], "MinhashDedupSignature.run over in-memory documents (spaCy tokens, "
                                                        "normalisation, xxhash64, 128 hashes, bucket files written and sorted)"),
                             ("datatrove_loop", r["loop_s"], "get_shingles + get_signature per document (no files)")):
            m[key] = fig(t, what, dmb, len(dt_sl))
        print("  datatrove", m["datatrove"], m["datatrove_loop"], flush=True)
        shutil.rmtree(outdir, ignore_errors=True)
    peers = ("datasketch", "rensa", "rensa_bulk", "datatrove", "datatrove_loop")
    res["ratio_siftmix_over_peer"] = {k: round(m["siftmix"]["mb_s_per_core"] / v["mb_s_per_core"], 1) for k, v in m.items()
                                      if k in peers}
    res["ratio_siftmix_over_peer_cpu_time"] = {k: round(m["siftmix"]["mb_per_cpu_s"] / v["mb_per_cpu_s"], 1)
                                               for k, v in m.items() if k in peers}
    return res


# ----------------------------------------------------------------------- end to end: the peers
def _peer_signatures(job: tuple[str, str, str]) -> tuple[list[str], np.ndarray]:
    """One shard's ids and (n, 128) uint32 signatures (a process-pool task)."""
    path, method, punct = job
    sh = make_shingler(punct)
    ids, texts = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            ids.append(d["id"])
            texts.append(d["text"])
    sigs = np.empty((len(texts), NUM_PERM), np.uint32)
    for s in range(0, len(texts), BATCH):
        chunk = texts[s:s + BATCH]
        if method == "rensa":
            from rensa import RMinHash

            rows = RMinHash.digest_matrix_from_token_sets([sh(t) for t in chunk], NUM_PERM, SEED).to_rows()
        else:
            from datasketch import MinHash

            rows = [m.hashvalues for m in MinHash.bulk([[x.encode() for x in sh(t)] for t in chunk], num_perm=NUM_PERM,
                                                        seed=SEED, scheme="affine32")]
        sigs[s:s + len(chunk)] = np.asarray(rows, dtype=np.uint32)
    return ids, sigs


def _write_kept(job: tuple[str, str, set]) -> int:
    path, out, removed = job
    n = 0
    with open(path, encoding="utf-8") as fi, open(out, "w", encoding="utf-8") as fo:
        for line in fi:
            if json.loads(line)["id"] not in removed:
                fo.write(line)
                n += 1
    return n


def peer_script(method: str, corpus: Path, out: Path, workers: int, params: tuple[int, int] | None = None) -> None:
    """(a) rensa or (b) datasketch signatures + datasketch MinHashLSH + union-find + kept JSONL, the
    way a user scripts it (run as a subprocess of the benchmark). ``params``: (bands, rows) instead
    of the ones MinHashLSH picks for the threshold."""
    from multiprocessing import get_context

    from datasketch import LeanMinHash, MinHashLSH

    t0 = time.perf_counter()
    punct = (out / "punct.txt").read_text(encoding="utf-8")
    files = sorted(str(f) for f in (corpus / "jsonl").glob("*.jsonl"))
    with get_context("fork").Pool(workers) as pool:
        parts = pool.map(_peer_signatures, [(f, method, punct) for f in files], chunksize=1)
    t_sig = time.perf_counter()
    ids = [i for p in parts for i in p[0]]
    sigs = np.concatenate([p[1] for p in parts])
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=params)
    mh = [LeanMinHash(seed=SEED, hashvalues=s, scheme="affine32") for s in sigs]
    with lsh.insertion_session() as session:
        for i, m in enumerate(mh):
            session.insert(i, m, check_duplication=False)
    parent = list(range(len(ids)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(mh):
        for j in lsh.query(m):
            if j > i and np.count_nonzero(sigs[i] == sigs[j]) >= THRESHOLD * NUM_PERM:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)  # the first document of a cluster is kept
    t_lsh = time.perf_counter()
    clusters = defaultdict(list)
    for i in range(len(ids)):
        clusters[find(i)].append(ids[i])
    removed = {ids[i] for i in range(len(ids)) if find(i) != i}
    (out / "kept").mkdir(exist_ok=True)
    with get_context("fork").Pool(workers) as pool:
        kept = sum(pool.map(_write_kept, [(f, str(out / "kept" / Path(f).name), removed) for f in files], chunksize=1))
    t_end = time.perf_counter()
    (out / "result.json").write_text(json.dumps({
        "documents": len(ids), "kept": kept, "removed": len(removed), "lsh_bands_rows": [lsh.b, lsh.r],
        "phases_s": {"signatures": round(t_sig - t0, 2), "lsh_and_union_find": round(t_lsh - t_sig, 2),
                     "write_kept": round(t_end - t_lsh, 2)},
        "clusters": [c for c in clusters.values() if len(c) > 1]}))


DATATROVE_E2E = r'''
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter



def main():
    corpus, out, workers, bands, rows, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    cfg = MinhashConfig(n_grams=5, num_buckets=bands, hashes_per_bucket=rows, seed=1)
    reader = lambda: JsonlReader(corpus, glob_pattern="*.jsonl", text_key="text", id_key="id")
    steps = {
        "signatures": LocalPipelineExecutor(pipeline=[reader(), MinhashDedupSignature(output_folder=f"{out}/sigs", config=cfg, language="en")],
                                            tasks=shards, workers=workers, logging_dir=f"{out}/logs/1"),
        "buckets": LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=f"{out}/sigs", output_folder=f"{out}/buckets", config=cfg)],
                                         tasks=bands, workers=workers, logging_dir=f"{out}/logs/2"),
        "cluster": LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=f"{out}/buckets", output_folder=f"{out}/remove_ids",
                                                                       config=cfg, save_cluster_id=True)],
                                         tasks=1, workers=1, logging_dir=f"{out}/logs/3"),
        "filter": LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(input_folder=f"{out}/remove_ids", load_cluster_ids=True,
                                                                               exclusion_writer=JsonlWriter(f"{out}/removed", compression=None)),
                                                  JsonlWriter(f"{out}/kept", compression=None)],
                                        tasks=shards, workers=workers, logging_dir=f"{out}/logs/4"),
    }
    phases = {}
    for name, ex in steps.items():
        t0 = time.perf_counter()
        ex.run()
        phases[name] = round(time.perf_counter() - t0, 2)
    from importlib.metadata import version
    json.dump({"phases_s": phases, "versions": {p: version(p) for p in ("datatrove", "spacy", "xxhash")}}, open(f"{out}/result.json", "w"))


if __name__ == "__main__":  # datatrove's executor starts worker processes that import this file
    main()
'''


def datatrove_clusters(out: Path) -> tuple[list[list[str]], int, int]:
    groups = defaultdict(list)
    kept = removed = 0
    for sub in ("kept", "removed"):
        for f in sorted((out / sub).glob("*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    d = json.loads(line)
                    kept += sub == "kept"
                    removed += sub == "removed"
                    c = d.get("metadata", {}).get("minhash_cluster_id", -1)
                    if c != -1:
                        groups[c].append(d["id"])
    return [g for g in groups.values() if len(g) > 1], kept, removed


# ----------------------------------------------------------------------- end to end: siftmix
def siftmix_dedup(corpus: Path, out: Path, workers: int, measure_fn) -> dict:
    """(d) ``siftmix run CONFIG.yaml`` with stages [ingest, dedup] on the corpus. Returns the
    figures."""
    import pyarrow.parquet as pq
    import yaml
    from siftmix.pipeline.config import ConfigError, config_from_dict

    run_dir = out / "run"
    cfg = {"run_dir": str(run_dir), "seed": 0, "stages": ["ingest", "dedup"],
           "sources": [{"name": "corpus", "paths": [str(corpus / "jsonl")], "format": "jsonl"}],
           "dedup": {"threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM},
           "ray": {"num_cpus": workers, "workers": workers}}
    try:
        config_from_dict(cfg)
    except (ConfigError, ValueError) as e:  # the keys are the stage's defaults anyway
        print(f"  note: dedup keys not accepted ({str(e)[:200]}); running with the stage's defaults", flush=True)
        cfg["dedup"] = {}
    path = out / "dedup.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exe = Path(sys.executable).with_name("siftmix")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "siftmix.pipeline.cli"]
    meas = measure_fn([*cmd, "run", str(path), "--force", "--workers", str(workers)], out / "log.txt")
    stage = run_dir / "20_dedup"
    manifest = json.loads((stage / "_manifest.json").read_text())
    groups = defaultdict(list)
    removed = 0
    for f in sorted((stage / manifest["attempt"] / "rejected").rglob("*.parquet")):  # the committed attempt
        t = pq.read_table(f, columns=["id", "reason"])
        for i, r in zip(t["id"].to_pylist(), t["reason"].to_pylist()):
            removed += 1
            if r and r.split(":", 1)[0] in ("duplicate_of", "exact_duplicate_of"):  # :<id of the kept document>
                groups[r.split(":", 1)[1]].append(i)
    clusters = [[k, *v] for k, v in groups.items()]
    ingest = json.loads((run_dir / "00_ingest" / "_manifest.json").read_text())
    conf = manifest.get("config", {})
    return {**meas, "stage_wall_s": manifest.get("timings", {}).get("wall_s"),
            "ingest_wall_s": ingest.get("timings", {}).get("wall_s"), "stage_timings": manifest.get("timings"),
            "lsh_bands_rows": [conf.get("bands"), conf.get("rows")], "counts": manifest.get("counts"),
            "removed": removed, "clusters": clusters}


# --------------------------------------------------------------------------------- measurement
def _kill_tree(root, proc) -> None:
    """Kill the process we started and everything under it (its group and its descendants)."""
    import signal

    import psutil

    try:
        kids = root.children(recursive=True)
    except psutil.Error:
        kids = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for k in kids:
        with contextlib.suppress(psutil.Error):
            k.kill()
    proc.wait()


def measure(cmd: list[str], log: Path, env: dict | None = None, poll: float = 0.2, timeout: float = 1800) -> dict:
    """Run ``cmd``; wall time and peak memory of its process tree (sum of RSS, sum of PSS). The
    process group is killed past ``timeout`` seconds (or on an interrupt)."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    peak_rss = peak_pss = 0
    cpu: dict[tuple, float] = {}  # (pid, start) -> last seen user+system seconds
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT,
                                start_new_session=True)
        root = psutil.Process(proc.pid)
        try:
            while proc.poll() is None:
                if time.perf_counter() - t0 > timeout:
                    _kill_tree(root, proc)
                    raise RuntimeError(f"{' '.join(cmd[:4])} ... killed after {time.perf_counter() - t0:.0f}s; log: {log}")
                rss = pss = 0
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = []
                for q in procs:
                    try:
                        mi = q.memory_full_info()
                        ct = q.cpu_times()
                        rss += mi.rss
                        pss += getattr(mi, "pss", mi.rss)
                        cpu[(q.pid, q.create_time())] = ct.user + ct.system
                    except psutil.Error:
                        pass
                peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
                time.sleep(poll)
        except BaseException:  # an interrupt: leave nothing running
            _kill_tree(root, proc)
            raise
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{log.read_text()[-4000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(cpu.values()), 1), "peak_rss_mb": round(peak_rss / 2**20),
            "peak_pss_mb": round(peak_pss / 2**20)}


# ------------------------------------------------------------------------------------- quality
def quality(methods: dict[str, list[list[str]]], families: list[list], text_of: dict[str, str],
            subset: set[str] | None = None) -> dict:
    """Pair precision / recall vs exact 5-gram Jaccard >= THRESHOLD over the pooled pairs (only
    documents in ``subset``, when given: clusters and families restricted to it)."""
    if subset is not None:
        methods = {k: [c2 for c in v if len(c2 := [x for x in c if x in subset]) > 1] for k, v in methods.items()}
        families = [f for f in families if f[0] in subset and f[1] in subset]
    import xxhash
    from siftmix.dedup.minhash import shingle_strings

    cache: dict[str, np.ndarray] = {}

    def sset(i: str) -> np.ndarray:
        if i not in cache:
            cache[i] = np.unique(np.fromiter((xxhash.xxh64_intdigest(s.encode()) for s in shingle_strings(text_of[i], NGRAM)),
                                             np.uint64))
        return cache[i]

    def jaccard(a: str, b: str) -> float:
        x, y = sset(a), sset(b)
        if len(x) == 0 and len(y) == 0:
            return 1.0
        inter = len(np.intersect1d(x, y, assume_unique=True))
        return inter / (len(x) + len(y) - inter)

    def pair(a, b):
        return (a, b) if a < b else (b, a)

    fam = defaultdict(list)
    rate_of = {}
    for orig, copy, rate in families:
        fam[orig].append(copy)
        rate_of[pair(orig, copy)] = rate
    planted = set()
    for orig, copies in fam.items():
        planted.update(pair(a, b) for a, b in combinations([orig, *copies], 2))
    method_pairs = {name: {pair(a, b) for c in cl for a, b in combinations(c, 2)} for name, cl in methods.items()}
    pool = set(planted).union(*method_pairs.values())
    jac = {p: jaccard(*p) for p in sorted(pool)}
    truth = {p for p, j in jac.items() if j >= THRESHOLD}
    by_rate = {}
    for r in RATES:
        ps = [p for p, rr in rate_of.items() if rr == r]
        if ps:
            by_rate[str(r)] = {"pairs": len(ps), "mean_jaccard": round(float(np.mean([jac[p] for p in ps])), 3),
                               "share_jaccard_ge_threshold": round(sum(p in truth for p in ps) / len(ps), 3),
                               "found_by": {name: round(sum(p in mp for p in ps) / len(ps), 3) for name, mp in method_pairs.items()}}
    res = {"pool_pairs": len(pool), "planted_pairs": len(planted), "true_pairs": len(truth),
           "true_pairs_not_planted": len(truth - planted), "planted_orig_copy_by_edit_rate": by_rate, "methods": {}}
    for name, mp in method_pairs.items():
        tp = len(mp & truth)
        sizes = [len(c) for c in methods[name]]
        partnered = {x for p in mp & truth for x in p}
        members = sum(sizes)
        res["methods"][name] = {"clusters": len(sizes), "largest_cluster": max(sizes, default=0), "pairs": len(mp),
                                "precision": round(tp / len(mp), 4) if mp else None,
                                "recall": round(tp / len(truth), 4) if truth else None,
                                "clustered_docs_with_a_true_partner": round(len(partnered) / members, 4) if members else None}
        if name != "datatrove":  # clusters list their kept document first (rensa/datasketch: union-find root; siftmix: the keeper)
            removed = [(c[0], x) for c in methods[name] for x in c[1:]]
            gone = {x for _, x in removed}
            orphans = sum(jac[pair(k, x)] < THRESHOLD for k, x in removed)
            res["methods"][name].update({
                "removed": len(removed), "removed_without_a_kept_partner": orphans,
                "removal_precision": round(1 - orphans / len(removed), 4) if removed else None,
                "true_pairs_both_kept": sum(a not in gone and b not in gone for a, b in truth)})
    return res


# ----------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 4 MB corpus, 2 MB signature slice, one repeat")
    ap.add_argument("--mb", type=float, default=None, help="end-to-end corpus size in MB of text (default 64)")
    ap.add_argument("--sig-mb", type=float, default=None, help="signature-speed slice (default 24)")
    ap.add_argument("--datatrove-sig-mb", type=float, default=None, help="datatrove's signature slice (default 4: it is slow)")
    ap.add_argument("--datatrove-mb", type=float, default=None,
                    help="datatrove's end-to-end corpus, a subset of the main one (default 16; quick: the main corpus)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=None, help="signature timings: best of N (default 3, quick 1)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: signatures,rensa,datasketch,datatrove,siftmix")
    ap.add_argument("--name", default=None, help="result file: bench/results/NAME.json (default dedup, quick dedup-quick)")
    ap.add_argument("--peer", choices=["rensa", "datasketch"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer:  # internal: one peer's end-to-end script, run as a subprocess
        params = tuple(int(x) for x in args.params.split("x")) if args.params else None
        peer_script(args.peer, Path(args.corpus), Path(args.out), args.workers, params)
        return {}
    q = args.quick
    mb = args.mb or (4 if q else 64)
    sig_mb = args.sig_mb or (2 if q else 24)
    dt_sig_mb = args.datatrove_sig_mb or (1 if q else 4)
    dt_mb = min(args.datatrove_mb or (mb if q else 16), mb)
    repeat = args.repeat or (1 if q else 3)
    name = args.name or ("dedup-quick" if q else "dedup")
    skip = set(filter(None, args.skip.split(",")))
    os.environ.update({"RAYON_NUM_THREADS": "1"})  # rensa's bulk API would use every core otherwise
    t_start = time.time()
    load_start = round(os.getloadavg()[0], 2)
    corpus = build_corpus(mb)
    if corpus is None:
        print(f"skipped: {SHARED} is absent (the dedup benchmark runs on its real documents)")
        return {"skipped": f"{SHARED} absent"}
    truth = json.loads((corpus / "truth.json").read_text())
    ids, texts = read_corpus(corpus)
    text_of = dict(zip(ids, texts))
    total_mb = truth["bytes"] / 1e6
    shards = len(list((corpus / "jsonl").glob("*.jsonl")))
    print(f"corpus {corpus}: {len(ids)} documents, {total_mb:.1f} MB, {truth['planted_copies']} planted copies", flush=True)
    res: dict = {"corpus": {"documents": len(ids), "text_mb": round(total_mb, 2), "shards": shards,
                            "planted_copies": truth["planted_copies"], "edit_rates": list(RATES),
                            "plant_fraction": PLANT_FRACTION, "seed": truth["seed"],
                            "from": "../shared/data cc/, reference/, lowquality/, neardup/ document files"}}
    from importlib.metadata import version

    res["versions"] = {p: version(p) for p in ("datasketch", "rensa", "numpy", "pyarrow", "numba")}
    if "signatures" not in skip:
        print("signature speed (1 process, 1 thread):", flush=True)
        res["signatures"] = signature_speed(ids, texts, sig_mb, dt_sig_mb, repeat)
    if "datatrove_slice" in res.get("signatures", {}):
        res["versions"]["datatrove_venv"] = res["signatures"]["datatrove_slice"]["versions"]

    from siftmix.dedup.lsh import optimal_params

    e2e: dict = {"workers": args.workers, "threshold": THRESHOLD, "num_perm": NUM_PERM,
                 "lsh_bands_rows": {"datasketch_minhashlsh_threshold_0.8": list(optimal_params(THRESHOLD, NUM_PERM)),
                                    "datatrove_default": list(DATATROVE_BANDS), "siftmix_default": list(siftmix_lsh_params())},
                 "text_mb": round(total_mb, 2), "methods": {}}
    clusters: dict[str, list[list[str]]] = {}
    dt_clusters, dt_ids = None, None
    base = WORK / "dedup-e2e"
    punct = punct_chars()
    # the peers at their own defaults for threshold 0.8 (datasketch picks 9 x 13), and rensa once more
    # with siftmix's default banding (16 x 8, chosen for recall because siftmix verifies candidates)
    sb, sr = siftmix_lsh_params()
    sift_params = f"{sb}x{sr}"
    for key, method, params in (("rensa", "rensa", None), ("datasketch", "datasketch", None),
                                (f"rensa_lsh_{sift_params}", "rensa", sift_params)):
        if method in skip or key in skip:
            continue
        out = base / key
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / "punct.txt").write_text(punct, encoding="utf-8")
        print(f"end to end: {method} + datasketch MinHashLSH {params or ''}...", flush=True)
        meas = measure([sys.executable, "-m", "bench.bench_dedup", "--peer", method, "--corpus", str(corpus), "--out", str(out),
                        "--workers", str(args.workers), *(["--params", params] if params else [])], out / "log.txt",
                       env={"RAYON_NUM_THREADS": "1"})
        r = json.loads((out / "result.json").read_text())
        clusters[key] = r.pop("clusters")
        e2e["methods"][key] = {**meas, "mb_s": round(total_mb / meas["wall_s"], 2),
                               "mb_per_cpu_s": round(total_mb / meas["cpu_s"], 2) if meas["cpu_s"] else None, **r,
                               "what": f"{method} signatures in a {args.workers}-process pool over shards, datasketch "
                                       f"MinHashLSH ({'params=' + params if params else 'threshold=0.8'}), estimated-Jaccard "
                                       "check, union-find, kept JSONL"}
        print("  ", {k: v for k, v in e2e["methods"][key].items() if k != "what"}, flush=True)
        shutil.rmtree(out / "kept", ignore_errors=True)
    py = peers_python()
    if "datatrove" not in skip:
        if py is None:
            e2e["methods"]["datatrove"] = {"skipped": "no bench/.peers-venv (run `make bench-peers`)"}
        else:
            dt_corpus = corpus if dt_mb >= mb else build_corpus(dt_mb)
            dt_truth = json.loads((dt_corpus / "truth.json").read_text())
            dt_total = dt_truth["bytes"] / 1e6
            dt_shards = len(list((dt_corpus / "jsonl").glob("*.jsonl")))
            out = base / "datatrove"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            script = out / "datatrove_minhash.py"
            script.write_text(DATATROVE_E2E)
            print("end to end: datatrove 4-step MinHash ...", flush=True)
            bands, rows = DATATROVE_BANDS
            meas = measure([str(py), str(script), str(dt_corpus / "jsonl"), str(out), str(args.workers), str(bands), str(rows),
                            str(dt_shards)], out / "log.txt", env=ONE_THREAD)
            r = json.loads((out / "result.json").read_text())
            cl, kept, removed = datatrove_clusters(out)
            dt_ids = set()
            for f in (dt_corpus / "jsonl").glob("*.jsonl"):
                with open(f, encoding="utf-8") as fh:
                    dt_ids.update(json.loads(line)["id"] for line in fh)
            if not dt_ids <= text_of.keys():
                raise RuntimeError(f"{dt_corpus} is not a subset of {corpus}: delete both and rerun")
            dt_clusters = cl
            e2e["methods"]["datatrove"] = {**meas, "text_mb": round(dt_total, 2), "mb_s": round(dt_total / meas["wall_s"], 2),
                                           "mb_per_cpu_s": round(dt_total / meas["cpu_s"], 2) if meas["cpu_s"] else None,
                                           "documents": kept + removed, "kept": kept, "removed": removed, **r,
                                           "what": f"signatures ({dt_shards} tasks) -> buckets ({bands} tasks) -> cluster -> "
                                                   f"filter ({dt_shards} tasks), {args.workers} workers, {bands}x{rows} hashes, "
                                                   "kept and removed JSONL" + ("" if dt_corpus == corpus else
                                                   f"; on the first {dt_total:.1f} MB of the corpus (a subset)")}
            print("  ", {k: v for k, v in e2e["methods"]["datatrove"].items() if k != "what"}, flush=True)
            for sub in ("kept", "removed", "sigs", "buckets"):
                shutil.rmtree(out / sub, ignore_errors=True)
    if "siftmix" not in skip:
        out = base / "siftmix"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        print("end to end: siftmix run (ingest + dedup) ...", flush=True)
        r = siftmix_dedup(corpus, out, args.workers, measure)
        if "skipped" in r:
            print("  skipped:", r["skipped"], flush=True)
            e2e["methods"]["siftmix"] = r
        else:
            clusters["siftmix"] = r.pop("clusters")
            r["mb_s"] = round(total_mb / r["wall_s"], 2)
            r["mb_per_cpu_s"] = round(total_mb / r["cpu_s"], 2) if r["cpu_s"] else None
            if r.get("stage_wall_s"):
                r["stage_mb_s"] = round(total_mb / r["stage_wall_s"], 2)
            r["what"] = ("`siftmix run` with stages [ingest, dedup]: wall_s/mb_s = the whole command (Ray start, ingest, "
                         "dedup); stage_wall_s/stage_mb_s = the dedup stage's manifest timings.wall_s")
            e2e["methods"]["siftmix"] = r
            print("  ", {k: v for k, v in r.items() if k != "what"}, flush=True)
            shutil.rmtree(out / "run", ignore_errors=True)
    res["end_to_end"] = e2e
    print("quality (pooled pairs vs exact 5-gram Jaccard) ...", flush=True)
    if dt_clusters is not None and dt_ids == set(ids):
        clusters["datatrove"], dt_clusters = dt_clusters, None
    if clusters:
        res["quality"] = quality(clusters, truth["families"], text_of)
        for k, v in res["quality"]["methods"].items():
            e2e["methods"][k]["precision"] = v["precision"]
            e2e["methods"][k]["recall"] = v["recall"]
    if dt_clusters is not None:  # datatrove ran on a subset: every method compared on that subset
        res["quality_datatrove_subset"] = {
            "note": "datatrove's corpus is a subset of the main one; the other methods' clusters (from their runs on the "
                    "whole corpus) are restricted to it",
            **quality({**clusters, "datatrove": dt_clusters}, truth["families"], text_of, subset=dt_ids)}
        for k, v in res["quality_datatrove_subset"]["methods"].items():
            e2e["methods"][k]["subset_precision"] = v["precision"]
            e2e["methods"][k]["subset_recall"] = v["recall"]
    args_s = " --quick" if q else ""
    for flag, val in (("--mb", args.mb), ("--sig-mb", args.sig_mb), ("--datatrove-sig-mb", args.datatrove_sig_mb),
                      ("--datatrove-mb", args.datatrove_mb), ("--repeat", args.repeat)):
        if val is not None:
            args_s += f" {flag} {val:g}"
    if args.skip:
        args_s += f" --skip {args.skip}"
    res["command"] = f"python -m bench.bench_dedup{args_s}"
    res["total_s"] = round(time.time() - t_start)
    res["load_average_1m_start_end"] = [load_start, round(os.getloadavg()[0], 2)]  # the machine is shared
    print(json.dumps({k: res[k] for k in ("signatures", "end_to_end") if k in res}, indent=1)[:6000])
    print("wrote", write_result(name, res))
    return res


if __name__ == "__main__":
    main()
