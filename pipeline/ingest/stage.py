"""The ingest stage: every input file through the readers and the normaliser, one Ray task each."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pyarrow as pa
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import InputError, StageError
from siftmix.pipeline.core.schema import DOC_SCHEMA
from siftmix.pipeline.core.shards import Processed, ShardResult, ShardWorker, run_shard, summarize
from siftmix.pipeline.core.stage import Stage, StageContext, reasons_text

from .config import IngestConfig, SourceConfig
from .normalize import IngestTask, iter_columns, normalize_batch, raw_table
from .readers import SUFFIXES, ReadFailure, source_files


def plan(cfg) -> list[IngestTask]:
    """One task per input file of every source (a source without files is a one-line error)."""
    tasks = []
    for src in cfg.sources:
        files = source_files(src)
        if not files:
            raise StageError(f"source {src.name!r}: no input files of a known format in {', '.join(src.paths)}")
        for i, (path, rel, fmt) in enumerate(files):
            tasks.append(IngestTask(path=path, rel=rel, fmt=fmt, source=src.name, index=i, size=storage.size(path)))
    return tasks


class IngestWorker(ShardWorker):
    """Reads one input file in batches of raw records and normalises them; a file that cannot
    be read at all stops the stage with one line naming the file and the record."""

    single_file = False      # shards roll over past ingest.shard_max_bytes: <source>-<file>-<part>
    count_bytes_in = False   # bytes in: the input file's size

    def __init__(self, sources: dict[str, SourceConfig], cfg: IngestConfig):
        self.sources, self.cfg = sources, cfg
        self.max_bytes = cfg.shard_max_bytes

    def output_schema(self, task: IngestTask) -> pa.Schema:
        return DOC_SCHEMA

    def file_name(self, task: IngestTask) -> str:
        return task.rel

    def batches(self, task: IngestTask) -> Iterator[pa.Table]:
        n = 0
        try:
            for records in iter_columns(task, self.sources[task.source], self.cfg):
                batch = raw_table(records, task.source, self.cfg.on_bad_encoding)
                n += len(records)
                yield batch
        except InputError:
            raise
        except Exception as err:  # the disk failed, or a bug: one line naming file and record
            if isinstance(err, ReadFailure):
                n, err = err.records, err.cause
            if isinstance(err, OSError):
                what = f"{err.strerror or err}" + (f": {err.filename}" if getattr(err, "filename", None) else "")
            else:
                what = f"{type(err).__name__}: {err}"
            raise InputError(f"{task.path}: after record {n}: {what}") from None

    def process(self, batch: pa.Table, state) -> Processed:
        return Processed(*normalize_batch(batch, self.cfg))


def ingest_file(task: IngestTask, src: SourceConfig, cfg: IngestConfig, out_dir: str) -> ShardResult:
    """One input file into ``out_dir/data`` and ``out_dir/rejected``, in this process (no Ray):
    the stage's work for one task. A file that cannot be read raises :class:`InputError`."""
    if not task.size:
        task = dataclasses.replace(task, size=storage.size(task.path))
    return run_shard(IngestWorker({src.name: src}, cfg), task, out_dir)


class IngestStage(Stage):
    name = "ingest"
    folder = "00_ingest"
    config_key = "ingest"
    config_model = IngestConfig
    reads_upstream = False
    help = """Ingest raw files (WET, WARC, JSONL[.gz|.zst], Parquet, .txt folders) into Parquet documents."""

    def check(self, cfg) -> None:
        """The inputs resolve: every source names at least one file of a known format."""
        for src in cfg.sources:
            if not source_files(src):
                what = "a known format (" + ", ".join(SUFFIXES) + ")" if src.format == "auto" else src.format
                raise ValueError(f"source {src.name!r}: no input file of {what} in {', '.join(src.paths)}")

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "ingest", "sources": [s.model_dump() for s in cfg.sources], "ingest": cfg.ingest.model_dump()}

    def input_fingerprint(self, cfg, upstream) -> str:
        return storage.fingerprint([t.path for t in plan(cfg)])

    def run(self, ctx: StageContext) -> dict:
        cfg = ctx.cfg
        worker = IngestWorker({s.name: s for s in cfg.sources}, cfg.ingest)
        # biggest files first: better load balance (the output does not depend on the order)
        tasks = sorted(plan(cfg), key=lambda t: -t.size)
        results = sorted(ctx.map_shards(worker, tasks, unit="files"), key=lambda r: (r.source, r.file))
        return {"config": {"sources": [s.model_dump() for s in cfg.sources], "ingest": cfg.ingest.model_dump()},
                "counts": summarize(results), "files": [r.to_json() for r in results],
                "ray": {"workers": ctx.workers}}

    def summary(self, manifest: dict, out_dir: str) -> str:
        c = manifest["counts"]
        return (f"ingest: {c['in']} records -> {c['kept']} documents kept, {c['rejected']} rejected "
                f"({reasons_text(c)}); {c['bytes_in'] / 1e6:.1f} MB in {manifest['timings']['wall_s']:.1f}s")


INGEST = IngestStage()
