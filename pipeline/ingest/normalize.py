"""Ingest's pure logic: raw reader records -> documents with the DESIGN.md schema, plus rejected rows.

:func:`raw_table` turns reader records into an Arrow batch, :func:`normalize_batch` splits it
into documents and rejected rows (Arrow in, Arrow out). :mod:`.stage` runs them per input file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from siftmix.pipeline.core.schema import DOC_SCHEMA, RAW_SCHEMA, REJECTED_SCHEMA
from siftmix.pipeline.core.shards import rejected_rows

from .config import IngestConfig, SourceConfig
from .readers import READERS, Columns, Raw, columns, read_wet_columns


def _large_strings(values: list) -> pa.Array:
    # pa.array(..., large_string) from Python objects is ~100x slower than string + cast
    arr = pa.array(values, pa.string())
    if isinstance(arr, pa.ChunkedArray):  # over 2 GB of text in one batch
        return pa.concat_arrays([c.cast(pa.large_string()) for c in arr.chunks])
    return arr.cast(pa.large_string())


def _safe_strings(values: list, repair: bool) -> tuple[pa.Array, list[int]]:
    """Arrow array of strings; lone surrogates (from JSON escapes) are replaced. Returns the
    array and the indices that needed repair."""
    try:
        return _large_strings(values), []
    except (pa.ArrowInvalid, UnicodeEncodeError, pa.ArrowTypeError):
        fixed, bad = [], []
        for i, v in enumerate(values):
            if v is not None:
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    v = v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                    bad.append(i)
            fixed.append(v)
        return _large_strings(fixed), bad


def raw_table(records: list[Raw] | Columns, source: str, on_bad_encoding: str = "repair") -> pa.Table:
    """A batch of reader records (or reader columns) as an Arrow table with RAW_SCHEMA."""
    if not isinstance(records, Columns):
        cols = Columns()
        for r in records:
            cols.add_raw(r)
        records = cols
    texts, bad = _safe_strings(records.texts, on_bad_encoding == "repair")
    errors, metas = records.errors, records.metas
    for i in bad:  # invalid code points inside JSON strings
        if on_bad_encoding == "reject":
            errors[i] = errors[i] or "bad_encoding"
        else:
            metas[i] = metas[i][:-1] + ',"repaired_encoding":true}'
    n = len(records)
    return pa.table(
        {
            "id": pa.array(records.ids, pa.string()),
            "source": pa.array([source] * n, pa.string()),
            "text": texts,
            "url": pa.array(records.urls, pa.string()),
            "meta": pa.array(metas, pa.string()),
            "error": pa.array(errors, pa.string()),
        },
        schema=RAW_SCHEMA,
    )


def _nfc(text: pa.Array) -> pa.Array:
    """NFC-normalise only what needs it: ASCII never does, and most non-ASCII text is already
    NFC (unicodedata's quick check is far cheaper than a normalisation)."""
    non_ascii = pc.invert(pc.string_is_ascii(text))
    if not pc.any(non_ascii).as_py():
        return text
    idx = pc.indices_nonzero(pc.fill_null(non_ascii, False)).to_numpy()
    values = text.take(idx).to_pylist()
    fix = [j for j, v in enumerate(values) if not unicodedata.is_normalized("NFC", v)]
    if not fix:
        return text
    mask = np.zeros(len(text), bool)
    mask[idx[fix]] = True
    repl = pa.array([unicodedata.normalize("NFC", values[j]) for j in fix], pa.large_string())
    return pc.replace_with_mask(text, pa.array(mask), repl)


#: C0 control characters other than tab and newline (``\r`` is a newline by then)
CONTROL_RE = "[\\x00-\\x08\\x0b-\\x1f]"
_CONTROL_BYTES = np.array([b for b in range(32) if b not in (9, 10, 13)], np.uint8)


def _low_bytes(arr: pa.Array) -> np.ndarray:
    """The bytes below 0x20 of all strings of ``arr`` (newlines, mostly): one numpy pass over
    the data buffer; UTF-8 never uses such bytes inside a multi-byte character."""
    data = arr.buffers()[2]
    if data is None:
        return np.empty(0, np.uint8)
    b = np.frombuffer(data, np.uint8)
    return b[b < 32]


def _has_control(low: np.ndarray) -> bool:
    return bool(np.isin(low, _CONTROL_BYTES).any())


def normalize_text(text: pa.Array, control_chars: str = "keep") -> pa.Array:
    """NFC, ``\\n`` newlines, C0 control characters stripped (``control_chars="strip"``), no
    leading/trailing whitespace. Vectorised over the batch."""
    text = _nfc(text)
    low = _low_bytes(text)
    if (low == 13).any():  # \r
        text = pc.replace_substring(pc.replace_substring(text, "\r\n", "\n"), "\r", "\n")
    if control_chars == "strip" and _has_control(low):
        text = pc.replace_substring_regex(text, CONTROL_RE, "")
    return pc.utf8_trim_whitespace(text)


def normalize_batch(raw: pa.Table, cfg: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """Split a RAW_SCHEMA batch into (documents, rejected). Every row ends in exactly one."""
    text = normalize_text(raw["text"].combine_chunks() if isinstance(raw["text"], pa.ChunkedArray) else raw["text"],
                          cfg.control_chars)
    n_chars = pc.utf8_length(text)
    reason = pc.if_else(pc.less(n_chars, cfg.min_chars), "too_short",
                        pc.if_else(pc.greater(n_chars, cfg.max_chars), "too_long", pa.scalar(None, pa.string())))
    if cfg.control_chars == "reject" and _has_control(_low_bytes(text)):
        reason = pc.if_else(pc.fill_null(pc.match_substring_regex(text, CONTROL_RE), False), "control_chars", reason)
    reason = pc.coalesce(raw["error"], pc.if_else(pc.is_null(text), "too_short", reason))
    is_rejected = pc.is_valid(reason)
    kept = pa.table({"id": raw["id"], "source": raw["source"], "text": text, "url": raw["url"], "meta": raw["meta"]},
                    schema=DOC_SCHEMA)
    if not pc.any(is_rejected).as_py():  # the common case: no copy of the text
        return kept, REJECTED_SCHEMA.empty_table()
    rejected = rejected_rows(raw, reason, keep_text=cfg.keep_rejected_text, text=text, mask=is_rejected)
    return kept.filter(pc.invert(is_rejected)), rejected


@dataclass(frozen=True)
class IngestTask:
    """One input file: the task of one ingest worker."""

    path: str
    rel: str    # relative to the source's root folder (derived ids, meta.file)
    fmt: str
    source: str
    index: int  # position of the file within its source (stable shard names)
    size: int = 0
    version: str | None = ""  # what changes with the content (ETag, mtime); None: the file does not exist

    @property
    def name(self) -> str:
        """The shard prefix: ``<source>-<index:05d>`` (shards add ``-<part:04d>``)."""
        return f"{self.source}-{self.index:05d}"


def iter_columns(task: IngestTask, src: SourceConfig, cfg: IngestConfig) -> Iterator[Columns]:
    """The records of one input file, in column batches of ``cfg.batch_rows``."""
    if task.fmt == "wet":
        return read_wet_columns(task.path, task.rel, src, cfg.on_bad_encoding, cfg.batch_rows)
    kwargs = {"on_bad_encoding": cfg.on_bad_encoding}
    if task.fmt == "warc":
        kwargs.update(extractor=cfg.html_extractor, main_content=cfg.main_content)
    return columns(READERS[task.fmt](task.path, task.rel, src, **kwargs), cfg.batch_rows)
