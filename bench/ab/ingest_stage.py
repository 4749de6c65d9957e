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
cfg = config_from_dict({"run_dir": "/tmp/ib-run", "stages": ["ingest"], "ingest": {"min_chars": 1},
                        "sources": [{"name": "cc", "paths": [corpus + "/cc"]}]})
with ray_session(RayConfig(num_cpus=2)):
    run(cfg, force=True, workers=2, log=lambda *_: None, progress=False)
    ts = []
    for _ in range(int(sys.argv[1])):
        t0 = time.time(); run(cfg, force=True, workers=2, log=lambda *_: None, progress=False); ts.append(round(time.time() - t0, 2))
print(sys.argv[2], ts)
