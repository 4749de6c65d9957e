"""Object storage: the ingest stage reading from a local S3 server vs from local disk (the same
files), and the cost of the commit of each stage, on disk and on S3.

    python -m bench.bench_object_storage [--size 300MB] [--repeat 3]

The S3 server is moto's (``ThreadedMotoServer``, in this process, on loopback): a pure-Python
server sharing the machine's cores with the run, so the ratio is an upper bound of what S3
costs siftmix itself (the client side: requests, streaming, retries) plus moto's own CPU; a
real S3 adds network latency and gives back the cores. Disk and S3 runs are interleaved
(best of ``--repeat``) on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import time

from bench.common import WORK, write_result


def _server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    srv.start()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"})
    return srv


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="300MB", help="demo corpus size to generate")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--name", default="object_storage", help="result file: bench/results/NAME.json")
    args = ap.parse_args(argv)

    srv = _server()  # before Ray starts: its workers inherit the endpoint and the keys
    import boto3
    from siftmix.pipeline.config import RayConfig, config_from_dict
    from siftmix.pipeline.core import storage
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.demo import generate, parse_size
    from siftmix.pipeline.runner import run_pipeline, run_stage

    corpus = WORK / f"ingest-corpus-{args.size}"
    if not (corpus / "truth.json").exists():
        print(f"generating {args.size} demo corpus in {corpus} ...", flush=True)
        generate(str(corpus), parse_size(args.size), seed=11)
    boto3.client("s3").create_bucket(Bucket="bench-data")
    t0 = time.perf_counter()
    for sub in ("cc", "webtext2"):
        storage.copy(str(corpus / sub), f"s3://bench-data/corpus/{sub}")
    upload_s = time.perf_counter() - t0
    work = WORK / "object-storage"
    shutil.rmtree(work, ignore_errors=True)
    in_mb = sum(f.stat().st_size for sub in ("cc", "webtext2") for f in (corpus / sub).iterdir()) / 1e6
    results: dict = {"size": args.size, "input_mb_compressed": round(in_mb, 2), "upload_s": round(upload_s, 2),
                     "server": "moto 5.2.5 ThreadedMotoServer in the benchmark process (loopback)"}

    def cfg(where: str, run_dir: str):
        root = str(corpus) if where == "disk" else "s3://bench-data/corpus"
        return config_from_dict({"run_dir": run_dir, "stages": ["ingest"], "ingest": {"min_chars": 1},
                                 "sources": [{"name": "common_crawl", "paths": [f"{root}/cc"]},
                                             {"name": "webtext2", "paths": [f"{root}/webtext2"]}]})

    cases = {"disk -> disk": cfg("disk", str(work / "a")), "s3 -> disk": cfg("s3", str(work / "b")),
             "s3 -> s3": cfg("s3", "s3://bench-data/run-ingest")}
    times: dict[str, list[float]] = {k: [] for k in cases}
    outputs = {}
    with ray_session(RayConfig(object_store_memory=500 * 2**20)):
        for c in cases.values():  # warm-up: workers, imports, caches
            run_stage("ingest", c, force=True, workers=2, log=lambda *_: None, progress=False)
        for _ in range(args.repeat):
            for name, c in cases.items():  # interleaved: the machine's noise hits every case alike
                t = time.perf_counter()
                m = run_stage("ingest", c, force=True, workers=2, log=lambda *_: None, progress=False)
                times[name].append(time.perf_counter() - t)
                outputs[name] = (m["counts"], m["output_fingerprint"])
        assert len({json.dumps(v[0], sort_keys=True) for v in outputs.values()}) == 1, "different counts"
        best = {k: min(v) for k, v in times.items()}
        results["ingest"] = {
            "seconds_best": {k: round(v, 3) for k, v in best.items()},
            "mb_s_compressed_input": {k: round(in_mb / v, 2) for k, v in best.items()},
            "ratio_s3_read_vs_disk": round(best["s3 -> disk"] / best["disk -> disk"], 3),
            "ratio_s3_read_and_write_vs_disk": round(best["s3 -> s3"] / best["disk -> disk"], 3),
            "workers": 2,
        }
        print("ingest", json.dumps(results["ingest"]), flush=True)

        # the commit of each stage (list the attempt, write the manifest, remove other attempts)
        commits: dict[str, dict[str, float]] = {}
        real_commit = storage.StageOutput.commit

        def timed(self, manifest):
            t = time.perf_counter()
            try:
                return real_commit(self, manifest)
            finally:
                where = "s3" if storage.is_url(self.final) else "disk"
                commits.setdefault(storage.basename(self.final), {})[where] = round(time.perf_counter() - t, 4)

        storage.StageOutput.commit = timed
        try:
            demo = WORK / "object-storage-demo"
            if not (demo / "truth.json").exists():
                generate(str(demo), parse_size("10MB"), seed=7)
            storage.copy(str(demo), "s3://bench-data/demo")
            for where in ("disk", "s3"):
                root = str(demo) if where == "disk" else "s3://bench-data/demo"
                run_dir = str(work / "demo-run") if where == "disk" else "s3://bench-data/demo-run"
                c = config_from_dict({
                    "run_dir": run_dir, "seed": 5, "stages": ["ingest", "quality", "dedup", "decontam", "mix"],
                    "sources": [{"name": "common_crawl", "paths": [f"{root}/cc"], "filter": True},
                                {"name": "webtext2", "paths": [f"{root}/webtext2"]},
                                {"name": "books1", "paths": [f"{root}/books1"], "format": "txt"},
                                {"name": "books2", "paths": [f"{root}/books2"]},
                                {"name": "wikipedia", "paths": [f"{root}/wikipedia"]}],
                    "ingest": {"min_chars": 200}, "decontam": {"benchmarks": [f"{root}/benchmarks"]}})
                t = time.perf_counter()
                ms = run_pipeline(c, force=True, log=lambda *_: None)
                results.setdefault("demo_pipeline_s", {})[where] = round(time.perf_counter() - t, 2)
                for st, m in ms.items():
                    commits.setdefault(f"files:{st}", {})[where] = len(m["outputs"])
        finally:
            storage.StageOutput.commit = real_commit
        results["commit_s_per_stage"] = {k: v for k, v in commits.items() if not k.startswith("files:")}
        results["files_per_stage"] = {k.removeprefix("files:"): v["disk"] for k, v in commits.items() if k.startswith("files:")}
        print("commit", json.dumps(results["commit_s_per_stage"]), flush=True)
    srv.stop()
    results["command"] = "python -m bench.bench_object_storage " + " ".join(argv or [f"--size {args.size}"])
    path = write_result(args.name, results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"{time.time() - t0:.0f}s")
