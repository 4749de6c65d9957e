"""Mix benchmarks.

    python -m bench.bench_mix [--size 30MB]

counting: GPT-2 tokens/s per core of siftmix's counting pass (the task that reads a shard, cuts
          long documents into pieces, tokenizes in one batched call, keeps the token ids and
          writes the pieces) vs a bare ``encode_ordinary_batch`` over the same texts (target 1.3x).
stage:    the whole mix stage (count, plan, sample, shuffle, Parquet + token shards) with 1 and
          2 workers, MB/s of input text per core; and with 1 worker, the Megatron token format
          (.bin + .idx, the default) against the npy one (.bin + .idx.npy) in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil

from bench.common import WORK, best_of, committed_dir, write_result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="30MB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="mix", help="result file: bench/results/NAME.json")
    args = ap.parse_args(argv)

    import pyarrow.parquet as pq
    from siftmix.mixing.stage import _pieces_task
    from siftmix.mixing.tokenizer import get_tokenizer
    from siftmix.pipeline.config import RayConfig, config_from_dict
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.core.shards import ShardRef, list_shards
    from siftmix.pipeline.demo import generate, parse_size
    from siftmix.pipeline.runner import run_stage

    corpus = WORK / f"ingest-corpus-{args.size}"
    if not (corpus / "truth.json").exists():
        generate(str(corpus), parse_size(args.size), seed=11)
    run = WORK / "mix-run"
    shutil.rmtree(run, ignore_errors=True)
    cfg = config_from_dict({
        "run_dir": str(run), "stages": ["ingest", "mix"],
        "sources": [{"name": "common_crawl", "paths": [str(corpus / "cc")], "filter": True},
                    {"name": "webtext2", "paths": [str(corpus / "webtext2")]},
                    {"name": "books1", "paths": [str(corpus / "books1")], "format": "txt"},
                    {"name": "books2", "paths": [str(corpus / "books2")]},
                    {"name": "wikipedia", "paths": [str(corpus / "wikipedia")]}],
        "ingest": {"min_chars": 200},
        "mix": {"shard_tokens": 2_000_000, "max_epochs": {"common_crawl": 1, "default": 10}}})
    res: dict = {"size": args.size}
    with ray_session(RayConfig(object_store_memory=500 * 2**20)):
        m_in = run_stage("ingest", cfg, log=lambda *_: None, progress=False)
        shards = list_shards(committed_dir(str(run / "00_ingest"), "data"))
        texts = [t for f in shards for t in pq.read_table(f, columns=["text"])["text"].to_pylist()]
        mb = sum(len(t.encode()) for t in texts) / 1e6
        tok = get_tokenizer("gpt2")
        enc = tok._tt
        n_tokens = sum(len(x) for x in enc.encode_ordinary_batch(texts, num_threads=1))
        bare = best_of(lambda: enc.encode_ordinary_batch(texts, num_threads=1), args.repeat)
        tmp = WORK / "mix-count"

        def ours():
            shutil.rmtree(tmp, ignore_errors=True)
            for i, f in enumerate(shards):
                ref = ShardRef(path=f, name=os.path.basename(f).removesuffix(".parquet"), source="", index=i, size=0)
                _pieces_task(ref, cfg.mix, 0, str(tmp))

        count = best_of(ours, args.repeat)
        res["counting"] = {"documents": len(texts), "text_mb": round(mb, 2), "tokens": n_tokens,
                           "bare_encode_ordinary_batch_tokens_s": round(n_tokens / bare), "siftmix_count_pass_tokens_s_per_core": round(n_tokens / count),
                           "overhead": round(count / bare, 3), "target_overhead": 1.3}
        print("counting", res["counting"], flush=True)
        stage = {}
        # token shards in Megatron's format (the default) vs the npy offsets, 1 worker, same run
        npy = config_from_dict({**cfg.model_dump(), "mix": {**cfg.mix.model_dump(), "token_format": "npy"}})
        stage["npy"] = best_of(lambda: run_stage("mix", npy, force=True, workers=1, log=lambda *_: None, progress=False), 2)
        for w in (1, 2):
            stage[w] = best_of(lambda: run_stage("mix", cfg, force=True, workers=w, log=lambda *_: None, progress=False), 2)
        m = run_stage("mix", cfg, log=lambda *_: None, progress=False)
        shard_dir = committed_dir(str(run / "40_mix"), "shards")
        out_mb = sum(os.path.getsize(os.path.join(shard_dir, f)) for f in os.listdir(shard_dir)) / 1e6
        res["stage"] = {"input_text_mb": round(m_in["counts"]["bytes_kept"] / 1e6, 2), "tokens_out": m["counts"]["tokens"],
                        "output_mb_on_disk": round(out_mb, 2),
                        "shards": len(m["shards"]), "partitions": m["partitions"],
                        "mb_s_per_core_1_worker": round(m_in["counts"]["bytes_kept"] / 1e6 / stage[1], 2),
                        "mb_s_2_workers": round(m_in["counts"]["bytes_kept"] / 1e6 / stage[2], 2),
                        "mb_s_per_core_2_workers": round(m_in["counts"]["bytes_kept"] / 1e6 / stage[2] / 2, 2),
                        "wall_s_1_worker": round(stage[1], 2), "wall_s_2_workers": round(stage[2], 2),
                        "token_format": m["tokenized"]["format"], "wall_s_1_worker_npy_format": round(stage["npy"], 2),
                        "megatron_over_npy_1_worker": round(stage[1] / stage["npy"], 3)}
        print("stage", res["stage"], flush=True)
        res["table_2_2"] = m["table_2_2"]
    res["command"] = f"python -m bench.bench_mix --size {args.size}"
    print("wrote", write_result(args.name, res))
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(WORK, exist_ok=True)
    return res


if __name__ == "__main__":
    main()
