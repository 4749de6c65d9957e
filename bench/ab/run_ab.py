"""Interleaved before/after runs of bench/ab/ingest_pure.py and ingest_stage.py; writes
bench/results/<name>.json. The code before is installed with `pip install --no-deps --target
BASE_SITE` from a worktree of BASE_COMMIT.

    python bench/ab/run_ab.py NAME BASE_SITE BASE_COMMIT [ROUNDS]
"""
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.common import write_result  # noqa: E402

name, base_site, base_commit = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
here = Path(__file__).resolve().parent
py = sys.executable


def run(script: str, args: list[str], base: bool) -> float:
    env = dict(os.environ, PYTHONPATH=base_site) if base else dict(os.environ)
    env.pop("PYTHONPATH", None) if not base else None
    out = subprocess.run([py, str(here / script), *args], capture_output=True, text=True, env=env, cwd="/tmp",
                         check=True).stdout
    return min(float(x) for x in re.findall(r"[\d.]+", out.split("[", 1)[1]))


cases = {"pure_wet_s": ("ingest_pure.py", ["wet", "3", "x"]), "pure_jsonl_s": ("ingest_pure.py", ["jsonl", "3", "x"]),
         "stage_wet_2_workers_s": ("ingest_stage.py", ["3", "x", "cc", "2"]),
         "stage_jsonl_1_worker_s": ("ingest_stage.py", ["3", "x", "webtext2", "1"])}
res = {k: {"before": [], "after": []} for k in cases}
for _ in range(rounds):
    for k, (script, args) in cases.items():
        res[k]["before"].append(run(script, args, True))
        res[k]["after"].append(run(script, args, False))
summary = {k: {**v, "before_median": statistics.median(v["before"]), "after_median": statistics.median(v["after"]),
               "after_over_before": round(statistics.median(v["after"]) / statistics.median(v["before"]), 3)}
           for k, v in res.items()}
print(json.dumps(summary, indent=1))
print(write_result(name, {"before_commit": base_commit, "rounds": rounds, "corpus": "bench/work/ingest-corpus-200MB",
                          "method": "best of 3 per process, processes interleaved before/after; median of the bests",
                          "results": summary}))
