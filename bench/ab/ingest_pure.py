"""The ingest worker in this process (no Ray) on the 200 MB bench corpus's WET or JSONL files:
best of N, for before/after comparisons (run with PYTHONPATH=<old install> for the code before).

    python bench/ab/ingest_pure.py wet|jsonl N LABEL
"""
import glob
import shutil
import sys
import time

from siftmix.pipeline.ingest.config import IngestConfig, SourceConfig
from siftmix.pipeline.ingest.normalize import IngestTask
from siftmix.pipeline.ingest.stage import ingest_file

corpus = "/work/main/bench/work/ingest-corpus-200MB"
fmt, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = sorted(glob.glob(f"{corpus}/{'cc' if fmt == 'wet' else 'webtext2'}/*"))
src = SourceConfig(name="s", paths=files)


def once():
    shutil.rmtree("/tmp/ab-pure", ignore_errors=True)
    for i, p in enumerate(files):
        ingest_file(IngestTask(p, p.rsplit("/", 1)[1], fmt, "s", i), src, IngestConfig(min_chars=1), "/tmp/ab-pure")


once()
ts = []
for _ in range(n):
    t0 = time.perf_counter()
    once()
    ts.append(round(time.perf_counter() - t0, 3))
print(label, fmt, min(ts), ts)
