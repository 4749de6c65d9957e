"""Ingest throughput: siftmix vs a bare fastwarc / json loop + pyarrow write of the same files.

    python -m bench.bench_ingest [--size 60MB]

MB are megabytes of document text (uncompressed). Per core: the bare loop and siftmix's pure
function run on one core; the Ray stage runs with 1 worker (then 2 workers, for scaling).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import WORK, best_of, write_result


def bare_wet(files: list[str], out: str) -> int:
    """What a user would write by hand: fastwarc loop, decode, one Parquet file per input."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    os.makedirs(out, exist_ok=True)
    n = 0
    for i, path in enumerate(files):
        ids, urls, texts = [], [], []
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.conversion, parse_http=False):
                ids.append(rec.record_id)
                urls.append(rec.headers.get("WARC-Target-URI"))
                texts.append(rec.reader.read().decode("utf-8", "replace"))
        n += len(texts)
        pq.write_table(pa.table({"id": ids, "url": urls, "text": pa.array(texts, pa.large_string())}),
                       os.path.join(out, f"{i:05d}.parquet"), compression="zstd")
    return n


def bare_jsonl(files: list[str], out: str) -> int:
    os.makedirs(out, exist_ok=True)
    n = 0
    for i, path in enumerate(files):
        ids, texts = [], []
        with gzip.open(path, "rb") as fh:
            for line in fh:
                d = json.loads(line)
                ids.append(d.get("id"))
                texts.append(d["text"])
        n += len(texts)
        pq.write_table(pa.table({"id": ids, "text": pa.array(texts, pa.large_string())}),
                       os.path.join(out, f"{i:05d}.parquet"), compression="zstd")
    return n


def text_bytes(out: str) -> int:
    total = 0
    for f in sorted(os.listdir(out)):
        t = pq.read_table(os.path.join(out, f), columns=["text"])
        total += sum(len(s.encode()) for s in t["text"].to_pylist())
    return total


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="200MB", help="demo corpus size to generate")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="ingest", help="result file: bench/results/NAME.json")
    args = ap.parse_args(argv)

    from siftmix.pipeline.config import RayConfig, config_from_dict
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.demo import generate, parse_size
    from siftmix.pipeline.ingest.config import IngestConfig
    from siftmix.pipeline.ingest.normalize import IngestTask
    from siftmix.pipeline.ingest.readers import source_files
    from siftmix.pipeline.ingest.stage import ingest_file
    from siftmix.pipeline.runner import run_stage

    corpus = WORK / f"ingest-corpus-{args.size}"
    if not (corpus / "truth.json").exists():
        print(f"generating {args.size} demo corpus in {corpus} ...", flush=True)
        generate(str(corpus), parse_size(args.size), seed=11)
    work = WORK / "ingest-out"
    results: dict = {"size": args.size, "formats": {}}
    cases = {"wet": ("common_crawl", corpus / "cc", bare_wet), "jsonl": ("webtext2", corpus / "webtext2", bare_jsonl)}
    with ray_session(RayConfig(object_store_memory=500 * 2**20)):
        for fmt, (name, folder, bare) in cases.items():
            cfg = config_from_dict({"run_dir": str(work / "run"), "stages": ["ingest"], "sources": [{"name": name, "paths": [str(folder)]}],
                                    "ingest": {"min_chars": 1}})
            src = cfg.sources[0]
            files = source_files(src)
            shutil.rmtree(work, ignore_errors=True)
            bare_s = best_of(lambda: bare([f for f, _, _ in files], str(work / "bare")), args.repeat)
            mb = text_bytes(str(work / "bare")) / 1e6

            def pure():
                shutil.rmtree(work / "pure", ignore_errors=True)
                for i, (p, rel, f) in enumerate(files):
                    ingest_file(IngestTask(p, rel, f, name, i), src, IngestConfig(min_chars=1), str(work / "pure"))

            pure_s = best_of(pure, args.repeat)
            stage = {}
            run_stage("ingest", cfg, force=True, workers=2, log=lambda *_: None, progress=False)  # warm up the workers
            for workers in (1, 2):
                def staged():
                    m = run_stage("ingest", cfg, force=True, workers=workers, log=lambda *_: None, progress=False)
                    assert m["counts"]["rejected"] == 0
                stage[workers] = best_of(staged, args.repeat)
            r = {
                "files": len(files), "text_mb": round(mb, 2),
                "bare_loop_mb_s_per_core": round(mb / bare_s, 2),
                "siftmix_pure_mb_s_per_core": round(mb / pure_s, 2),
                "siftmix_stage_1_worker_mb_s_per_core": round(mb / stage[1], 2),
                "siftmix_stage_2_workers_mb_s": round(mb / stage[2], 2),
                "siftmix_stage_2_workers_mb_s_per_core": round(mb / stage[2] / 2, 2),
                "overhead_pure_vs_bare": round(pure_s / bare_s, 3),
                "overhead_stage_1_worker_vs_bare": round(stage[1] / bare_s, 3),
                "target_overhead": 1.5,
            }
            results["formats"][fmt] = r
            print(fmt, json.dumps(r), flush=True)
    results["command"] = "python -m bench.bench_ingest " + " ".join(argv if argv is not None else [f"--size {args.size}"])
    path = write_result(args.name, results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{time.time() - t0:.0f}s")
