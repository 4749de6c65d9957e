"""Readers: turn one input file into a stream of raw records.

Pure Python generators, no Ray. Each yields :class:`Raw` tuples; a record that cannot become a
document (malformed JSON, missing field, truncated file, ...) is still yielded, with ``error``
set to the reject reason, so that nothing is lost silently.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import zstandard

from .config import SourceConfig


class Raw(NamedTuple):
    id: str
    text: str | None
    url: str | None
    meta: dict
    error: str | None  # reject reason, or None for a document candidate


class InputError(Exception):
    """A problem with an input file that stops the stage: one line naming file and record."""


# --------------------------------------------------------------------------- discovery

_SUFFIX_FORMATS = [
    (".warc.wet.gz", "wet"), (".wet.gz", "wet"), (".wet", "wet"),
    (".warc.gz", "warc"), (".warc", "warc"), (".arc.gz", "warc"),
    (".jsonl.gz", "jsonl"), (".jsonl.zst", "jsonl"), (".jsonl.zstd", "jsonl"), (".jsonl", "jsonl"),
    (".json.gz", "jsonl"), (".json.zst", "jsonl"), (".ndjson", "jsonl"), (".ndjson.gz", "jsonl"),
    (".parquet", "parquet"),
    (".txt", "txt"), (".txt.gz", "txt"),
]


def detect_format(path: str) -> str | None:
    name = os.path.basename(path).lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    return None


def expand_paths(paths: list[str]) -> list[str]:
    """Files named by paths, folders (recursive) and globs; sorted, deduplicated."""
    out: set[str] = set()
    for p in paths:
        matches = glob.glob(p, recursive=True) if glob.has_magic(p) else [p]
        for m in matches:
            if os.path.isdir(m):
                for root, dirs, files in os.walk(m):
                    dirs[:] = [d for d in dirs if not d.startswith(".")]
                    out.update(os.path.join(root, f) for f in files if not f.startswith("."))
            elif os.path.exists(m):
                out.add(m)
    return sorted(os.path.abspath(f) for f in out)


def source_files(src: SourceConfig) -> list[tuple[str, str, str]]:
    """(absolute path, path relative to the source's root folder, format) for each file."""
    files = expand_paths(src.paths)
    if src.format == "auto":
        files = [f for f in files if detect_format(f) is not None]
    if not files:
        return []
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    out = []
    for f in files:
        fmt = src.format if src.format != "auto" else detect_format(f)
        out.append((f, os.path.relpath(f, root), fmt))
    return out


def derived_id(source: str, rel: str, offset: int | str) -> str:
    """Stable id of a record without one: sha1 of source, file (relative) and offset."""
    return hashlib.sha1(f"{source}\0{rel}\0{offset}".encode()).hexdigest()


# --------------------------------------------------------------------------- helpers

def open_binary(path: str) -> io.BufferedIOBase:
    """Open a possibly compressed file for binary reading (gzip, zstd, plain)."""
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.open(path, "rb")
    if lower.endswith((".zst", ".zstd")):
        fh = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh, closefd=True), 1 << 20)
    return open(path, "rb")


_TRUNCATION_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


def _truncation_record(source: str, rel: str, where: str, err: BaseException) -> Raw:
    reason = "truncated_file" if isinstance(err, EOFError) else "corrupt_file"
    return Raw(derived_id(source, rel, f"error@{where}"), None, None,
               {"file": rel, "after": where, "error": f"{type(err).__name__}: {err}"}, reason)


