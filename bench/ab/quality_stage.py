"""Quality stage timing, old or new API: fastText scoring stage with a reused model, 1 and 2 workers, best of 3."""
import json
import shutil
import sys
import time
from pathlib import Path

work = Path(sys.argv[1]); out = sys.argv[2]
from siftmix.pipeline.config import RayConfig, config_from_dict

try:
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.runner import run_stage
    def run(name, cfg, **kw): return run_stage(name, cfg, **kw)
except ImportError:
    from siftmix.pipeline import runner
    from siftmix.pipeline.ray_runner import ray_session
    def run(name, cfg, **kw): return {"ingest": runner.run_ingest, "quality": runner.run_quality}[name](cfg, **kw)
from siftmix.pipeline.demo import generate

corpus = Path("/tmp/qcorpus")
if not (corpus / "truth.json").exists():
    generate(str(corpus), 30_000_000, seed=0)
base = {"sources": [{"name": "common_crawl", "paths": [str(corpus / "cc")], "filter": True},
                    {"name": "webtext2", "paths": [str(corpus / "webtext2")]},
                    {"name": "books2", "paths": [str(corpus / "books2")]}],
        "ingest": {"min_chars": 200}, "stages": ["ingest", "quality"], "run_dir": str(work / "run"),
        "quality": {"train": {"max_docs_per_class": 5000}}}
q = lambda *a, **k: None
res = {}
with ray_session(RayConfig(num_cpus=2, object_store_memory=500 * 2**20)):
    cfg = config_from_dict(base)
    run("ingest", cfg, log=q, progress=False)
    t0 = time.time(); m = run("quality", cfg, force=True, log=q, progress=False); res["train_and_filter_s"] = round(time.time() - t0, 2)
    shutil.rmtree(work / "model", ignore_errors=True); shutil.copytree(work / "run" / "10_quality" / "model", work / "model")
    cfg = config_from_dict({**base, "quality": {**base["quality"], "model": str(work / "model")}})
    run("quality", cfg, force=True, log=q, progress=False)  # warm
    for w in (1, 2):
        ts = []
        for _ in range(3):
            t0 = time.time(); m = run("quality", cfg, force=True, workers=w, log=q, progress=False); ts.append(time.time() - t0)
        res[f"filter_stage_{w}_workers_s"] = round(min(ts), 3)
    res["documents"] = m["counts"]["in"]; res["kept"] = m["counts"]["kept"]
json.dump(res, open(out, "w"), indent=1); print(res)
