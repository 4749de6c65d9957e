"""Quality filter benchmarks.

    python -m bench.bench_quality [--part dclm|speed|all]

dclm:  train on ../shared/data reference/ (positives) vs cc/ (negatives, the human-labelled file
       excluded), then measure -- never tune on -- ROC AUC of the fastText, embedding and stacked
       scores on the 499 human-labelled crawl documents of DCLM (label 1 = high quality).
       -> bench/results/quality_dclm.json
speed: fastText docs/s per core through the quality stage (1 actor) vs a bare model.predict loop
       over the same texts; embedding docs/s through the stage vs a bare SentenceTransformer.encode
       (both on one CPU thread). -> bench/results/quality_speed.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, WORK, best_of, committed_dir, write_result

SHARED = ROOT.parent / "shared" / "data"


def _quiet(*a, **k):
    pass


def dclm() -> dict:
    import pyarrow as pa
    from siftmix.filters.quality import QualityModel
    from siftmix.filters.scoring import roc_auc
    from siftmix.filters.stage import train_quality
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.runner import bare_context, run_stage

    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the DCLM measurement needs the shared data")
    ref = sorted(str(p) for p in (SHARED / "reference").glob("*.jsonl.gz"))
    cc = sorted(str(p) for p in (SHARED / "cc").glob("*.jsonl.gz") if "dclm" not in p.name)
    run = WORK / "quality-dclm"
    shutil.rmtree(run, ignore_errors=True)
    cfg = config_from_dict({"run_dir": str(run), "seed": 0, "stages": ["ingest", "quality"], "sources": [
        {"name": "reference", "paths": ref}, {"name": "common_crawl", "paths": cc, "filter": True}],
        "ingest": {"min_chars": 200}, "quality": {"scorer": "both"}})
    t0 = time.time()
    run_stage("ingest", cfg, log=_quiet, progress=False)
    ev = train_quality(bare_context("quality", cfg, log=print), str(run / "model"))
    train_s = time.time() - t0
    rows = [json.loads(line) for line in gzip.open(SHARED / "cc" / "dclm_human_quality_labels.jsonl.gz")]
    y = np.array([r["label"] for r in rows])
    agree = np.array([bool(r.get("in_agreement_subset")) for r in rows])
    text = pa.array([r["text"] for r in rows], pa.large_string())
    out = {"train": {"positives": [Path(p).name for p in ref], "negatives": [Path(p).name for p in cc],
                     "examples": ev["train_examples"], "heldout": {k: v["roc_auc"] for k, v in ev["heldout"].items()},
                     "wall_s": round(train_s, 1)},
           "dclm_human_labels": {"n": len(rows), "high_quality": int(y.sum()), "agreement_subset": int(agree.sum())},
           "roc_auc": {}}
    for scorer in ("fasttext", "embedding", "both"):
        s = QualityModel(str(run / "model"), scorer).score(text)
        out["roc_auc"][scorer] = {"all": round(roc_auc(y, s), 4), "agreement_subset": round(roc_auc(y[agree], s[agree]), 4),
                                  "mean_score_high": round(float(s[y == 1].mean()), 4), "mean_score_low": round(float(s[y == 0].mean()), 4)}
        print(scorer, out["roc_auc"][scorer], flush=True)
    out["command"] = "python -m bench.bench_quality --part dclm"
    print("wrote", write_result("quality_dclm", out))
    return out


def speed(n_fasttext_mb: str = "60MB", n_embed_docs: int = 400, embedding: bool = True) -> dict:
    import fasttext
    import pyarrow as pa
    import torch
    from siftmix.filters.quality import load_sentence_model
    from siftmix.filters.stage import train_quality
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.core.shards import read_shards
    from siftmix.pipeline.demo import generate, parse_size
    from siftmix.pipeline.runner import bare_context, run_stage

    torch.set_num_threads(1)
    corpus = WORK / f"quality-corpus-{n_fasttext_mb}"
    if not (corpus / "truth.json").exists():
        generate(str(corpus), parse_size(n_fasttext_mb), seed=3)
    base = {"sources": [{"name": "common_crawl", "paths": [str(corpus / "cc")], "filter": True},
                        {"name": "webtext2", "paths": [str(corpus / "webtext2")]}],
            "ingest": {"min_chars": 200}, "stages": ["ingest", "quality"]}
    # one trained model with all three scorers, reused by every timed run
    train = WORK / "quality-speed-train"
    shutil.rmtree(train, ignore_errors=True)
    cfg = config_from_dict({**base, "run_dir": str(train), "quality": {
        "scorer": "both", "train": {"max_docs_per_class": 2000},
        "embedding": {"reference_docs": 200, "calibration_docs": 100}}})
    run_stage("ingest", cfg, log=_quiet, progress=False)
    model_dir = str(train / "model")
    train_quality(bare_context("quality", cfg, log=_quiet), model_dir)  # the model only: scoring the corpus with `both` on CPU takes minutes
    texts = read_shards(committed_dir(str(train / "00_ingest"), "data"))
    cc = texts.filter(pa.compute.equal(texts["source"], "common_crawl"))
    cc_texts = cc["text"].to_pylist()
    mb = sum(len(t.encode()) for t in cc_texts) / 1e6
    out: dict = {"machine_note": "1 actor / 1 thread = per core", "fasttext": {}, "embedding": {}}

    # fastText: bare predict loop vs (a) siftmix's scoring path in-process, (b) the stage's
    # per-shard work (read, preprocess, predict, Pareto, write; timed inside the actor), (c) the
    # whole stage with 1 actor (plus actor start-up and model load)
    from siftmix.filters.quality import QualityModel

    ft = fasttext.load_model(str(Path(model_dir) / "model.bin"))
    bare = best_of(lambda: [ft.predict(t.replace("\n", " ")) for t in cc_texts], 3)
    # the same loop as a user's hand-written stage: read each crawl shard, predict, write it back
    # with a score column (the like-for-like baseline of the stage's per-shard work)
    import pyarrow.parquet as pq
    from siftmix.pipeline.core.shards import list_shards

    cc_shards = [f for f in list_shards(committed_dir(str(train / "00_ingest"), "data")) if Path(f).name.startswith("common_crawl")]
    bare_dir = WORK / "quality-speed-bare-io"

    def bare_io():
        bare_dir.mkdir(parents=True, exist_ok=True)
        for f in cc_shards:
            t = pq.read_table(f)
            s = [ft.predict(x.replace("\n", " "))[1][0] for x in t["text"].to_pylist()]
            pq.write_table(t.append_column("score", pa.array(s, pa.float32())), bare_dir / Path(f).name, compression="zstd")

    bare_io_s = best_of(bare_io, 3)
    qm = QualityModel(model_dir, "fasttext")
    arr = cc["text"].combine_chunks()
    path = best_of(lambda: [qm.score(arr.slice(i, 1024)) for i in range(0, len(arr), 1024)], 3)
    stage_cfg = config_from_dict({**base, "run_dir": str(WORK / "quality-speed-ft"),
                                  "quality": {"scorer": "fasttext", "model": model_dir}})
    run_stage("ingest", stage_cfg, log=_quiet, progress=False)
    walls = []

    def staged():
        m = run_stage("quality", stage_cfg, force=True, workers=1, log=_quiet, progress=False)
        walls.append(sum(f["wall_s"] for f in m["files"] if f["source"] == "common_crawl"))

    stage = best_of(staged, 3)
    shard_s = min(walls)
    n = len(cc_texts)
    out["fasttext"] = {"docs": n, "text_mb": round(mb, 2), "bare_predict_loop_docs_s": round(n / bare, 1),
                       "siftmix_score_path_docs_s": round(n / path, 1), "score_path_overhead": round(path / bare, 3),
                       "bare_loop_with_parquet_io_docs_s": round(n / bare_io_s, 1),
                       "stage_shard_work_docs_s_per_core": round(n / shard_s, 1), "stage_shard_work_overhead": round(shard_s / bare, 3),
                       "stage_shard_work_vs_bare_with_io": round(shard_s / bare_io_s, 3),
                       "stage_end_to_end_docs_s_per_core": round(n / stage, 1), "stage_end_to_end_overhead": round(stage / bare, 3),
                       "target_overhead": 1.2,
                       "note": "score path = QualityModel.score on 1024-row Arrow batches (preprocess, predict, probabilities); "
                               "shard work adds Parquet read + write and the Pareto rule; end to end adds the actor's start "
                               "(a fresh worker process, imports, model load) and the pass-through of the webtext2 shards"}
    print("fasttext", out["fasttext"], flush=True)

    # embedding: bare encode vs the stage with 1 actor, on the first n_embed_docs crawl documents
    if not embedding:
        prev = json.loads((Path(__file__).parent / "results" / "quality_speed.json").read_text())
        out["embedding"] = prev.get("embedding", {})
        out["command"] = "python -m bench.bench_quality --part speed"
        print("wrote", write_result("quality_speed", out))
        return out
    small = WORK / "quality-speed-emb-corpus"
    shutil.rmtree(small, ignore_errors=True)
    (small / "cc").mkdir(parents=True)
    sub = cc.slice(0, n_embed_docs)

    pq.write_table(sub.select(["id", "text", "url"]), small / "cc" / "cc.parquet")
    st = load_sentence_model(None, 256, "cpu")
    sub_texts = [t[:20_000] for t in sub["text"].to_pylist()]
    bare = best_of(lambda: st.encode(sub_texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False), 2)
    emb_cfg = config_from_dict({"run_dir": str(WORK / "quality-speed-emb"), "stages": ["ingest", "quality"],
                                "sources": [{"name": "common_crawl", "paths": [str(small / "cc")], "filter": True}],
                                "ingest": {"min_chars": 1}, "quality": {"scorer": "embedding", "model": model_dir}})
    run_stage("ingest", emb_cfg, log=_quiet, progress=False)
    stage = best_of(lambda: run_stage("quality", emb_cfg, force=True, workers=1, log=_quiet, progress=False), 2)
    out["embedding"] = {"docs": len(sub_texts), "device": "cpu", "threads": 1, "bare_encode_docs_s": round(len(sub_texts) / bare, 2),
                        "stage_docs_s_per_core": round(len(sub_texts) / stage, 2), "overhead": round(stage / bare, 3),
                        "target_overhead": 1.2, "max_seq_length": 256, "batch_size": 64}
    print("embedding", out["embedding"], flush=True)
    out["command"] = "python -m bench.bench_quality --part speed"
    print("wrote", write_result("quality_speed", out))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["dclm", "speed", "all"], default="all")
    ap.add_argument("--no-embedding-speed", action="store_true", help="keep the last embedding speed figures")
    args = ap.parse_args(argv)
    from siftmix.pipeline.config import RayConfig
    from siftmix.pipeline.core.ray_runner import ray_session

    res = {}
    with ray_session(RayConfig(object_store_memory=500 * 2**20)):
        if args.part in ("dclm", "all"):
            res["dclm"] = dclm()
        if args.part in ("speed", "all"):
            res["speed"] = speed(embedding=not args.no_embedding_speed)
    return res


if __name__ == "__main__":
    main()
