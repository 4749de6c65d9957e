"""Shards: the naming rule, the deterministic writer, and the per-shard skeleton of every stage.

**Naming rule.** Ingest names the shards of input file ``#i`` of a source
``<source>-<i:05d>-<part:04d>.parquet`` (``part`` counts the roll-overs past
``ingest.shard_max_bytes``). Every later shard stage writes at most one data shard and one
rejected shard per input shard, under the input shard's name, so a name never grows and a
document's shard name is the same in every stage. Names and row groups depend only on the input
and the config, never on the workers, so the same run gives byte-identical files.

**Per-shard skeleton.** :func:`run_shard` reads a shard in batches, hands each to a
:class:`ShardWorker`'s ``process`` (kept rows, rejected rows, counts), writes
``data/<name>`` and ``rejected/<name>`` and returns a :class:`ShardResult` (in = kept + rejected).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .schema import REJECTED_SCHEMA

#: statistics (min, max) only for the short columns readers filter on (``siftmix trace`` finds row
#: groups by ``id``); those of text and meta were never read and cost ~10% of a shard's write
PARQUET_OPTIONS = dict(compression="zstd", use_dictionary=["source", "reason"],
                       write_statistics=["id", "source", "reason", "score", "quality_score"])
DEFAULT_SHARD_BYTES = 256 * 2**20


class ShardWriter:
    """Writes tables to ``DIR/PREFIX-0000.parquet``, ``-0001``, ... rolling over past max_bytes
    (ingest), or, with ``single=True``, to the one file ``DIR/PREFIX.parquet`` (later stages)."""

    def __init__(self, directory: str, prefix: str, schema: pa.Schema, max_bytes: int = DEFAULT_SHARD_BYTES,
                 single: bool = False, row_group_rows: int | None = None):
        self.directory, self.prefix, self.schema, self.max_bytes = directory, prefix, schema, max_bytes
        self.single, self.row_group_rows = single, row_group_rows
        self._writer = None
        self._part = 0
        self._bytes = 0
        self._rows = 0
        self.shards: list[dict] = []

    def _path(self) -> str:
        name = f"{self.prefix}.parquet" if self.single else f"{self.prefix}-{self._part:04d}.parquet"
        return storage.join(self.directory, name)

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self._writer = storage.parquet_writer(self._path(), self.schema, **PARQUET_OPTIONS)
        self._writer.write_table(table.cast(self.schema) if table.schema != self.schema else table,
                                 row_group_size=self.row_group_rows)
        self._bytes += table.nbytes
        self._rows += table.num_rows
        if self._bytes >= self.max_bytes and not self.single:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.shards.append({"file": storage.basename(self._path()), "rows": self._rows})
            self._writer = None
            self._part += 1
            self._bytes = 0
            self._rows = 0

    def close(self) -> list[dict]:
        self._close_part()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def list_shards(directory: str) -> list[str]:
    return storage.list_files(directory, ".parquet")


def read_shards(directory: str, columns: list[str] | None = None) -> pa.Table | None:
    """All shards of a folder as one table, in name order (for tests and small outputs)."""
    return storage.read_tables(list_shards(directory), columns)


def rejected_rows(t: pa.Table, reason, *, keep_text: bool = True, score=None, text=None, mask=None) -> pa.Table:
    """Rejected rows (REJECTED_SCHEMA) for the rows of ``t`` (id, source, text, meta): their
    ``reason`` (one array or list per row), ``score`` (default null), their text unless
    ``keep_text`` is off; only the rows where ``mask`` is true, if given."""
    n = t.num_rows
    text = t["text"] if text is None else text
    out = pa.table({
        "id": t["id"], "source": t["source"],
        "reason": reason if isinstance(reason, pa.Array | pa.ChunkedArray) else pa.array(reason, pa.string()),
        "score": pa.nulls(n, pa.float32()) if score is None else score,
        "text": text if keep_text else pa.nulls(n, pa.large_string()),
        "meta": t["meta"] if "meta" in t.column_names else pa.nulls(n, pa.string()),
    }, schema=REJECTED_SCHEMA)
    return out if mask is None else out.filter(mask)


# --------------------------------------------------------------------------- typed tasks and results

@dataclass(frozen=True)
class ShardRef:
    """One input shard of a stage: its path, name (without .parquet), source, index in name order, size."""

    path: str
    name: str
    source: str
    index: int
    size: int


@dataclass(frozen=True)
class ShardResult:
    """What one task did to one input (a file at ingest, a shard later): in = kept + rejected.

    ``rejected`` counts documents by reason; ``extra`` holds the stage's own per-file counts."""

    file: str
    source: str | None
    docs_in: int
    kept: int
    rejected: dict[str, int]
    bytes_in: int
    chars_kept: int
    bytes_kept: int
    shards: tuple = ()
    rejected_shards: tuple = ()
    extra: dict = field(default_factory=dict)
    side: dict = field(default_factory=dict)  # for the driver only, not the manifest (ingest's id hashes)

    def to_json(self) -> dict:
        return {"file": self.file, "source": self.source, "docs_in": self.docs_in, "kept": self.kept,
                "rejected": self.rejected, "bytes_in": self.bytes_in, "chars_kept": self.chars_kept,
                "bytes_kept": self.bytes_kept, **self.extra, "shards": list(self.shards),
                "rejected_shards": list(self.rejected_shards)}


