"""Readers: turn one input file into a stream of raw records.

Pure Python generators, no Ray. Each yields :class:`Raw` tuples; a record that cannot become a
document (malformed JSON, missing field, truncated file, ...) is still yielded, with ``error``
set to the reject reason, so that nothing is lost silently.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
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


class ReadFailure(Exception):
    """A file could not be read on (an I/O error of the disk, or a bug): ``records`` is how many
    records had been read whole, ``cause`` the error."""

    def __init__(self, records: int, cause: BaseException):
        super().__init__(f"after record {records}: {cause}")
        self.records, self.cause = records, cause


def columns(records: Iterator[Raw], batch_rows: int) -> Iterator[Columns]:
    """Group a reader's records into column batches (a failure says how many records came)."""
    cols, n = Columns(), 0
    try:
        for r in records:
            cols.add_raw(r)
            n += 1
            if len(cols) >= batch_rows:
                yield cols
                cols = Columns()
    except (InputError, GeneratorExit):
        raise
    except Exception as err:
        raise ReadFailure(n, err) from err
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


SUFFIXES = tuple(dict.fromkeys(suffix for suffix, _ in _SUFFIX_FORMATS))


def detect_format(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1].lower()
    for suffix, fmt in _SUFFIX_FORMATS:
        if name.endswith(suffix):
            return fmt
    return None


def expand_paths(paths: list[str]) -> list[str]:
    """Files named by paths, folders (recursive) and globs, local or URLs; sorted, and each
    real file once (a file reached through two symlinks, or a folder and a glob, is read once)."""
    out: dict[str, str] = {}
    for p in paths:
        matches = storage.glob(p) if storage.has_magic(p.split("://", 1)[-1]) else [p]
        for m in matches:
            if storage.is_url(m):
                for f in (storage.walk_files(m) if storage.isdir(m) else [m] if storage.isfile(m) else []):
                    out[f] = f
                continue
            for f in (storage.walk_files(m) if storage.isdir(m) else [m] if os.path.isfile(m) else []):
                f = os.path.abspath(f)
                real = os.path.realpath(f)
                if real not in out or f < out[real]:
                    out[real] = f
    return sorted(out.values())


def listing_lines(src: SourceConfig, listing: str) -> list[str]:
    """The files a Common Crawl listing (``wet.paths.gz``: one path per line, relative to the
    crawl's bucket) names, after ``limit`` (the first N) and ``sample`` (n of them, seeded, in
    listing order)."""
    try:
        with storage.open_decompressed(listing) as fh:
            text = fh.read().decode("utf-8")
    except storage.StreamDamage as err:
        raise InputError(f"{listing}: the listing is damaged: {err}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{listing}: the listing is not UTF-8 text (byte {err.start})") from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if src.limit is not None:
        lines = lines[: src.limit]
    if src.sample is not None and src.sample.n < len(lines):
        import random

        keep = sorted(random.Random(src.sample.seed).sample(range(len(lines)), src.sample.n))
        lines = [lines[i] for i in keep]
    return lines


def source_files(src: SourceConfig) -> list[tuple[str, str, str]]:
    """(absolute path or URL, path relative to the source's root, format) for each file. The
    lines of a listing are relative to ``src.base``, and that relative path is the file's
    ``rel`` (so ids do not depend on whether it is read from S3, HTTPS or a local copy)."""
    listings = [p for p in src.paths if src.is_listing(p) and not storage.isdir(p)]
    plain = [p for p in src.paths if p not in listings]
    out = []
    for listing in listings:
        for line in listing_lines(src, listing):
            fmt = src.format if src.format != "auto" else detect_format(line)
            if fmt is not None:
                out.append((storage.join(src.base, line), line.lstrip("/"), fmt))
    files = expand_paths(plain) if plain else []
    if src.format == "auto":
        files = [f for f in files if detect_format(f) is not None]
    if files:
        root = storage.commonpath([storage.dirname(f) for f in files])
        for f in files:
            fmt = src.format if src.format != "auto" else detect_format(f)
            out.append((f, storage.relpath(f, root), fmt))
    return out


def derived_id(source: str, rel: str, offset: int | str) -> str:
    """Stable id of a record without one: sha1 of source, file (relative) and offset."""
    return hashlib.sha1(f"{source}\0{rel}\0{offset}".encode()).hexdigest()


# --------------------------------------------------------------------------- helpers

open_binary = storage.open_decompressed


_TRUNCATION_ERRORS = (storage.StreamDamage, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError)


