"""Stage runners: plan a stage, skip it if finished, else map its pure function over Ray and
commit its output with a manifest."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable

from .config import STAGE_ORDER, IngestConfig, RunConfig, SourceConfig, stable_hash
from .ingest import IngestTask, ingest_file
from .ray_runner import Progress, map_tasks, ray_session
from .readers import source_files
from .stage import files_fingerprint, is_finished, stage_output

STAGE_DIRS = {"ingest": "00_ingest"}


class StageError(RuntimeError):
    """A stage could not finish; the message is one line for the user."""


def stage_dir(cfg: RunConfig, stage: str) -> str:
    return os.path.join(cfg.run_dir, STAGE_DIRS[stage])


# --------------------------------------------------------------------------- ingest

def ingest_config_hash(cfg: RunConfig) -> str:
    return stable_hash({"stage": "ingest", "sources": [s.model_dump() for s in cfg.sources],
                        "ingest": cfg.ingest.model_dump()})


def plan_ingest(cfg: RunConfig) -> list[IngestTask]:
    tasks = []
    for src in cfg.sources:
        files = source_files(src)
        if not files:
            raise StageError(f"source {src.name!r}: no input files of a known format in {', '.join(src.paths)}")
        for i, (path, rel, fmt) in enumerate(files):
            tasks.append(IngestTask(path=path, rel=rel, fmt=fmt, source=src.name, index=i))
    return tasks


def _ingest_task(task: dict, source: dict, ingest: dict, out_dir: str) -> dict:
    """Runs on a Ray worker: one input file."""
    t = IngestTask(**task)
    stats = ingest_file(t, SourceConfig.model_construct(**source), IngestConfig(**ingest), out_dir)
    return stats.to_dict()


def summarize(results: list[dict]) -> dict:
    """Counts for the manifest: in = kept + rejected, in total and per source."""
    by_source: dict[str, dict] = defaultdict(lambda: {"in": 0, "kept": 0, "rejected": 0, "rejected_by_reason": Counter(),
                                                      "bytes_in": 0, "chars_kept": 0, "bytes_kept": 0, "files": 0})
    for r in results:
        s = by_source[r["source"]]
        s["files"] += 1
        s["in"] += r["docs_in"]
        s["kept"] += r["kept"]
        s["rejected"] += sum(r["rejected"].values())
        s["rejected_by_reason"].update(r["rejected"])
        for k in ("bytes_in", "chars_kept", "bytes_kept"):
            s[k] += r[k]
    total_reasons: Counter = Counter()
    for s in by_source.values():
        total_reasons.update(s["rejected_by_reason"])
        s["rejected_by_reason"] = dict(sorted(s["rejected_by_reason"].items()))
    return {
        "in": sum(s["in"] for s in by_source.values()),
        "kept": sum(s["kept"] for s in by_source.values()),
        "rejected": sum(s["rejected"] for s in by_source.values()),
        "rejected_by_reason": dict(sorted(total_reasons.items())),
        "bytes_in": sum(s["bytes_in"] for s in by_source.values()),
        "bytes_kept": sum(s["bytes_kept"] for s in by_source.values()),
        "by_source": dict(sorted(by_source.items())),
    }


def run_ingest(cfg: RunConfig, *, force: bool = False, workers: int | None = None, console=None,
               log: Callable[[str], None] = print, out_dir: str | None = None, progress: bool = True) -> dict:
    out_dir = out_dir or stage_dir(cfg, "ingest")
    tasks = plan_ingest(cfg)
    chash = ingest_config_hash(cfg)
    fp = files_fingerprint([t.path for t in tasks])
    if not force and (m := is_finished(out_dir, chash, fp)):
        log(f"ingest: finished earlier, skipped ({m['counts']['kept']} documents in {out_dir})")
        return m
    srcs = {s.name: s.model_dump() for s in cfg.sources}
    total_bytes = sum(os.path.getsize(t.path) for t in tasks)
    # Biggest files first: better load balance. Output does not depend on the order.
    order = sorted(tasks, key=lambda t: -os.path.getsize(t.path))
    with stage_output(out_dir) as out:
        bar = Progress("ingest", len(tasks), total_bytes, console=console, enabled=progress)
        results, fatal = [], []
        try:
            payload = [{"task": t.__dict__, "source": srcs[t.source]} for t in order]
            for r in map_tasks(_run_ingest_payload, payload, workers=workers or cfg.ray.workers,
                               fn_kwargs={"ingest": cfg.ingest.model_dump(), "out_dir": out.tmp}):
                results.append(r)
                if r.get("fatal"):
                    fatal.append(r["fatal"])
                bar.advance(1, r["bytes_in"])
        finally:
            bar.close()
        if fatal:
            more = f" (and {len(fatal) - 1} more files)" if len(fatal) > 1 else ""
            raise StageError(f"ingest failed: {sorted(fatal)[0]}{more}")
        results.sort(key=lambda r: (r["source"], r["file"]))
        counts = summarize(results)
        if counts["in"] != counts["kept"] + counts["rejected"]:
            raise StageError(f"ingest: counts do not add up ({counts['in']} in, {counts['kept']} kept, {counts['rejected']} rejected)")
        manifest = out.commit({
            "stage": "ingest",
            "config_hash": chash,
            "input_fingerprint": fp,
            "config": {"sources": [s.model_dump() for s in cfg.sources], "ingest": cfg.ingest.model_dump()},
            "counts": counts,
            "files": results,
            "ray": {"workers": workers or cfg.ray.workers},
        })
    wall = manifest["timings"]["wall_s"]
    log(f"ingest: {counts['in']} records -> {counts['kept']} documents kept, {counts['rejected']} rejected "
        f"({', '.join(f'{k} {v}' for k, v in counts['rejected_by_reason'].items()) or 'none'}); "
        f"{counts['bytes_in'] / 1e6:.1f} MB in {wall:.1f}s")
    return manifest


def _run_ingest_payload(p: dict, ingest: dict, out_dir: str) -> dict:
    return _ingest_task(p["task"], p["source"], ingest, out_dir)


# --------------------------------------------------------------------------- whole run

STAGE_RUNNERS = {"ingest": run_ingest}


def run_pipeline(cfg: RunConfig, *, force: bool = False, address: str | None = None, workers: int | None = None,
                 until: str | None = None, console=None, log: Callable[[str], None] = print) -> dict:
    """Run the configured stages in order; finished stages are skipped (resume)."""
    manifests = {}
    with ray_session(cfg.ray, address=address, log=log):
        for stage in STAGE_ORDER:
            if stage not in cfg.stages:
                continue
            manifests[stage] = STAGE_RUNNERS[stage](cfg, force=force, workers=workers, console=console, log=log)
            if until == stage:
                break
    return manifests