def decode_utf8(data: bytes, on_bad_encoding: str) -> tuple[str, str | None]:
    """(text, reject reason or None). Invalid UTF-8 is repaired with U+FFFD either way, so that
    the rejected row still shows the text; 'repair' keeps the document, 'reject' rejects it."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        return text, ("bad_encoding" if on_bad_encoding == "reject" else "repaired")


def _small_meta(obj: dict, skip: set[str]) -> dict:
    return {
        k: v for k, v in obj.items()
        if k not in skip and (v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 256))
    }


# --------------------------------------------------------------------------- JSONL

def read_jsonl(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    source, text_field, id_field, url_field = src.name, src.text_field, src.id_field, src.url_field
    skip = {text_field, id_field, url_field}
    lineno = 0
    seen_ids: set[str] = set()
    try:
        with open_binary(path) as fh:
            for raw in fh:
                lineno += 1
                if not raw.strip():
                    continue
                line, enc = decode_utf8(raw, on_bad_encoding)
                meta = {"file": rel, "line": lineno}
                if enc == "repaired":
                    meta["repaired_encoding"] = True
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    meta["error"] = f"{err.msg} at column {err.colno}"
                    yield Raw(derived_id(source, rel, lineno), line.rstrip("\r\n"), None, meta, "bad_json")
                    continue
                if not isinstance(obj, dict):
                    meta["error"] = f"a line must hold a JSON object, not {type(obj).__name__}"
                    yield Raw(derived_id(source, rel, lineno), line.rstrip("\r\n"), None, meta, "bad_json")
                    continue
                doc_id = obj.get(id_field) if id_field else None
                if isinstance(doc_id, str | int) and not isinstance(doc_id, bool) and str(doc_id):
                    doc_id = str(doc_id)
                    if doc_id in seen_ids:
                        meta["error"] = f"id {doc_id!r} already used earlier in this file"
                        yield Raw(derived_id(source, rel, lineno), obj.get(text_field) if isinstance(obj.get(text_field), str) else line, None, meta, "duplicate_id")
                        continue
                    seen_ids.add(doc_id)
                else:
                    doc_id = derived_id(source, rel, lineno)
                text = obj.get(text_field)
                url = obj.get(url_field) if url_field else None
                url = url if isinstance(url, str) else None
                meta.update(_small_meta(obj, skip))
                if not isinstance(text, str):
                    meta["error"] = f"field {text_field!r} is " + ("missing" if text is None else f"a {type(text).__name__}, not a string")
                    yield Raw(doc_id, line.rstrip("\r\n"), url, meta, f"missing_field:{text_field}")
                    continue
                yield Raw(doc_id, text, url, meta, "bad_encoding" if enc == "bad_encoding" else None)
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(source, rel, f"line {lineno}", err)


# --------------------------------------------------------------------------- text files

def read_txt(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    """A text file is one document (a book)."""
    try:
        with open_binary(path) as fh:
            data = fh.read()
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(src.name, rel, "start", err)
        return
    text, enc = decode_utf8(data, on_bad_encoding)
    meta = {"file": rel, "title": Path(rel).name.split(".")[0]}
    if enc == "repaired":
        meta["repaired_encoding"] = True
    yield Raw(derived_id(src.name, rel, 0), text, None, meta, "bad_encoding" if enc == "bad_encoding" else None)


# --------------------------------------------------------------------------- Parquet

def read_parquet(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    if src.text_field not in names:
        raise InputError(f"{path}: no column {src.text_field!r} (columns: {', '.join(sorted(names))})")
    cols = [c for c in (src.text_field, src.id_field, src.url_field) if c and c in names]
    row = 0
    seen_ids: set[str] = set()
    for batch in pf.iter_batches(columns=cols, batch_size=4096):
        d = batch.to_pydict()
        texts = d[src.text_field]
        ids = d.get(src.id_field) if src.id_field else None
        urls = d.get(src.url_field) if src.url_field else None
        for i, text in enumerate(texts):
            meta = {"file": rel, "row": row}
            doc_id = ids[i] if ids is not None else None
            doc_id = str(doc_id) if doc_id is not None and str(doc_id) else derived_id(src.name, rel, row)
            error = None
            if doc_id in seen_ids:
                error, doc_id = "duplicate_id", derived_id(src.name, rel, row)
            seen_ids.add(doc_id)
            if isinstance(text, bytes):
                text, enc = decode_utf8(text, on_bad_encoding)
                if enc == "repaired":
                    meta["repaired_encoding"] = True
                elif enc:
                    error = error or enc
            if text is None:
                error = error or f"missing_field:{src.text_field}"
            yield Raw(doc_id, text, urls[i] if urls is not None else None, meta, error)
            row += 1


# --------------------------------------------------------------------------- WARC / WET

class _TruncationAwareStream(io.RawIOBase):
    """A decompressing stream that ends cleanly where the file is cut and remembers why.

    fastwarc alone stops silently at a truncated gzip member; Python's gzip raises EOFError,
    which would lose the records already decompressed in the buffer. This keeps both: the
    records before the cut, and ``self.error`` for a ``truncated_file`` row."""

    def __init__(self, path: str):
        self._fh = gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, b) -> int:
        if self.error is not None:
            return 0
        try:
            # read1: at most one decompression step per call, so a cut file raises only after
            # everything before the cut has been handed over
            data = self._fh.read1(min(len(b), 1 << 16))
            b[: len(data)] = data
            return len(data)
        except _TRUNCATION_ERRORS as err:
            self.error = err
            return 0

    def close(self) -> None:
        self._fh.close()
        super().close()


def _warc_stream(path: str) -> _TruncationAwareStream:
    return _TruncationAwareStream(path)


def read_wet(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    """Common Crawl WET: one document per ``conversion`` record (the extracted page text)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n, cut = 0, False
    try:
        with _warc_stream(path) as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.conversion, parse_http=False):
                n += 1
                cut = False
                h = rec.headers
                body = rec.reader.read()
                rid = (rec.record_id or "").strip("<>") or derived_id(src.name, rel, rec.stream_pos)
                meta = {"file": rel, "offset": rec.stream_pos, "warc_date": h.get("WARC-Date")}
                lang = h.get("WARC-Identified-Content-Language")
                if lang:
                    meta["lang"] = lang
                if len(body) < rec.content_length or h.get("Content-Length") is None:
                    cut = True
                    meta["error"] = (f"record body has {len(body)} of {rec.content_length} bytes"
                                     if h.get("Content-Length") is not None else "record header without Content-Length")
                    if fh.error is not None:
                        meta["error"] += f" ({type(fh.error).__name__}: {fh.error})"
                    yield Raw(rid, body.decode("utf-8", "replace"), h.get("WARC-Target-URI"), meta, "truncated_file")
                    continue
                text, enc = decode_utf8(body, on_bad_encoding)
                if enc == "repaired":
                    meta["repaired_encoding"] = True
                yield Raw(rid, text, h.get("WARC-Target-URI"), meta, "bad_encoding" if enc == "bad_encoding" else None)
            if fh.error is not None and not cut:
                yield _truncation_record(src.name, rel, f"record {n}", fh.error)
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(src.name, rel, f"record {n}", err)


