import sys
import time

from siftmix.pipeline.config import RayConfig, config_from_dict

try:
    from siftmix.pipeline.core.ray_runner import ray_session
    from siftmix.pipeline.runner import run_stage
    run = lambda cfg, **kw: run_stage("ingest", cfg, **kw)
except ImportError:
    from siftmix.pipeline.ray_runner import ray_session
    from siftmix.pipeline.runner import run_ingest as run
corpus = "/work/main/bench/work/ingest-corpus-200MB"
folder = sys.argv[3] if len(sys.argv) > 3 else "cc"        # cc (WET) or webtext2 (JSONL)
workers = int(sys.argv[4]) if len(sys.argv) > 4 else 2
cfg = config_from_dict({"run_dir": "/tmp/ib-run", "stages": ["ingest"], "ingest": {"min_chars": 1},
                        "sources": [{"name": "cc", "paths": [corpus + "/" + folder]}]})
with ray_session(RayConfig(num_cpus=2)):
    run(cfg, force=True, workers=workers, log=lambda *_: None, progress=False)
    ts = []
    for _ in range(int(sys.argv[1])):
        t0 = time.time(); run(cfg, force=True, workers=workers, log=lambda *_: None, progress=False); ts.append(round(time.time() - t0, 2))
print(sys.argv[2], ts)