def summarize(results: list[ShardResult]) -> dict:
    """Counts for the manifest: in = kept + rejected, in total and per source."""
    by: dict[str, dict] = {}
    for r in results:
        s = by.setdefault(r.source, {"in": 0, "kept": 0, "rejected": 0, "rejected_by_reason": Counter(),
                                     "bytes_in": 0, "chars_kept": 0, "bytes_kept": 0, "files": 0})
        s["files"] += 1
        s["in"] += r.docs_in
        s["kept"] += r.kept
        s["rejected"] += sum(r.rejected.values())
        s["rejected_by_reason"].update(r.rejected)
        s["bytes_in"] += r.bytes_in
        s["chars_kept"] += r.chars_kept
        s["bytes_kept"] += r.bytes_kept
    total: Counter = Counter()
    for s in by.values():
        total.update(s["rejected_by_reason"])
        s["rejected_by_reason"] = dict(sorted(s["rejected_by_reason"].items()))
    return {"in": sum(s["in"] for s in by.values()), "kept": sum(s["kept"] for s in by.values()),
            "rejected": sum(s["rejected"] for s in by.values()), "rejected_by_reason": dict(sorted(total.items())),
            "bytes_in": sum(s["bytes_in"] for s in by.values()), "bytes_kept": sum(s["bytes_kept"] for s in by.values()),
            "by_source": dict(sorted(by.items()))}


# --------------------------------------------------------------------------- the per-shard skeleton

class Processed(NamedTuple):
    """One batch through a stage: kept rows, rejected rows, and counts.

    ``kept_docs`` (default: kept rows) and ``reasons`` (default: the rejected rows' reasons) are
    what is counted, for stages whose rows are not documents one to one (decontam's pieces);
    ``extra`` is added to the shard's own counts (ints, numpy arrays or Counters)."""

    kept: pa.Table
    rejected: pa.Table
    kept_docs: int | None = None
    reasons: Any = None
    extra: dict | None = None


