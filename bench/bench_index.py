"""The persisted n-gram index: its size, its build speed, the audit by index vs the scan, and the
lookup service's latency.

    python -m bench.bench_index [--size 60MB] [--benchmarks ../shared/data/benchmarks] [--name index]

On a `siftmix demo-data` corpus (``bench/work/ingest-corpus-<size>``, generated when absent, seed
11; ingested, and mixed only to count its GPT-2 tokens: the mix's ``tokens_available``), in one
Ray session:

- ``siftmix index build`` of the ingest stage (sizes 8-13, the default): index bytes per training
  token and per n-gram, build MB/s (text bytes indexed / wall time) and per core (the Ray CPUs);
- the audit of the benchmarks (the 14 of ../shared/data/benchmarks, and the corpus's 3 demo
  benchmarks whose passages the generator planted) against the index vs the scan-based audit of
  the same stage folder (``siftmix audit -i RUN/00_ingest``), both run by the runner with
  ``--force``, best of ``--repeat``; their audit.json are asserted equal;
- the same audit with the index already loaded: ``audit_by_index`` in this process (what the
  service runs; its phases timed: loading the benchmark files, their n-gram tables, the lookups,
  the reports) and the service over HTTP (``POST /v1/audit``, one request per benchmark file,
  each answer's benchmark asserted equal to the scan's), each against the scan-based command;
- the benchmark-side work alone on one core: the scan's pure pass over every shard
  (``scan_shard``) vs the lookups against the index (``index_matches``);
- ``contains`` latency for a passage of ~1,000 words, dirty (consecutive text of indexed
  documents: every 13-gram found) and clean (the same words shuffled), p50/p99 in process and
  over HTTP (uvicorn on loopback, one keep-alive client).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.common import ROOT, WORK, best_of, write_result


def _quantiles(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=100)
    return {"n": len(xs), "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
            "mean_ms": round(statistics.fmean(xs) * 1000, 2)}


def _serve(app):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


def _passages(idx, words_wanted: int = 1000) -> tuple[str, str]:
    """(dirty, clean): consecutive text of indexed documents up to ~1,000 words; its words shuffled."""
    parts, n, doc = [], 0, 0
    while n < words_wanted and doc < len(idx.docs()["id"]):
        ws = idx.text(doc).split()
        take = ws[:words_wanted - n]
        if len(take) >= 13:
            parts.append(" ".join(take))
            n += len(take)
        doc += 1
    dirty = "\n\n".join(parts)
    ws = dirty.split()
    random.Random(0).shuffle(ws)
    return dirty, " ".join(ws)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="60MB", help="demo corpus size (bench/work/ingest-corpus-<size>)")
    ap.add_argument("--corpus", default=None, help="a demo-data corpus folder (default: from --size)")
    ap.add_argument("--benchmarks", default=str(ROOT.parent / "shared" / "data" / "benchmarks"))
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--requests", type=int, default=200, help="contains requests per passage, in process and over HTTP")
    ap.add_argument("--name", default="index")
    args = ap.parse_args(argv)

    import yaml
    from siftmix.contamination.appendix_c import NgramIndex
    from siftmix.contamination.benchmarks import benchmark_files, load_benchmarks
    from siftmix.contamination.index import (
        Index,
        IndexAuditStage,
        IndexStage,
        audit_by_index,
        committed_shards,
        index_matches,
        lookup,
    )
    from siftmix.contamination.serve import contains, make_app
    from siftmix.contamination.shard import scan_shard
    from siftmix.contamination.stage import FolderAuditStage, benchmark_side, write_audit
    from siftmix.pipeline.config import RayConfig, config_from_dict
    from siftmix.pipeline.core.manifest import read_manifest, stage_path
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.demo import generate, parse_size
    from siftmix.pipeline.runner import run_stage

    corpus = Path(args.corpus) if args.corpus else WORK / f"ingest-corpus-{args.size}"
    if not (corpus / "demo.yaml").exists():
        print(f"generating {args.size} demo corpus in {corpus} ...", flush=True)
        generate(str(corpus), parse_size(args.size), seed=11)
    work = WORK / f"{args.name}-run"
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
        scan_s = min(scan_t)
        out["audit"] = {"benchmarks": len(scan["benchmarks"]), "dirty": sum(b["dirty"] for b in scan["benchmarks"]),
                        "equal": scan == by_index, "scan_s": round(scan_s, 3), "index_s": round(min(index_t), 3),
                        "speedup": round(scan_s / min(index_t), 2), "target_speedup": 50,
                        "scan_runs_s": [round(t, 3) for t in scan_t], "index_runs_s": [round(t, 3) for t in index_t],
                        "note": "both commands include the runner (lock, manifest, commit), loading the benchmarks and "
                                "writing the reports; the scan reads all the text with Ray tasks"}
        ia = read_manifest(str(work / "audit-index" / "30_audit"))
        out["audit"]["index_lookup_s"] = (ia.get("timings") or {}).get("lookup_s")

        d = cfg.decontam
        # ---- the audit with the index already loaded (the service's function), in this process, by phase
        t0 = time.perf_counter()
        idx = Index(str(work / "index"))
        idx.open_all()
        load_index_s = time.perf_counter() - t0
        phases: dict[str, list[float]] = {k: [] for k in ("read_benchmarks", "benchmark_ngrams", "lookups", "reports",
                                                          "total", "reports_without_subsets", "total_without_subsets")}
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                t = [time.perf_counter()]
                bl = load_benchmarks(d.benchmarks, d.fields)
                t.append(time.perf_counter())
                p = benchmark_side(bl, d)
                t.append(time.perf_counter())
                p = lookup(idx, p, d)
                t.append(time.perf_counter())
                a = write_audit(p, p["training"], d.model_dump(), cfg.seed, tmp)
                t.append(time.perf_counter())
            with tempfile.TemporaryDirectory() as tmp:  # what the service writes: the reports, not the subsets
                t0 = time.perf_counter()
                a2 = write_audit(p, p["training"], d.model_dump(), cfg.seed, tmp, subsets=False)
                phases["reports_without_subsets"].append(time.perf_counter() - t0)
            for k, (x, y) in zip(list(phases)[:4], zip(t, t[1:])):
                phases[k].append(y - x)
            phases["total"].append(t[-1] - t[0])
            phases["total_without_subsets"].append(t[-2] - t[0] + phases["reports_without_subsets"][-1])
        assert json.loads(json.dumps(a)) == scan == json.loads(json.dumps(a2)), "audit_by_index differs from the scan"
        with tempfile.TemporaryDirectory() as tmp:  # the one-call form the service uses: the same result
            assert json.loads(json.dumps(audit_by_index(idx, load_benchmarks(d.benchmarks, d.fields), d, tmp))) == scan
        inproc = {k: round(min(v), 3) for k, v in phases.items()}
        out["audit_index_loaded"] = {
            "index_open_s": round(load_index_s, 3), "phases_s": inproc,
            "speedup_vs_scan_command": round(scan_s / inproc["total"], 2),
            "speedup_without_subsets_vs_scan_command": round(scan_s / inproc["total_without_subsets"], 2),
            "speedup_lookups_only_vs_scan_command": round(scan_s / inproc["lookups"], 2),
            "note": "audit_by_index in this process, index opened once (not timed); the same audit.json as the scan; "
                    "without subsets: the clean/dirty subsets named, not written (what the service does)"}

        # ---- the service over HTTP: one POST /v1/audit per benchmark file
        app = make_app(str(work / "index"))
        server, thread, port = _serve(app)
        try:
            files = benchmark_files(d.benchmarks)
            scan_by_name = {b["name"]: b for b in scan["benchmarks"]}

            def http_audits():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                res = []
                for f in files:
                    conn.request("POST", f"/v1/audit?name={f}", body=Path(f).read_bytes())
                    r = conn.getresponse()
                    body = r.read()
                    assert r.status == 200, body[:300]
                    res.append(json.loads(body))
                conn.close()
                return res

            http_t = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = http_audits()
                http_t.append(time.perf_counter() - t0)
            for r in res:
                assert r["benchmarks"][0] == scan_by_name[r["benchmarks"][0]["name"]], r["benchmarks"][0]["name"]
            out["audit_service"] = {"requests": len(files), "total_s": round(min(http_t), 3),
                                    "runs_s": [round(t, 3) for t in http_t],
                                    "speedup_vs_scan_command": round(scan_s / min(http_t), 2),
                                    "equal_per_benchmark": True,
                                    "note": "one POST /v1/audit per benchmark file (17), sequential, one keep-alive "
                                            "connection; each answer's benchmark equals the scan's; the service writes "
                                            "no subsets (the answer is the report)"}

            # ---- contains latency, ~1,000 words, in process and over HTTP
            dirty, clean = _passages(idx)
            lat: dict = {"words": {"dirty": len(dirty.split()), "clean": len(clean.split())}}
            for kind, text in (("dirty", dirty), ("clean", clean)):
                res = contains(idx, text)
                lat.setdefault("matched_ngrams", {})[kind] = res["matched_ngrams"]
                xs = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    contains(idx, text)
                    xs.append(time.perf_counter() - t0)
                lat[f"in_process_{kind}"] = _quantiles(xs)
                body = json.dumps({"text": text}).encode()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                xs = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    conn.request("POST", "/v1/contains", body=body, headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    payload = r.read()
                    xs.append(time.perf_counter() - t0)
                    assert r.status == 200
                conn.close()
                lat[f"http_{kind}"] = _quantiles(xs)
                lat.setdefault("response_bytes", {})[kind] = len(payload)
            out["contains"] = lat
        finally:
            server.should_exit = True
            thread.join(30)

        # ---- the benchmark-side work alone, on one core each (no runner, no benchmark loading, no
        # reports): every shard through the scan's pure pass vs the lookups against the index
        bidx = NgramIndex.build(load_benchmarks(d.benchmarks, d.fields), d.min_n, short=d.short_examples)
        shards = committed_shards(stage_dir)[1]
        scan_pass = best_of(lambda: [scan_shard(s.path, bidx, d) for s in shards], args.repeat)
        lookups = best_of(lambda: index_matches(Index(str(work / "index")), bidx, d.snippet_chars, d.max_docs), args.repeat)
        out["benchmark_side_one_core"] = {"scan_s": round(scan_pass, 3), "index_s": round(lookups, 3),
                                          "speedup": round(scan_pass / lookups, 2),
                                          "scan_mb_s": round(mb / scan_pass, 2)}
    path = write_result(args.name, out)
    print(json.dumps(out, indent=2))
    print(path)
    return out


if __name__ == "__main__":
    main()
