"""`make bench`: every benchmark, results in bench/results/<name>.json (machine and commit inside).

    python -m bench.run_all [--quick]
"""

from __future__ import annotations

import argparse
import time

from bench import bench_ingest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small corpora, one repeat (a smoke run)")
    args = ap.parse_args()
    t0 = time.time()
    ingest = bench_ingest.main(["--size", "20MB", "--repeat", "2", "--name", "ingest-quick"] if args.quick else [])
    print("\nsummary (overhead = siftmix time / bare loop time, per core; target <= 1.5)")
    for fmt, r in ingest["formats"].items():
        print(f"  ingest {fmt:5s}: bare {r['bare_loop_mb_s_per_core']:7.1f} MB/s/core, siftmix stage "
              f"{r['siftmix_stage_1_worker_mb_s_per_core']:7.1f} MB/s/core -> overhead {r['overhead_stage_1_worker_vs_bare']:.2f}x; "
              f"2 workers {r['siftmix_stage_2_workers_mb_s']:.1f} MB/s")
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
