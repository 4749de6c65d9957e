"""Readers: turn one input file into a stream of raw records.

Pure Python generators, no Ray. Each yields :class:`Raw` tuples; a record that cannot become a
document (malformed JSON, missing field, truncated file, ...) is still yielded, with ``error``
set to the reject reason, so that nothing is lost silently.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import zstandard
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import InputError

from .config import SourceConfig


class Raw(NamedTuple):
    id: str
    text: str | None
    url: str | None
    meta: dict
    error: str | None  # reject reason, or None for a document candidate


META_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_str(s: str | None) -> str:
    """JSON literal of a short header string; the common plain case without the encoder."""
    if s is None:
        return "null"
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    return json.dumps(s, ensure_ascii=False)


class Columns:
    """A batch of raw records as column lists (meta already JSON): what readers of big files
    produce directly, without a Python object per record."""

    __slots__ = ("ids", "texts", "urls", "metas", "errors")

    def __init__(self):
        self.ids, self.texts, self.urls, self.metas, self.errors = [], [], [], [], []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, doc_id: str, text: str | None, url: str | None, meta_json: str, error: str | None) -> None:
        self.ids.append(doc_id)
        self.texts.append(text)
        self.urls.append(url)
        self.metas.append(meta_json)
        self.errors.append(error)

    def add_raw(self, r: Raw) -> None:
        self.add(r.id, r.text, r.url, META_JSON(r.meta), r.error)


def columns(records: Iterator[Raw], batch_rows: int) -> Iterator[Columns]:
    """Group a reader's records into column batches."""
    cols = Columns()
    for r in records:
        cols.add_raw(r)
        if len(cols) >= batch_rows:
            yield cols
            cols = Columns()
    if len(cols):
        yield cols


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
        matches = storage.glob(p) if storage.has_magic(p) else [p]
        for m in matches:
            if storage.isdir(m):
                out.update(storage.walk_files(m))
            elif storage.exists(m):
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

open_binary = storage.open_decompressed


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
    pf = storage.parquet_file(path)
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

def _verify_gzip_members(path: str, start: int) -> BaseException | None:
    """Decompress the gzip members from byte ``start`` to the end of the file; returns the
    truncation error, if any (zlib.error propagates: ``start`` is not a member boundary)."""
    with storage.open_read(path) as fh:
        if start >= os.fstat(fh.fileno()).st_size and start > 0:
            raise zlib.error("offset past the end of the file")
        fh.seek(start)
        d, started = zlib.decompressobj(31), False
        while chunk := fh.read(1 << 20):
            while chunk:
                started = True
                d.decompress(chunk)
                if d.eof:
                    chunk, d, started = d.unused_data, zlib.decompressobj(31), False
                else:
                    chunk = b""
        if started and not d.eof:
            return EOFError("Compressed file ended before the end-of-stream marker was reached")
    return None


def gzip_tail_error(path: str, last_record_pos: int) -> BaseException | None:
    """fastwarc stops silently at a truncated gzip stream. Common Crawl files hold one gzip
    member per record, so checking from the last record's offset to the end is cheap; a file
    that is one big member (or a bad offset) is checked whole."""
    if not path.lower().endswith(".gz"):
        return None
    for start in dict.fromkeys((last_record_pos, 0)):
        try:
            return _verify_gzip_members(path, start)
        except zlib.error as err:
            if start == 0:
                return err
    return None


def read_wet(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    """Common Crawl WET: one document per ``conversion`` record (the extracted page text)."""
    for cols in read_wet_columns(path, rel, src, on_bad_encoding):
        for i in range(len(cols)):
            yield Raw(cols.ids[i], cols.texts[i], cols.urls[i], json.loads(cols.metas[i]), cols.errors[i])


def read_wet_columns(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair",
                     batch_rows: int = 4096) -> Iterator[Columns]:
    """The WET reader proper, column batches (the hot path of a crawl ingest)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n, cut, pos = 0, False, 0
    rel_json = json_str(rel)
    cols = Columns()
    try:
        with storage.open_read(path) as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.conversion, parse_http=False):
                n += 1
                cut = False
                pos = rec.stream_pos
                h = rec.headers.asdict()  # one call: HeaderMap.get costs ~1 us each
                body = rec.reader.read()
                rid = (rec.record_id or "").strip("<>") or derived_id(src.name, rel, pos)
                lang = h.get("WARC-Identified-Content-Language")
                meta = f'{{"file":{rel_json},"offset":{pos},"warc_date":{json_str(h.get("WARC-Date"))}'
                if lang:
                    meta += f',"lang":{json_str(lang)}'
                if len(body) < rec.content_length or "Content-Length" not in h:
                    cut = True
                    why = (f"record body has {len(body)} of {rec.content_length} bytes"
                           if "Content-Length" in h else "record header without Content-Length")
                    err = gzip_tail_error(path, pos)
                    if err is not None:
                        why += f" ({type(err).__name__}: {err})"
                    cols.add(rid, body.decode("utf-8", "replace"), h.get("WARC-Target-URI"),
                             meta + f',"error":{json.dumps(why)}}}', "truncated_file")
                else:
                    try:
                        cols.add(rid, body.decode("utf-8"), h.get("WARC-Target-URI"), meta + "}", None)
                    except UnicodeDecodeError:
                        text, enc = decode_utf8(body, on_bad_encoding)
                        flag = ',"repaired_encoding":true' if enc == "repaired" else ""
                        cols.add(rid, text, h.get("WARC-Target-URI"), meta + flag + "}",
                                 "bad_encoding" if enc == "bad_encoding" else None)
                if len(cols) >= batch_rows:
                    yield cols
                    cols = Columns()
        if not cut and (err := gzip_tail_error(path, pos)) is not None:
            cols.add_raw(_truncation_record(src.name, rel, f"record {n}", err))
    except _TRUNCATION_ERRORS as err:
        cols.add_raw(_truncation_record(src.name, rel, f"record {n}", err))
    if len(cols):
        yield cols


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

    n, pos = 0, 0
    try:
        with storage.open_read(path) as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                n += 1
                pos = rec.stream_pos
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
        if (err := gzip_tail_error(path, pos)) is not None:
            yield _truncation_record(src.name, rel, f"record {n}", err)
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(src.name, rel, f"record {n}", err)


READERS = {"jsonl": read_jsonl, "txt": read_txt, "parquet": read_parquet, "wet": read_wet, "warc": read_warc}
