"""The persisted n-gram index: its size, its build speed, and the audit by index vs the scan.

    python -m bench.bench_index [--corpus bench/work/ingest-corpus-60MB] [--benchmarks ../shared/data/benchmarks]

On a `siftmix demo-data` corpus (ingested, and mixed only to count its GPT-2 tokens: the mix's
``tokens_available``), in one Ray session:

- ``siftmix index build`` of the ingest stage (sizes 8-13, the default): index bytes per training
  token and per n-gram, build MB/s (text bytes indexed / wall time) and per core (the Ray CPUs);
- the audit of the benchmarks (the 14 of ../shared/data/benchmarks, and the corpus's 3 demo
  benchmarks whose passages the generator planted) against the index vs the
  scan-based audit of the same stage folder (``siftmix audit -i RUN/00_ingest``), both run by the
  runner with ``--force``, best of ``--repeat``; their audit.json are asserted equal;
- the benchmark-side work alone on one core: the scan's pure pass over every shard
  (``scan_shard``) vs the lookups against the index (``index_matches``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import ROOT, WORK, best_of, write_result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(WORK / "ingest-corpus-60MB"))
    ap.add_argument("--benchmarks", default=str(ROOT.parent / "shared" / "data" / "benchmarks"))
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--name", default="index")
    args = ap.parse_args(argv)

    import yaml
    from siftmix.contamination.index import IndexAuditStage, IndexStage
    from siftmix.contamination.stage import FolderAuditStage
    from siftmix.pipeline.config import RayConfig, config_from_dict
    from siftmix.pipeline.core.manifest import read_manifest, stage_path
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.runner import run_stage

    corpus = Path(args.corpus)
    if not corpus.is_dir():
        raise SystemExit(f"no corpus at {corpus}: siftmix demo-data {corpus} --size 64MB")
    work = WORK / "index-run"
    data = yaml.safe_load((corpus / "demo.yaml").read_text())
    # the 14 real benchmarks, plus the corpus's own (the demo generator plants their passages: dirty examples)
    benches = [args.benchmarks] + ([str(corpus / "benchmarks")] if (corpus / "benchmarks").is_dir() else [])
    data.update(run_dir=str(work / "run"), stages=["ingest", "mix"], decontam={"benchmarks": benches})
    cfg = config_from_dict(data, base_dir=corpus, where=str(corpus / "demo.yaml"))
    quiet = lambda *_: None  # noqa: E731
    out: dict = {"corpus": str(corpus), "benchmarks": args.benchmarks, "ray_cpus": args.cpus}
    with ray_session(RayConfig(num_cpus=args.cpus), log=quiet):
        run_stage("ingest", cfg, log=quiet, progress=False)
        mix = run_stage("mix", cfg, log=quiet, progress=False)
        stage_dir = str(work / "run" / "00_ingest")
        tokens = mix["counts"]["tokens_available"]

        t0 = time.perf_counter()
        m = run_stage(IndexStage(stage_dir), cfg, force=True, log=quiet, progress=False, out_dir=str(work / "index"))
        build_s = time.perf_counter() - t0
        i = m["index"]
        mb = i["text_bytes"] / 1e6
        out["index"] = {"documents": i["documents"], "text_mb": round(mb, 2), "training_tokens": tokens,
                        "ngrams_total": i["ngrams_total"], "ngrams_13": i["ngrams"]["13"], "sizes": i["sizes"],
                        "bytes": i["bytes"], "bytes_per_ngram": i["bytes_per_ngram"],
                        "bytes_per_training_token": round(i["bytes"] / tokens, 2),
                        "bytes_per_training_token_13grams_only": round(i["ngrams"]["13"] * 16 / tokens, 2),
                        "build_s": round(build_s, 2), "build_mb_s": round(mb / build_s, 2),
                        "build_mb_s_per_core": round(mb / build_s / args.cpus, 2), "timings": m.get("timings")}

        def audit(stage, run_dir):
            c = config_from_dict({**data, "run_dir": str(run_dir), "stages": ["ingest", "decontam"]}, base_dir=corpus)
            t0 = time.perf_counter()
            am = run_stage(stage, c, force=True, log=quiet, progress=False)
            dt = time.perf_counter() - t0
            return dt, json.loads(Path(stage_path(str(run_dir / "30_audit"), am, "audit.json")).read_text())

        scan_t, index_t = [], []
        for _ in range(args.repeat):
            dt, scan = audit(FolderAuditStage(stage_dir), work / "audit-scan")
            scan_t.append(dt)
            dt, by_index = audit(IndexAuditStage(str(work / "index")), work / "audit-index")
            index_t.append(dt)
        assert scan == by_index, "the audit by index differs from the scan-based audit"
        out["audit"] = {"benchmarks": len(scan["benchmarks"]), "dirty": sum(b["dirty"] for b in scan["benchmarks"]),
                        "equal": scan == by_index, "scan_s": round(min(scan_t), 3), "index_s": round(min(index_t), 3),
                        "speedup": round(min(scan_t) / min(index_t), 2), "target_speedup": 50,
                        "scan_runs_s": [round(t, 3) for t in scan_t], "index_runs_s": [round(t, 3) for t in index_t],
                        "note": "both include the runner (lock, manifest, commit), loading the benchmarks and "
                                "writing the reports; the scan reads all the text with Ray tasks"}
        ia = read_manifest(str(work / "audit-index" / "30_audit"))
        out["audit"]["index_lookup_s"] = (ia.get("timings") or {}).get("lookup_s")
        # the benchmark-side work alone, on one core each (no runner, no benchmark loading, no
        # reports): every shard through the scan's pure pass vs the lookups against the index
        from siftmix.contamination.appendix_c import NgramIndex
        from siftmix.contamination.benchmarks import load_benchmarks
        from siftmix.contamination.index import Index, committed_shards, index_matches
        from siftmix.contamination.shard import scan_shard

        d = cfg.decontam
        bidx = NgramIndex.build(load_benchmarks(d.benchmarks, d.fields), d.min_n, short=d.short_examples)
        shards = committed_shards(stage_dir)[1]
        scan_pass = best_of(lambda: [scan_shard(s.path, bidx, d) for s in shards], args.repeat)
        lookup = best_of(lambda: index_matches(Index(str(work / "index")), bidx, d.snippet_chars, d.max_docs), args.repeat)
        out["benchmark_side_one_core"] = {"scan_s": round(scan_pass, 3), "index_s": round(lookup, 3),
                                          "speedup": round(scan_pass / lookup, 2),
                                          "scan_mb_s": round(mb / scan_pass, 2)}
    path = write_result(args.name, out)
    print(json.dumps(out, indent=2))
    print(path)
    return out


if __name__ == "__main__":
    main()