def html_to_text(html: bytes, extractor: str = "resiliparse", main_content: bool = True,
                 charset: str | None = None) -> str:
    """Main text of an HTML page: resiliparse (fast, default) or trafilatura."""
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    s = bytes_to_str(html, charset or detect_encoding(html))
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(s, include_comments=False, favor_recall=not main_content) or ""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(s, main_content=main_content, alt_texts=False)


def read_warc(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair",
              extractor: str = "resiliparse", main_content: bool = True) -> Iterator[Raw]:
    """Common Crawl WARC: one document per ``response`` record; HTML turned into text."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    try:
        with _warc_stream(path) as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                n += 1
                h = rec.headers
                rid = (rec.record_id or "").strip("<>") or derived_id(src.name, rel, rec.stream_pos)
                url = h.get("WARC-Target-URI")
                meta = {"file": rel, "offset": rec.stream_pos, "warc_date": h.get("WARC-Date")}
                body = rec.reader.read()
                hh = rec.http_headers
                status = hh.status_code if hh is not None else None
                ctype = (hh.get("Content-Type") or "") if hh is not None else ""
                meta["http_status"] = status
                meta["content_type"] = ctype.split(";")[0].strip()
                if status is not None and status != 200:
                    yield Raw(rid, None, url, meta, f"http_status:{status}")
                    continue
                if ctype and "html" not in ctype.lower():
                    yield Raw(rid, None, url, meta, "not_html")
                    continue
                charset = None
                if "charset=" in ctype.lower():
                    charset = ctype.lower().split("charset=")[-1].split(";")[0].strip().strip('"') or None
                try:
                    text = html_to_text(body, extractor, main_content, charset)
                except Exception as err:  # a page the extractor can't parse is one rejected record
                    meta["error"] = f"{type(err).__name__}: {err}"
                    yield Raw(rid, None, url, meta, "html_extraction_failed")
                    continue
                yield Raw(rid, text, url, meta, None)
            if fh.error is not None:
                yield _truncation_record(src.name, rel, f"record {n}", fh.error)
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(src.name, rel, f"record {n}", err)


READERS = {"jsonl": read_jsonl, "txt": read_txt, "parquet": read_parquet, "wet": read_wet, "warc": read_warc}
