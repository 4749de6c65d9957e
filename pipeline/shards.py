"""Deterministic Parquet shard writing.

Shard names and row-group boundaries depend only on the input and the config, never on the
number of workers, so the same run gives byte-identical files.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_OPTIONS = dict(compression="zstd", use_dictionary=["source", "reason"],
                       write_statistics=True)


class ShardWriter:
    """Writes tables to ``DIR/PREFIX-0000.parquet``, ``-0001``, ... rolling over past max_bytes."""

    def __init__(self, directory: str, prefix: str, schema: pa.Schema, max_bytes: int = 256 * 2**20):
        self.directory, self.prefix, self.schema, self.max_bytes = directory, prefix, schema, max_bytes
        self._writer: pq.ParquetWriter | None = None
        self._part = 0
        self._bytes = 0
        self._rows = 0
        self.shards: list[dict] = []

    def _path(self) -> str:
        return os.path.join(self.directory, f"{self.prefix}-{self._part:04d}.parquet")

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            os.makedirs(self.directory, exist_ok=True)
            self._writer = pq.ParquetWriter(self._path(), self.schema, **PARQUET_OPTIONS)
        self._writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
        self._bytes += table.nbytes
        self._rows += table.num_rows
        if self._bytes >= self.max_bytes:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.shards.append({"file": os.path.basename(self._path()), "rows": self._rows})
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
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".parquet"))


def read_shards(directory: str, columns: list[str] | None = None) -> pa.Table:
    """All shards of a folder as one table, in name order (for tests and small outputs)."""
    files = list_shards(directory)
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def file_stats(path: str, **extra) -> dict:
    """Per-input-file counts every stage returns (see ``runner.summarize``): in = kept + rejected."""
    from collections import Counter

    return {"file": os.path.basename(path), "source": None, "docs_in": 0, "kept": 0, "rejected": Counter(),
            "bytes_in": 0, "chars_kept": 0, "bytes_kept": 0, **extra}


def count_batch(st: dict, batch: pa.Table, kept: pa.Table, reasons) -> None:
    """Add one batch (its input, the kept rows, the reasons of the rejected rows) to ``st``."""
    import pyarrow.compute as pc

    if st["source"] is None and batch.num_rows:
        st["source"] = batch["source"][0].as_py()
    st["docs_in"] += batch.num_rows
    st["bytes_in"] += pc.sum(pc.binary_length(batch["text"])).as_py() or 0
    st["kept"] += kept.num_rows
    if kept.num_rows:
        st["chars_kept"] += pc.sum(pc.utf8_length(kept["text"])).as_py()
        st["bytes_kept"] += pc.sum(pc.binary_length(kept["text"])).as_py()
    st["rejected"].update(reasons)


def close_stats(st: dict, data: ShardWriter, rejected: ShardWriter) -> dict:
    st["shards"] = data.close()
    st["rejected_shards"] = rejected.close()
    st["rejected"] = dict(sorted(st["rejected"].items()))
    return st