class ShardWorker(ABC):
    """What a shard stage runs on a worker: :meth:`setup` once (per actor or task), then
    :meth:`open` per shard and :meth:`process` per batch. Pure: no Ray, no other stage."""

    columns: list[str] | None = None   # columns to read (None: all)
    batch_rows: int = 4096
    max_bytes: int = DEFAULT_SHARD_BYTES
    single_file: bool = True           # False: roll over past max_bytes (ingest)
    row_group_rows: int | None = None  # data shards' row groups: at most this many rows (None: one per batch)
    count_bytes_in: bool = True        # False: bytes_in is the input file's size (ingest)

    def setup(self) -> None:
        """Load what every shard needs (a model, an index); called once per actor or task."""
        return None

    def open(self, shard: ShardRef) -> Any:
        """Per-shard state handed to every :meth:`process` call of that shard."""
        return None

    def output_schema(self, shard: ShardRef) -> pa.Schema:
        return storage.parquet_file(shard.path).schema_arrow

    def batches(self, shard: ShardRef) -> Iterator[pa.Table]:
        pf = storage.parquet_file(shard.path)
        for batch in pf.iter_batches(batch_size=self.batch_rows, columns=self.columns):
            yield pa.Table.from_batches([batch])

    def extra_init(self) -> dict:
        """The stage's own per-shard counts, at zero."""
        return {}

    def side_results(self, state: Any) -> dict:
        """What the driver needs from this shard besides counts (not written to the manifest);
        ``state`` is what :meth:`open` returned, after every batch."""
        return {}

    @abstractmethod
    def process(self, batch: pa.Table, state: Any) -> Processed:
        """One batch -> kept rows, rejected rows, counts."""

    def file_name(self, shard: ShardRef) -> str:
        return shard.name + ".parquet"


def _add(acc: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict):
            acc.setdefault(k, Counter()).update(v)
        elif k in acc:
            acc[k] = acc[k] + v
        else:
            acc[k] = v


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return dict(sorted(v.items()))
    return v.item() if isinstance(v, np.generic) else v


def run_shard(worker: ShardWorker, shard: ShardRef, out_dir: str) -> ShardResult:
    """One input through ``worker``: ``out_dir/data/<name>`` and ``out_dir/rejected/<name>``."""
    t0 = time.perf_counter()
    schema = worker.output_schema(shard)
    data = ShardWriter(storage.join(out_dir, "data"), shard.name, schema, worker.max_bytes, worker.single_file,
                       worker.row_group_rows)
    rej = ShardWriter(storage.join(out_dir, "rejected"), shard.name, REJECTED_SCHEMA, worker.max_bytes, worker.single_file)
    source, docs_in, kept_n, bytes_in, chars_kept, bytes_kept = None, 0, 0, 0, 0, 0
    rejected: Counter = Counter()
    extra = worker.extra_init()
    try:
        state = worker.open(shard)
        for batch in worker.batches(shard):
            p = worker.process(batch, state)
            if source is None and batch.num_rows:
                source = batch["source"][0].as_py()
            docs_in += batch.num_rows
            if worker.count_bytes_in:
                bytes_in += pc.sum(pc.binary_length(batch["text"])).as_py() or 0
            kept_n += p.kept.num_rows if p.kept_docs is None else p.kept_docs
            if p.kept.num_rows:
                chars_kept += pc.sum(pc.utf8_length(p.kept["text"])).as_py()
                bytes_kept += pc.sum(pc.binary_length(p.kept["text"])).as_py()
            rejected.update(p.rejected["reason"].to_pylist() if p.reasons is None else p.reasons)
            if p.extra:
                _add(extra, p.extra)
            data.write(p.kept)
            rej.write(p.rejected)
        shards, rejected_shards = data.close(), rej.close()
    except BaseException:
        data.abort(), rej.abort()
        raise
    extra = {k: _plain(v) for k, v in extra.items()}
    extra["wall_s"] = round(time.perf_counter() - t0, 4)
    return ShardResult(file=worker.file_name(shard), source=source or shard.source, docs_in=docs_in, kept=kept_n,
                       rejected=dict(sorted(rejected.items())), bytes_in=bytes_in if worker.count_bytes_in else shard.size,
                       chars_kept=chars_kept, bytes_kept=bytes_kept, shards=tuple(shards),
                       rejected_shards=tuple(rejected_shards), extra=extra, side=worker.side_results(state))
