"""The stage contract: what a stage is, what it is given, and what it returns.

A :class:`Stage` names itself (``name``, ``folder``), its config section (``config_key``,
``config_model``), what its config hash covers (:meth:`Stage.hash_inputs`), and does its work in
:meth:`Stage.run`, given a :class:`StageContext`; it returns the manifest fields that are its
own (``counts`` at least). The runner (``siftmix.pipeline.runner``) does the rest, once for
every stage: find the upstream stage, hash config and input, resume or skip, commit, check
in = kept + rejected, show progress, turn failures into one line, log the summary and call the
report hook (:meth:`Stage.report`).

A :class:`ShardStage` is a stage whose output shards follow its input shards one to one: it
gives a :class:`~.shards.ShardWorker` (``setup`` once per actor or task, ``process`` per batch)
and the core runs it over every input shard (:meth:`StageContext.map_shards`), before which
:meth:`ShardStage.prepare` may run whole-input passes (train a model, build an index, find
duplicates).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import storage
from .ray_runner import Progress, cluster_cpus, map_actors, map_tasks
from .shards import ShardRef, ShardResult, ShardWorker, run_shard, summarize


@dataclass(frozen=True)
class Upstream:
    """The finished stage a stage reads: its name, folder and manifest."""

    name: str
    dir: str
    manifest: dict

    def path(self, *parts: str) -> str:
        """A file of this stage: under the attempt its manifest committed."""
        return storage.join(self.dir, self.manifest["attempt"], *parts)

    def shards(self) -> list[ShardRef]:
        """Its data shards, in name order, with their sources (from the manifest's file results)
        and sizes (from the manifest's list of committed files: no stat per shard)."""
        srcs = {sh["file"]: f["source"] for f in self.manifest.get("files", []) for sh in f.get("shards", [])}
        sizes = {o["path"]: o["size"] for o in self.manifest.get("outputs", [])}
        out = []
        for i, name in enumerate(sorted(srcs)):
            path = self.path("data", name)
            size = sizes.get(f"data/{name}")
            if size is None:
                raise FileNotFoundError(2, f"stage {self.name!r} lists a shard its commit does not hold", path)
            out.append(ShardRef(path=path, name=name.removesuffix(".parquet"), source=srcs[name], index=i, size=size))
        return out

    @property
    def kept(self) -> int:
        return self.manifest["counts"]["kept"]


class Stage(ABC):
    """One step of the pipeline. Subclass it, set the class attributes, implement :meth:`run`."""

    name: str = ""                      # CLI command, `stages:` entry, manifest "stage"
    folder: str = ""                    # RUN_DIR/<folder>
    config_key: str | None = None       # its section of the run config (RunConfig.<config_key>)
    config_model: type | None = None    # that section's pydantic model (a core.config.Strict)
    help: str = ""                      # CLI help: first line a summary, then details and examples
    input_of: str | None = None         # a variant (audit): takes the input of this stage
    reads_upstream: bool = True         # False: reads the configured sources (ingest)
    counts_follow_input: bool = True    # counts["in"] must equal the upstream stage's kept

    def enabled_by_default(self, cfg) -> bool:
        """Whether ``stages:`` left out of a config includes this stage."""
        return True

    def check(self, cfg) -> None:
        """Static checks across config sections; raise ValueError with a one-line message."""
        return None

    def hash_inputs(self, cfg) -> dict:
        """What the stage's config hash covers (a change reruns the stage)."""
        section = getattr(cfg, self.config_key).model_dump() if self.config_key else None
        return {"stage": self.name, self.config_key or "config": section}

    def input_fingerprint(self, cfg, upstream: Upstream | None) -> str:
        return upstream.manifest["output_fingerprint"]

    @abstractmethod
    def run(self, ctx: StageContext) -> dict:
        """Do the stage's work; return its own manifest fields (``counts`` at least)."""

    def summary(self, manifest: dict, out_dir: str) -> str:
        """The line logged when the stage has finished."""
        c = manifest["counts"]
        return (f"{self.name}: {c['in']} documents -> {c['kept']} kept, {c['rejected']} rejected "
                f"({reasons_text(c)}); {manifest['timings']['wall_s']:.1f}s")

    def report(self, run_dir: str, folder: str, manifest: dict) -> str:
        """The stage's own part of the run report (HTML); the counts tables come from the core."""
        return ""

    def __repr__(self) -> str:
        return f"<stage {self.name} ({self.folder})>"


def reasons_text(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.get("rejected_by_reason", {}).items()) or "none"


class ShardStage(Stage):
    """A stage whose output shards follow its input shards one to one (same names)."""

    use_actors: bool = False            # True: a pool of actors, setup() once per actor (models)

    def prepare(self, ctx: StageContext) -> dict:
        """Whole-input passes before the shard pass; returns manifest fields."""
        return {}

    @abstractmethod
    def worker(self, ctx: StageContext, prepared: dict) -> ShardWorker:
        """The picklable worker that the shard pass runs on every input shard."""

    def num_gpus(self, cfg) -> float:
        return 0

    def order(self, ctx: StageContext, shards: list[ShardRef]) -> list[ShardRef]:
        """The order shards are handed out in (results do not depend on it): biggest first."""
        return sorted(shards, key=lambda s: -s.size)

    def finish(self, ctx: StageContext, results: list[ShardResult], prepared: dict) -> dict:
        """The manifest fields: counts and per-file results (stages add their own)."""
        return {"counts": summarize(results), "files": [r.to_json() for r in results]}

    def run(self, ctx: StageContext) -> dict:
        prepared = self.prepare(ctx)
        worker = self.worker(ctx, prepared)
        results = ctx.map_shards(worker, self.order(ctx, ctx.input_shards()), actors=self.use_actors,
                                 num_gpus=self.num_gpus(ctx.cfg))
        return self.finish(ctx, results, prepared)


class _ShardActor:
    """An actor that runs a shard worker: ``setup`` once, then whole shards."""

    def __init__(self, worker: ShardWorker, out_dir: str):
        worker.setup()
        self.worker, self.out_dir = worker, out_dir

    def process(self, shard: ShardRef) -> ShardResult:
        return run_shard(self.worker, shard, self.out_dir)


def _shard_task(shard: ShardRef, worker: ShardWorker, out_dir: str) -> ShardResult:
    worker.setup()
    return run_shard(worker, shard, out_dir)


class StageContext:
    """What a stage's :meth:`Stage.run` is given: the config, the upstream stage and its shards,
    the output folder, the log, and maps over Ray tasks or actors with progress."""

    def __init__(self, stage: Stage, cfg, out, upstream: Upstream | None, *, workers: int | None = None,
                 console=None, log: Callable[[str], None] = print, progress: bool = True):
        self.stage, self.cfg, self.out, self.upstream = stage, cfg, out, upstream
        self.workers = workers or cfg.ray.workers
        self.console, self.log, self.progress = console, log, progress
        self.timings: dict[str, float] = {}
        self.current_pass: str | None = None

    @property
    def tmp(self) -> str:
        """The stage's attempt folder: where it writes its files (committed by its manifest)."""
        return self.out.tmp

    def path(self, *parts: str) -> str:
        return self.out.path(*parts)

    def cpus(self) -> int:
        """CPUs of the Ray cluster (for sizing work, never for what the output looks like)."""
        return cluster_cpus()

    def input_shards(self) -> list[ShardRef]:
        return self.upstream.shards() if self.upstream else []

    def _bar(self, label, total, unit, docs_total, total_bytes) -> Progress:
        return Progress(f"{self.stage.name}: {label}" if label != self.stage.name else label, total, total_bytes,
                        unit=unit, console=self.console, enabled=self.progress and label is not None,
                        docs_total=docs_total)

    def _progress(self, results: Iterator, n: int, label, unit, docs, nbytes, docs_total, total_bytes) -> Iterator:
        bar = self._bar(label, n, unit, docs_total, total_bytes)
        try:
            for r in results:
                bar.advance(1, nbytes(r) if nbytes else 0, docs=docs(r) if docs else 0)
                yield r
        finally:
            bar.close()

    def map(self, fn: Callable, tasks: list, *, label: str | None = None, unit: str = "tasks",
            docs: Callable | None = None, nbytes: Callable | None = None, docs_total: int | None = None,
            total_bytes: int | None = None, fn_kwargs: dict | None = None, num_cpus: float = 1,
            workers: int | None = None) -> Iterator:
        """``fn(task, **fn_kwargs)`` for every task as Ray tasks, results as they finish; a
        progress bar named ``label`` (none without), advanced by ``docs(result)`` documents and
        ``nbytes(result)`` bytes."""
        it = map_tasks(fn, tasks, workers=workers or self.workers, num_cpus=num_cpus, fn_kwargs=fn_kwargs)
        return self._progress(it, len(tasks), label, unit, docs, nbytes, docs_total, total_bytes)

    def map_actors(self, actor_cls: type, ctor_kwargs: dict, tasks: list, *, label: str | None = None,
                   unit: str = "tasks", docs: Callable | None = None, nbytes: Callable | None = None,
                   docs_total: int | None = None, total_bytes: int | None = None, num_gpus: float = 0) -> Iterator:
        it = map_actors(actor_cls, ctor_kwargs, tasks, workers=self.workers, num_gpus=num_gpus)
        return self._progress(it, len(tasks), label, unit, docs, nbytes, docs_total, total_bytes)

    def map_shards(self, worker: ShardWorker, shards: list[ShardRef], *, actors: bool = False, num_gpus: float = 0,
                   label: str | None = None, unit: str = "shards") -> list[ShardResult]:
        """Every shard through ``worker`` into this stage's ``data/`` and ``rejected/``; the
        results sorted by file name (they do not depend on the order shards ran in)."""
        label = label or self.stage.name
        sizes = {worker.file_name(s): s.size for s in shards}
        kw = dict(label=label, unit=unit, docs=lambda r: r.docs_in, nbytes=lambda r: sizes.get(r.file, 0),
                  docs_total=self.upstream.kept if self.upstream else None, total_bytes=sum(sizes.values()) or None)
        if actors:
            it = self.map_actors(_ShardActor, {"worker": worker, "out_dir": self.tmp}, shards, num_gpus=num_gpus, **kw)
        else:
            it = self.map(_shard_task, shards, fn_kwargs={"worker": worker, "out_dir": self.tmp}, **kw)
        return sorted(it, key=lambda r: r.file)

    @contextmanager
    def step(self, name: str):
        """Time a pass (``timings[<name>_s]``); a task failure inside it names the pass."""
        self.current_pass, t0 = name, time.time()
        try:
            yield
            self.current_pass = None
        finally:
            self.timings[f"{name}_s"] = round(time.time() - t0, 3)

    def read_upstream_json(self, name: str) -> Any:
        return storage.read_json(self.upstream.path(name))
