"""`make bench`: every benchmark, results in bench/results/<name>.json (machine and commit inside).

    python -m bench.run_all [--quick]

The GPU figure of the embedding scorer comes from bench/gpu_embedding.py, run on a lent GPU
machine (see that file); it is not part of this run.
"""

from __future__ import annotations

import argparse
import time

from bench import (
    bench_decontam,
    bench_dedup,
    bench_index,
    bench_ingest,
    bench_mix,
    bench_object_storage,
    bench_quality,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="small corpora, fewer repeats: a smoke run (results in *-quick.json, not kept; fixed costs dominate)")
    args = ap.parse_args()
    t0 = time.time()
    ingest = bench_ingest.main(["--size", "20MB", "--repeat", "2", "--name", "ingest-quick"] if args.quick else [])
    mix = bench_mix.main(["--size", "10MB", "--repeat", "1", "--name", "mix-quick"] if args.quick else [])
    decontam = bench_decontam.main(["--mb", "8", "--reference-mb", "1", "--name", "decontam-quick"] if args.quick else [])
    dedup = bench_dedup.main(["--quick"] if args.quick else [])
    quality = {} if args.quick else bench_quality.main([])
    objstore = bench_object_storage.main(["--size", "30MB", "--repeat", "1", "--name", "object_storage-quick"]
                                         if args.quick else [])
    index = bench_index.main(["--size", "30MB", "--repeat", "1", "--requests", "50", "--name", "index-quick"]
                             if args.quick else [])
    print("\nsummary (overhead = siftmix time / bare loop time, per core)")
    for fmt, r in ingest["formats"].items():
        print(f"  ingest {fmt:5s}: bare {r['bare_loop_mb_s_per_core']:7.1f} MB/s/core, siftmix stage "
              f"{r['siftmix_stage_1_worker_mb_s_per_core']:7.1f} MB/s/core -> {r['overhead_stage_1_worker_vs_bare']:.2f}x (target 1.5)")
    c = mix["counting"]
    print(f"  mix counting: {c['siftmix_count_pass_tokens_s_per_core']:,} tokens/s/core vs bare "
          f"{c['bare_encode_ordinary_batch_tokens_s']:,} -> {c['overhead']:.2f}x (target 1.3); "
          f"stage {mix['stage']['mb_s_per_core_1_worker']} MB/s/core")
    print(f"  decontam scan: {decontam['siftmix']['mb_s_per_core']} MB/s/core, "
          f"{decontam['speedup_vs_reference']}x a brute-force appendix C script (target 30x)")
    if "signatures" in dedup:
        sg = dedup["signatures"]
        print(f"  dedup signatures: siftmix {sg['methods']['siftmix']['mb_s_per_core']} MB/s/core; siftmix/peer "
              + ", ".join(f"{k} {v}x" for k, v in sg["ratio_siftmix_over_peer"].items()))
    for k, v in dedup.get("end_to_end", {}).get("methods", {}).items():
        if "skipped" in v:
            print(f"  dedup end to end {k}: skipped ({v['skipped']})")
        else:
            stage = f" (dedup stage alone {v['stage_mb_s']} MB/s)" if "stage_mb_s" in v else ""
            pr = (f"pair precision {v['precision']} recall {v['recall']}" if "precision" in v else
                  f"on a {v.get('text_mb')} MB subset: pair precision {v.get('subset_precision')} recall {v.get('subset_recall')}")
            print(f"  dedup end to end {k}: {v['mb_s']} MB/s wall{stage}, peak PSS {v['peak_pss_mb']} MB, "
                  f"removed {v['removed']}, {pr}")
    if quality:
        sp = quality["speed"]
        print(f"  quality fastText: score path {sp['fasttext']['score_path_overhead']:.2f}x, shard work "
              f"{sp['fasttext']['stage_shard_work_overhead']:.2f}x (target 1.2); embedding stage "
              f"{sp['embedding']['overhead']:.2f}x (target 1.2)")
        d = quality["dclm"]["roc_auc"]
        print(f"  quality DCLM human labels ROC AUC: fastText {d['fasttext']['all']}, embedding "
              f"{d['embedding']['all']}, both {d['both']['all']}")
    o = objstore["ingest"]
    print(f"  object storage (local moto S3): ingest reading S3 {o['ratio_s3_read_vs_disk']}x the disk time, "
          f"reading and writing S3 {o['ratio_s3_read_and_write_vs_disk']}x; commit per stage "
          + ", ".join(f"{k} {v['s3'] * 1000:.0f} ms" for k, v in objstore["commit_s_per_stage"].items()))
    ix = index["index"]
    print(f"  n-gram index: {ix['bytes_per_training_token']} bytes per training token, build "
          f"{ix['build_mb_s_per_core']} MB/s/core; audit by index vs scan: command {index['audit']['speedup']}x, "
          f"index loaded {index['audit_index_loaded']['speedup_vs_scan_command']}x, service "
          f"{index['audit_service']['speedup_vs_scan_command']}x (target 50x); contains p50 "
          f"{index['contains']['http_dirty']['p50_ms']} ms over HTTP (~1,000 dirty words)")
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
