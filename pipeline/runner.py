"""The one runner: every stage goes through :func:`run_stage`, a whole run through :func:`run_pipeline`.

For every stage, once: find the upstream stage (the output of the last configured stage before
it), hash the config and the input, skip it if it finished with both, else run it in a
temporary folder, check in = kept + rejected (in total, per source, and against the upstream's
kept), commit it with its manifest, log its summary line; a task failure becomes one line. The
run report is built from the registry's report hooks at the end of a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import registry
from .core import storage
from .core.errors import SiftmixError, StageError, TaskError
from .core.hashing import stable_hash
from .core.manifest import is_finished, read_manifest
from .core.ray_runner import ray_session
from .core.stage import Stage, StageContext, Upstream

Log = Callable[[str], None]


def stage_of(stage: str | Stage) -> Stage:
    return registry.get(stage) if isinstance(stage, str) else stage


def stage_dir(cfg, stage: str | Stage) -> str:
    return storage.join(cfg.run_dir, stage_of(stage).folder)


def previous_stage(cfg, stage: str | Stage) -> str:
    """The configured stage that feeds ``stage``: the last one before it in pipeline order."""
    st = stage_of(stage)
    prev = registry.stage_before(st.name, cfg.stages)
    if prev is None:
        raise StageError(f"stage {st.name!r} needs an earlier stage in `stages` (at least ingest)")
    return prev


def upstream(cfg, stage: str | Stage) -> Upstream:
    """The finished stage that ``stage`` reads, or a one-line error."""
    prev = previous_stage(cfg, stage)
    d = stage_dir(cfg, prev)
    m = read_manifest(d)
    if m is None:
        raise StageError(f"stage {prev!r} has not finished in {cfg.run_dir} (run `siftmix run` or `siftmix {prev}` first)")
    return Upstream(prev, d, m)


def check_counts(st: Stage, counts: dict, up: Upstream | None) -> None:
    """in = kept + rejected, in total and per source; and in = the upstream stage's kept."""
    if "kept" not in counts:
        return
    parts = [("", counts)] + [(f" for source {k!r}", v) for k, v in counts.get("by_source", {}).items()]
    for where, c in parts:
        if c["in"] != c["kept"] + c["rejected"]:
            raise StageError(f"{st.name}: counts do not add up{where} ({c['in']} in, {c['kept']} kept, "
                             f"{c['rejected']} rejected)")
    if up is not None and st.counts_follow_input and counts["in"] != up.kept:
        raise StageError(f"{st.name}: counts do not add up ({up.kept} from {up.name}, {counts['in']} in, "
                         f"{counts['kept']} kept, {counts['rejected']} rejected)")


def _one_line(st: Stage, ctx: StageContext, err: TaskError) -> StageError:
    cause = err.cause
    if isinstance(cause, SiftmixError):  # the task named the file and record itself
        return StageError(f"{st.name} failed: {cause}")
    if ctx.current_pass:
        return StageError(f"{st.name}: the {ctx.current_pass} pass failed: {err}")
    return StageError(f"{st.name}: {err}")


def run_stage(stage: str | Stage, cfg, *, force: bool = False, workers: int | None = None, console=None,
              log: Log = print, progress: bool = True, out_dir: str | None = None) -> dict:
    """Run one stage (Ray must be up: :func:`ray_session`), or skip it if it finished with this
    config and input; returns its manifest."""
    st = stage_of(stage)
    up = upstream(cfg, st) if st.reads_upstream else None
    chash = stable_hash(st.hash_inputs(cfg))
    fp = st.input_fingerprint(cfg, up)
    out_dir = out_dir or stage_dir(cfg, st)
    with storage.run_lock(storage.dirname(out_dir), f"siftmix {st.name}", log):
        return _run_locked(st, cfg, up, chash, fp, out_dir, force=force, workers=workers, console=console,
                           log=log, progress=progress)


def _run_locked(st: Stage, cfg, up, chash: str, fp: str, out_dir: str, *, force, workers, console, log,
                progress) -> dict:
    if not force and (m := is_finished(out_dir, chash, fp)) is not None:
        log(f"{st.name}: finished earlier, skipped ({out_dir})")
        return m
    with storage.stage_output(out_dir) as out:
        ctx = StageContext(st, cfg, out, up, workers=workers, console=console, log=log, progress=progress)
        try:
            fields = st.run(ctx)
        except TaskError as err:
            raise _one_line(st, ctx, err) from None
        check_counts(st, fields["counts"], up)
        head = {"stage": st.name, "config_hash": chash, "input_fingerprint": fp}
        if up is not None:
            head["input_stage"] = up.name
        timings = {**ctx.timings, **fields.pop("timings", {})}
        manifest = out.commit({**head, **fields, **({"timings": timings} if timings else {})})
    log(st.summary(manifest, out_dir))
    return manifest


def bare_context(stage: str | Stage, cfg, *, workers: int | None = None, console=None, log: Log = print) -> StageContext:
    """A context without an output folder, for work outside a stage run (``siftmix quality train``)."""
    st = stage_of(stage)
    return StageContext(st, cfg, None, upstream(cfg, st) if st.reads_upstream else None, workers=workers,
                        console=console, log=log)


def run_through(cfg, stage: str | Stage, *, force: bool = False, workers: int | None = None, console=None,
                log: Log = print, **kw) -> dict:
    """The configured stages before ``stage`` (skipped where finished), then ``stage`` (``force``
    recomputes it alone): what a single-stage command runs."""
    st = stage_of(stage)
    if st.reads_upstream:
        prev = previous_stage(cfg, st)
        for name in cfg.stages[: cfg.stages.index(prev) + 1]:
            run_stage(name, cfg, workers=workers, console=console, log=log)
    return run_stage(st, cfg, force=force, workers=workers, console=console, log=log, **kw)


def run_pipeline(cfg, *, force: bool = False, address: str | None = None, workers: int | None = None,
                 until: str | None = None, console=None, log: Log = print) -> dict:
    """Run the configured stages in order; finished stages are skipped (resume). Ends with the report."""
    from .report import build_report

    storage.check_writable(cfg.run_dir)  # an unwritable run dir fails at once, not after Ray has started
    stages = list(cfg.stages)
    if until in stages:
        stages = stages[: stages.index(until) + 1]
    manifests, t0 = {}, time.time()
    with storage.run_lock(cfg.run_dir, "siftmix run", log), ray_session(cfg.ray, address=address, log=log):
        for i, name in enumerate(stages, 1):
            log(f"[{i}/{len(stages)}] {name} ({time.time() - t0:.0f}s into the run)")
            manifests[name] = run_stage(name, cfg, force=force, workers=workers, console=console, log=log)
    log(f"report: {build_report(cfg.run_dir)}")
    return manifests