def _truncation_record(source: str, rel: str, where: str, err: BaseException) -> Raw:
    """The one rejected row that names where a file's damage starts: ``after`` is the last
    record read whole (``line N``, ``record N``, ``row N``), ``offset`` the byte of the file."""
    if isinstance(err, storage.StreamDamage):
        reason = "truncated_file" if err.kind == "truncated" else "corrupt_file"
        meta = {"file": rel, "after": where, **({} if err.offset is None else {"offset": err.offset}),
                "error": str(err)}
    else:
        reason = "truncated_file" if isinstance(err, EOFError) else "corrupt_file"
        meta = {"file": rel, "after": where, "error": f"{type(err).__name__}: {err}"}
    return Raw(derived_id(source, rel, f"error@{where}"), None, None, meta, reason)


_BOMS = [(b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
         (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le")]
UTF8_BOM = b"\xef\xbb\xbf"


def bom_encoding(head: bytes) -> str | None:
    """The UTF-16/32 encoding a byte-order mark at the start of a file announces, if any."""
    for bom, enc in _BOMS:
        if head.startswith(bom):
            return enc
    return None


def _lines(fh, enc: str | None) -> Iterator[bytes]:
    """The lines of a binary file as UTF-8 bytes: a UTF-8 byte-order mark is dropped; a
    UTF-16/32 file (its BOM says which) is decoded and re-encoded."""
    if enc is None:
        first = True
        for raw in fh:
            if first:
                first = False
                if raw.startswith(UTF8_BOM):
                    raw = raw[3:]
            yield raw
        return
    text = io.TextIOWrapper(fh, encoding=enc.removesuffix("-le").removesuffix("-be"), newline="")
    for line in text:
        yield line.encode("utf-8", "surrogatepass")


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
            file_enc = bom_encoding(fh.peek(4)[:4])
            for raw in _lines(fh, file_enc):
                lineno += 1
                if not raw.strip():
                    continue
                line, enc = decode_utf8(raw, on_bad_encoding)
                meta = {"file": rel, "line": lineno}
                if file_enc:
                    meta["encoding"] = file_enc
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
                    meta["error"] = f"field {text_field!r} is " + (
                        "missing" if text_field not in obj else "null" if text is None
                        else f"a {type(text).__name__}, not a string")
                    yield Raw(doc_id, line.rstrip("\r\n"), url, meta, f"missing_field:{text_field}")
                    continue
                yield Raw(doc_id, text, url, meta, "bad_encoding" if enc == "bad_encoding" else None)
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(source, rel, f"line {lineno}", err)
    except UnicodeDecodeError as err:  # a UTF-16/32 file (by its BOM) that is not valid there
        yield _truncation_record(source, rel, f"line {lineno}", storage.StreamDamage(
            "corrupt", None, f"not valid {file_enc} after line {lineno} ({err.reason})"))


# --------------------------------------------------------------------------- text files

def read_txt(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    """A text file is one document (a book)."""
    try:
        with open_binary(path) as fh:
            data = fh.read()
    except _TRUNCATION_ERRORS as err:
        yield _truncation_record(src.name, rel, "start", err)
        return
    meta = {"file": rel, "title": Path(rel).name.split(".")[0]}
    if file_enc := bom_encoding(data[:4]):
        meta["encoding"] = file_enc
        codec = file_enc.removesuffix("-le").removesuffix("-be")
        try:
            data = data.decode(codec).encode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            data = data.decode(codec, "replace").encode("utf-8", "surrogatepass")
            meta["repaired_encoding"] = True
    text, enc = decode_utf8(data.removeprefix(UTF8_BOM), on_bad_encoding)
    if enc == "repaired":
        meta["repaired_encoding"] = True
    yield Raw(derived_id(src.name, rel, 0), text, None, meta, "bad_encoding" if enc == "bad_encoding" else None)


# --------------------------------------------------------------------------- Parquet

def read_parquet(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair") -> Iterator[Raw]:
    row = 0
    try:
        pf = storage.parquet_file(path)
    except (OSError, pa.ArrowException) as err:  # no footer: not Parquet, or cut short
        if isinstance(err, OSError) and err.errno is not None:
            raise
        yield _truncation_record(src.name, rel, "row 0", storage.StreamDamage(
            "corrupt", None, f"not a readable Parquet file ({err})"))
        return
    names = set(pf.schema_arrow.names)
    if src.text_field not in names:
        raise InputError(f"{path}: no column {src.text_field!r} (columns: {', '.join(sorted(names))})")
    cols = [c for c in (src.text_field, src.id_field, src.url_field) if c and c in names]
    seen_ids: set[str] = set()
    batches = pf.iter_batches(columns=cols, batch_size=4096)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (OSError, pa.ArrowException) as err:  # a damaged page or row group: keep what was read
            if isinstance(err, OSError) and err.errno is not None:
                raise
            yield _truncation_record(src.name, rel, f"row {row}", storage.StreamDamage(
                "corrupt", None, f"Parquet data is corrupt after row {row} ({err})"))
            return
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
                meta["error"] = f"field {src.text_field!r} is null"
            elif not isinstance(text, str):
                error = error or f"missing_field:{src.text_field}"
                meta["error"] = f"field {src.text_field!r} is a {type(text).__name__}, not a string"
                text = None
            yield Raw(doc_id, text, urls[i] if urls is not None else None, meta, error)
            row += 1


# --------------------------------------------------------------------------- WARC / WET

def archive_damage(path: str, last_record_pos: int) -> storage.StreamDamage | None:
    """Where a ``.warc.gz``/``.wet.gz`` is damaged, if it is: fastwarc stops at a truncated gzip
    member in silence, and names no position when a member is corrupt. Common Crawl files hold
    one gzip member per record, so checking from the last good record's offset on is cheap; a
    file that is one big member (the offset is no member boundary) is checked whole."""
    if storage.compression_of(path) != "gzip":
        return None
    for start in dict.fromkeys((last_record_pos, 0)):
        err = storage.compressed_damage(path, start)
        if err is None or start == 0:  # from a later offset, damage may mean "not a member boundary"
            return err
    return None


def _archive_failure(path: str, rel: str, source: str, n: int, pos: int, err: BaseException) -> Raw:
    """The rejected row of a WARC/WET file that fastwarc could not read on from record ``n``."""
    found = archive_damage(path, pos)
    if found is None:
        found = storage.StreamDamage("corrupt", None, f"{type(err).__name__}: {err} (after the record at byte {pos:,})")
    return _truncation_record(source, rel, f"record {n}", found)


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
    cover = coverage(path)
    types = WarcRecordType.any_type if cover else WarcRecordType.conversion
    try:
        with storage.open_read(path) as fh:
            for rec in ArchiveIterator(fh, record_types=types, parse_http=False):
                if cover:
                    cover.record(rec.stream_pos, rec.content_length)
                    if rec.record_type in (WarcRecordType.unknown, WarcRecordType.no_type):
                        n += 1
                        cols.add_raw(_untyped(src.name, rel, rec))
                        continue
                    if rec.record_type != WarcRecordType.conversion:
                        continue
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
                    err = archive_damage(path, pos)
                    if err is not None:
                        why += f" ({err})"
                    cols.add(rid, body.decode("utf-8", "replace"), h.get("WARC-Target-URI"),
                             meta + f',"error":{json.dumps(why)}}}', "truncated_file")
                elif (at := swallowed_record(body)) >= 0:
                    why = (f"Content-Length {rec.content_length} runs into the next record (its header "
                           f"starts at byte {at + 4} of this record's body)")
                    cols.add(rid, body.decode("utf-8", "replace"), h.get("WARC-Target-URI"),
                             meta + f',"error":{json.dumps(why)}}}', "corrupt_file")
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
        if not cut and (err := archive_damage(path, pos)) is not None:
            cols.add_raw(_truncation_record(src.name, rel, f"record {n}", err))
        if cover and (err := cover.finish()) is not None and not (cut and err.kind == "truncated"):
            cols.add_raw(_truncation_record(src.name, rel, f"record {n}", err))
    except (OSError, *_TRUNCATION_ERRORS) as err:  # fastwarc: "Gzip decompression error"
        if isinstance(err, OSError) and err.errno is not None:
            raise ReadFailure(max(n - 1, 0), err) from err  # the disk, not the content: stops the stage
        cols.add_raw(_archive_failure(path, rel, src.name, n, pos, err))
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


class Coverage:
    """The bytes of a plain (uncompressed) WARC/WET file that no record covers. fastwarc skips
    anything that is not a record header in silence, so a damaged header loses its record and
    a file cut inside a header loses the record with no word; each record's extent (header,
    Content-Length, the blank line) is checked against where the next one starts. Gzip files
    need no such check: a damaged member fails its CRC."""

    def __init__(self, path: str):
        self.fh = storage.open_read(path)
        self.size = storage.size(path)
        self.next = 0
        self.damage: storage.StreamDamage | None = None

    def _gap(self, start: int, end: int) -> None:
        if self.damage is not None or end <= start:
            return
        self.fh.seek(start)
        data = self.fh.read(min(end - start, 1 << 20))
        if not data.strip():
            return  # the blank lines between records
        at = start + len(data) - len(data.lstrip())
        if end == self.size and data.lstrip().startswith(b"WARC/"):
            self.damage = storage.StreamDamage(
                "truncated", at, f"the file ends inside the header of a record that starts at byte {at:,}")
        else:
            self.damage = storage.StreamDamage(
                "corrupt", at, f"bytes {at:,} to {end:,} are no WARC record (a damaged record header: "
                f"the record there is lost)")

    def record(self, pos: int, content_length: int) -> None:
        self._gap(self.next, pos)
        self.fh.seek(pos)
        head = self.fh.read(1 << 16)
        ends = [(i, len(m)) for m in (b"\r\n\r\n", b"\n\n") if (i := head.find(m)) >= 0]
        if ends:
            i, sep = min(ends)
            self.next = pos + i + sep + content_length
        else:  # a header over 64 KB: trust fastwarc
            self.next = pos + 1

    def finish(self) -> storage.StreamDamage | None:
        self._gap(self.next, self.size)
        self.fh.close()
        return self.damage


def _untyped(source: str, rel: str, rec) -> Raw:
    """A record whose WARC-Type is missing or no WARC type (a damaged header): a rejected row,
    since it may be the document the file held."""
    t = rec.headers.get("WARC-Type")
    why = f"WARC-Type {t!r} is no WARC record type" if t else "record header without WARC-Type"
    return Raw(derived_id(source, rel, rec.stream_pos), None, rec.headers.get("WARC-Target-URI"),
               {"file": rel, "offset": rec.stream_pos, "error": why + " (a damaged header?)"}, "corrupt_file")


def coverage(path: str) -> Coverage | None:
    return Coverage(path) if storage.compression_of(path) is None else None


def swallowed_record(block: bytes) -> int:
    """Where a record's block holds the start of another WARC record (its Content-Length is
    too large, so it runs into the next record), or -1. One search per record (the hot path)."""
    i = block.find(b"\r\n\r\nWARC/1.")
    while i >= 0:
        if block[i + 11:i + 14] in (b"0\r\n", b"1\r\n"):
            return i
        i = block.find(b"\r\n\r\nWARC/1.", i + 1)
    return -1


def split_http(block: bytes) -> tuple[int | None, str, bytes]:
    """(status, Content-Type, body) of an HTTP response block (a WARC ``response`` payload);
    status None when the block has no HTTP status line."""
    end, sep = block.find(b"\r\n\r\n"), 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
    if end < 0 or not block.startswith(b"HTTP/"):
        return None, "", block
    lines = block[:end].decode("latin-1").splitlines()
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    ctype = ""
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-type":
            ctype = v.strip()
    return status, ctype, block[end + sep:]


def read_warc(path: str, rel: str, src: SourceConfig, on_bad_encoding: str = "repair",
              extractor: str = "resiliparse", main_content: bool = True) -> Iterator[Raw]:
    """Common Crawl WARC: one document per ``response`` record; HTML turned into text. A record
    whose block is shorter than its Content-Length is a ``truncated_file`` row."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n, pos, cut = 0, 0, False
    cover = coverage(path)
    types = WarcRecordType.any_type if cover else WarcRecordType.response
    try:
        with storage.open_read(path) as fh:
            for rec in ArchiveIterator(fh, record_types=types, parse_http=False):
                if cover:
                    cover.record(rec.stream_pos, rec.content_length)
                    if rec.record_type in (WarcRecordType.unknown, WarcRecordType.no_type):
                        n += 1
                        yield _untyped(src.name, rel, rec)
                        continue
                    if rec.record_type != WarcRecordType.response:
                        continue
                n += 1
                pos = rec.stream_pos
                h = rec.headers
                rid = (rec.record_id or "").strip("<>") or derived_id(src.name, rel, rec.stream_pos)
                url = h.get("WARC-Target-URI")
                meta = {"file": rel, "offset": rec.stream_pos, "warc_date": h.get("WARC-Date")}
                block = rec.reader.read()
                if len(block) < rec.content_length or h.get("Content-Length") is None:
                    cut = True
                    meta["error"] = (f"record block has {len(block)} of {rec.content_length} bytes"
                                     if h.get("Content-Length") is not None else "record header without Content-Length")
                    if (err := archive_damage(path, pos)) is not None:
                        meta["error"] += f" ({err})"
                    yield Raw(rid, None, url, meta, "truncated_file")
                    continue
                cut = False
                if (at := swallowed_record(block)) >= 0:
                    meta["error"] = (f"Content-Length {rec.content_length} runs into the next record (its "
                                     f"header starts at byte {at + 4} of this record's block)")
                    yield Raw(rid, None, url, meta, "corrupt_file")
                    continue
                status, ctype, body = split_http(block)
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
        if not cut and (err := archive_damage(path, pos)) is not None:
            yield _truncation_record(src.name, rel, f"record {n}", err)
        if cover and (err := cover.finish()) is not None and not (cut and err.kind == "truncated"):
            yield _truncation_record(src.name, rel, f"record {n}", err)
    except (OSError, *_TRUNCATION_ERRORS) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        yield _archive_failure(path, rel, src.name, n, pos, err)


READERS = {"jsonl": read_jsonl, "txt": read_txt, "parquet": read_parquet, "wet": read_wet, "warc": read_warc}
