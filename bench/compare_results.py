"""Compare two `make bench` result folders (the code before a change and after it, run back to
back on one machine): per-stage speed ratios, and the same ratio for the peers and bare loops
measured in the same runs (code that did not change: the machine's drift between the runs).

    python -m bench.compare_results BEFORE_DIR AFTER_DIR --name stage-contract-before-after

Ratio = after / before of a speed (> 1: faster after); for wall times it is before / after, so
that > 1 always means faster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import RESULTS, commit, machine

#: (result file, label, path of keys, "speed" or "wall", our code or a reference that did not change)
METRICS = [
    ("ingest", "ingest WET: stage, 1 worker (MB/s/core)", "formats.wet.siftmix_stage_1_worker_mb_s_per_core", "speed", "ours"),
    ("ingest", "ingest WET: stage, 2 workers (MB/s)", "formats.wet.siftmix_stage_2_workers_mb_s", "speed", "ours"),
    ("ingest", "ingest JSONL: stage, 1 worker (MB/s/core)", "formats.jsonl.siftmix_stage_1_worker_mb_s_per_core", "speed", "ours"),
    ("ingest", "ingest JSONL: stage, 2 workers (MB/s)", "formats.jsonl.siftmix_stage_2_workers_mb_s", "speed", "ours"),
    ("ingest", "ingest WET: bare fastwarc loop (reference)", "formats.wet.bare_loop_mb_s_per_core", "speed", "reference"),
    ("ingest", "ingest JSONL: bare json loop (reference)", "formats.jsonl.bare_loop_mb_s_per_core", "speed", "reference"),
    ("dedup", "dedup: signatures (MB/s/core)", "signatures.methods.siftmix.mb_s_per_core", "speed", "ours"),
    ("dedup", "dedup: the stage, 64 MB (wall s)", "end_to_end.methods.siftmix.stage_wall_s", "wall", "ours"),
    ("dedup", "dedup: siftmix run [ingest, dedup], 64 MB (wall s)", "end_to_end.methods.siftmix.wall_s", "wall", "ours"),
    ("dedup-e2e", "dedup: the stage, 64 MB, rerun back to back (wall s)", "end_to_end.methods.siftmix.stage_wall_s", "wall", "ours"),
    ("dedup-e2e", "dedup: siftmix run [ingest, dedup], rerun back to back (wall s)", "end_to_end.methods.siftmix.wall_s", "wall", "ours"),
    ("dedup", "dedup: rensa signatures (reference)", "signatures.methods.rensa.mb_s_per_core", "speed", "reference"),
    ("dedup", "dedup: rensa + datasketch script, 64 MB (reference, wall s)", "end_to_end.methods.rensa.wall_s", "wall", "reference"),
    ("decontam", "decontam: both passes (MB/s/core)", "siftmix.mb_s_per_core", "speed", "ours"),
    ("decontam", "decontam: brute-force script (reference)", "brute_force_reference.mb_s_per_core", "speed", "reference"),
    ("mix", "mix: counting pass (tokens/s/core)", "counting.siftmix_count_pass_tokens_s_per_core", "speed", "ours"),
    ("mix", "mix: stage, 1 worker (MB/s/core)", "stage.mb_s_per_core_1_worker", "speed", "ours"),
    ("mix", "mix: stage, 2 workers (MB/s)", "stage.mb_s_2_workers", "speed", "ours"),
    ("mix", "mix: bare encode_ordinary_batch (reference)", "counting.bare_encode_ordinary_batch_tokens_s", "speed", "reference"),
]


def _get(d: dict, path: str):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--name", default="before-after")
    ap.add_argument("--before-commit", default="")
    ap.add_argument("--extra", type=Path, help="a JSON file of further before/after figures to include as they are")
    a = ap.parse_args(argv)
    rows = []
    for f, label, path, kind, who in METRICS:
        b, c = (_get(json.loads((d / f"{f}.json").read_text()), path) if (d / f"{f}.json").exists() else None
                for d in (a.before, a.after))
        if b is None or c is None:
            rows.append({"metric": label, "kind": who, "missing": True})
            continue
        ratio = (c / b) if kind == "speed" else (b / c)
        rows.append({"metric": label, "kind": who, "before": b, "after": c, "faster_after": round(ratio, 3)})
    out = {"benchmark": "before_after", "before": {"folder": str(a.before), "commit": a.before_commit},
           "after": {"folder": str(a.after), "commit": commit()}, "machine": machine(),
           "note": "faster_after > 1: the code after the change is faster; reference rows are code that did not change "
                   "(peers, bare loops): their spread is the machine's drift between the two runs",
           "rows": rows, **({"extra": json.loads(a.extra.read_text())} if a.extra else {}), "command": f"python -m bench.compare_results {a.before} {a.after} --name {a.name}"
                                                   + (f" --extra {a.extra}" if a.extra else "")}
    (RESULTS / f"{a.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        print(f"  {r['metric']:<62} " + ("missing" if r.get("missing") else
              f"{r['before']:>12,} -> {r['after']:>12,}  x{r['faster_after']:.3f}"))
    return out


if __name__ == "__main__":
    main()
