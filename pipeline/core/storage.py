"""The one storage layer: every file a stage reads or writes goes through this module.

Inputs, shards, manifests, work folders and models: open/read/write, listing and globs,
exists/size/fingerprint, remove, the run-dir lock (:func:`run_lock`) and the stage commit
(:class:`StageOutput`). A path is a local path or a URL: ``s3://``, ``gs://`` (read and write)
or ``https://`` (read only), served by :mod:`.objstore`; local paths keep the os code here
(symlink-safe walks, ``flock``). Stages never see the difference.

The stage commit, the same on disk and on object storage (which cannot rename a folder): a
stage writes its files under ``RUN_DIR/<stage>/attempt-<id>/``; it is committed by writing
``RUN_DIR/<stage>/_manifest.json`` last, in one PUT (on disk: a temp file, fsynced, then
``os.replace``), naming the attempt and listing every file with its size (and ETag where the
store gives one). Readers trust only the files a committed manifest lists; every other attempt
folder is removed under the run-dir lock. A crash at any point leaves the previous finished
stage or no finished stage, never a half-written one that looks finished.
"""

from __future__ import annotations

import errno
import fnmatch
import glob as _glob
import hashlib
import io
import json
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from . import objstore

MANIFEST = "_manifest.json"
ATTEMPT_PREFIX = "attempt-"


def is_url(path) -> bool:
    return "://" in str(path)


def _be(path: str):
    """The object-store backend of a URL (None for a local path)."""
    return objstore.backend(path) if is_url(path) else None


def _url_parts(path: str) -> tuple[str, list[str]]:
    """(``scheme://bucket``, key parts) of a URL."""
    scheme, bucket, key = objstore.split(path)
    return f"{scheme}://{bucket}", [k for k in key.split("/") if k]


def relpath(path: str, start: str) -> str:
    """``path`` relative to the folder ``start`` (both local, or both URLs)."""
    if is_url(path):
        if path.rstrip("/") == start.rstrip("/"):
            return "."
        return path[len(start.rstrip("/")) + 1:] if path.startswith(start.rstrip("/") + "/") else path
    return os.path.relpath(path, start)


def commonpath(paths: list[str]) -> str:
    if paths and is_url(paths[0]):
        roots = {_url_parts(p)[0] for p in paths}
        if len(roots) > 1:
            return ""
        parts = [_url_parts(p)[1] for p in paths]
        common = []
        for group in zip(*parts):
            if len(set(group)) > 1:
                break
            common.append(group[0])
        return "/".join([roots.pop(), *common])
    return os.path.commonpath(paths)


# --------------------------------------------------------------------------- paths and listing

def join(*parts) -> str:
    parts = [str(p) for p in parts]
    if is_url(parts[0]):
        out = parts[0]
        for p in parts[1:]:
            out = out.rstrip("/") + "/" + p.lstrip("/")
        return out
    return os.path.join(*parts)


def dirname(path: str) -> str:
    if is_url(path):
        root, keys = _url_parts(path)
        return "/".join([root, *keys[:-1]])
    return os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if is_url(path) else os.path.basename(path)


def stat(path: str) -> objstore.Info | None:
    """Size and version (ETag, generation, mtime) of a file; None if it does not exist."""
    if (be := _be(path)) is not None:
        return be.stat(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    import stat as _stat

    return objstore.Info(path, st.st_size, str(st.st_mtime_ns), is_dir=_stat.S_ISDIR(st.st_mode))


def stat_many(paths: list[str], workers: int = 32) -> list[objstore.Info | None]:
    """:func:`stat` of many files, in order; on object storage in parallel (one HEAD each)."""
    if not any(is_url(p) for p in paths) or len(paths) < 2:
        return [stat(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(paths))) as pool:
        return list(pool.map(stat, paths))


def exists(path: str) -> bool:
    return stat(path) is not None if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    if is_url(path):
        info = stat(path)
        return info is not None and info.is_dir
    return os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_url(path):
        info = stat(path)
        return info is not None and not info.is_dir
    return os.path.isfile(path)


def size(path: str) -> int:
    if is_url(path):
        info = stat(path)
        if info is None:
            raise FileNotFoundError(errno.ENOENT, "no such object", objstore.public_url(path))
        return info.size
    return os.path.getsize(path)


def listdir(folder: str) -> list[str]:
    """Sorted entry names of a folder; [] when it does not exist."""
    if (be := _be(folder)) is not None:
        return sorted({basename(i.url) for i in be.list(folder, recursive=False)})
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_files(folder: str, suffix: str = "") -> list[str]:
    """Sorted full paths of the files in ``folder`` (not recursive) whose name ends with ``suffix``."""
    if (be := _be(folder)) is not None:
        return sorted(i.url for i in be.list(folder, recursive=False) if not i.is_dir and i.url.endswith(suffix))
    return [os.path.join(folder, f) for f in listdir(folder) if f.endswith(suffix)
            and os.path.isfile(os.path.join(folder, f))]


def _remote_tree(folder: str) -> list[objstore.Info]:
    """Every object under ``folder/`` (a URL), sorted by URL."""
    return sorted(_be(folder).list(folder, recursive=True), key=lambda i: i.url)


def _walk(folder: str, hidden: bool = False) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk that follows symlinked folders but enters each real folder once: a link loop
    (``self -> .``, ``up -> ..``) is neither a hang nor the same file many times.
    ``hidden``: also enter dot-folders."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        keep = []
        for d in sorted(dirs):
            if not hidden and d.startswith("."):
                continue
            try:
                sd = os.stat(os.path.join(root, d))
            except OSError:  # a dangling link
                continue
            if (sd.st_dev, sd.st_ino) not in seen:
                keep.append(d)
        dirs[:] = keep
        yield root, dirs, sorted(files)


def _component_match(parts: list[str], pats: list[str]) -> bool:
    """glob's matching of path components, ``**`` standing for any number of folders; names
    that start with a dot match only patterns that do."""
    if not pats:
        return not parts
    p = pats[0]
    if p == "**":
        if _component_match(parts, pats[1:]):
            return True
        return bool(parts) and not parts[0].startswith(".") and _component_match(parts[1:], pats)
    if not parts or (parts[0].startswith(".") and not p.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], p) and _component_match(parts[1:], pats[1:])


def _remote_glob(pattern: str) -> list[str]:
    """Matches of a glob on object storage: one listing under the part before the first
    wildcard, matched by path components (folders are the prefixes of the keys)."""
    root, keys = _url_parts(pattern)
    i = next(k for k, part in enumerate(keys) if _glob.has_magic(part))
    base = "/".join([root, *keys[:i]])
    pats = keys[i:]
    found: set[str] = set()
    tree = _remote_tree(base)
    if tree and _component_match([], pats):  # `**` stands for no folder too: the base itself
        found.add(base)
    for info in tree:
        rel = relpath(info.url, base).split("/")
        for depth in range(1, len(rel) + 1):  # the object and the folders above it
            if _component_match(rel[:depth], pats):
                found.add("/".join([base, *rel[:depth]]))
    return sorted(found)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob; ``**`` is recursive and safe against symlink loops (Python's
    glob follows a ``self -> .`` link until the path is too long)."""
    if is_url(pattern):
        return _remote_glob(pattern)
    if "**" not in pattern:
        return sorted(_glob.glob(pattern))
    parts = pattern.split(os.sep)
    i = next(k for k, part in enumerate(parts) if _glob.has_magic(part))
    root = os.sep.join(parts[:i]) or (os.sep if pattern.startswith(os.sep) else ".")
    pats = [q for q in parts[i:] if q]
    out = []
    for dirpath, dirs, files in _walk(root, hidden=any(q.startswith(".") for q in pats)):
        rel = os.path.relpath(dirpath, root)
        base = [] if rel == "." else rel.split(os.sep)
        out += [os.path.join(dirpath, n) for n in (*dirs, *files) if _component_match(base + [n], pats)]
        if not base and _component_match([], pats):
            out.append(root)
    return sorted(set(out))


def has_magic(path: str) -> bool:
    return _glob.has_magic(path)


def walk_files(folder: str) -> Iterator[str]:
    """Every file under ``folder``, recursively, skipping dotfiles and dot-folders; symlinked
    folders are followed, each real folder once."""
    if is_url(folder):
        for info in _remote_tree(folder):
            if not any(part.startswith(".") for part in relpath(info.url, folder).split("/")):
                yield info.url
        return
    for root, _dirs, files in _walk(folder):
        yield from (os.path.join(root, f) for f in files
                    if not f.startswith(".") and os.path.isfile(os.path.join(root, f)))  # not a dangling link


def makedirs(path: str) -> None:
    if not is_url(path):  # object stores have no folders
        os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    """Remove a file or a folder tree; nothing if it is not there."""
    if (be := _be(path)) is not None:
        urls = [i.url for i in be.list(path, recursive=True) if not i.is_dir]
        if (info := be.stat(path)) is not None and not info.is_dir:
            urls.append(path)
        if urls:
            be.delete(urls)
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def copy(src: str, dst: str) -> None:
    """Copy a file or a folder tree (between local disk and object storage too)."""
    if is_url(src) or is_url(dst):
        if isdir(src):  # every file, dotfiles too (as shutil.copytree)
            every = ([i.url for i in _remote_tree(src) if not i.is_dir] if is_url(src) else
                     [os.path.join(r, f) for r, _d, fs in _walk(src, hidden=True) for f in fs])
            files = [(f, join(dst, relpath(f, src).replace(os.sep, "/"))) for f in every]
        else:
            files = [(src, dst)]
        for a, b in files:
            with open_read(a) as fi, open_write(b) as fo:
                while chunk := fi.read(8 << 20):
                    fo.write(chunk)
        return
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)


# --------------------------------------------------------------------------- bytes, JSON, Parquet

STREAM_BUFFER = 8 << 20  # a read of an object is a GET: few and large


def open_read(path: str, random_access: bool = False):
    """A binary file object for reading. On object storage: a sequential read streams one GET
    (bounded retries reopen it at the byte reached); ``random_access`` (Parquet) reads exactly
    the ranges asked for."""
    if (be := _be(path)) is not None:
        raw = be.open(path)
        if random_access:
            return raw
        return io.BufferedReader(raw, STREAM_BUFFER)
    return open(path, "rb")


class _SpoolWriter(io.RawIOBase):
    """A file on object storage being written: the bytes go to a local spool (memory, then a
    temp file) and are uploaded, whole, on close (with retries); a failure names the object.
    Nothing is visible on the store before the upload ends."""

    def __init__(self, url: str):
        import tempfile

        if objstore.scheme_of(url) not in objstore.WRITABLE:
            raise PermissionError(errno.EACCES, f"{objstore.scheme_of(url)}:// is read-only (inputs and listings only)",
                                  objstore.public_url(url))
        self.url = url
        self.spool = tempfile.SpooledTemporaryFile(max_size=64 << 20, prefix="siftmix-upload-")
        self.etag = ""

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.spool.tell()

    def write(self, b) -> int:
        return self.spool.write(b)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.etag = _be(self.url).put(self.url, self.spool)
        finally:
            self.spool.close()
            super().close()

    def discard(self) -> None:
        """Drop the spool without uploading (the block that wrote it failed)."""
        self.spool.close()
        super().close()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()
        else:
            self.close()


class StreamDamage(Exception):
    """A compressed input is damaged: ``kind`` is ``truncated`` (it ends inside a gzip member
    or zstd frame, or holds no data at all) or ``corrupt`` (the decompressor rejects it);
    ``offset`` is the byte of the compressed file where the damage starts. Everything before
    it has been delivered."""

    def __init__(self, kind: str, offset: int | None, message: str):
        super().__init__(message)
        self.kind, self.offset = kind, offset


def compression_of(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(".gz"):
        return "gzip"
    if lower.endswith((".zst", ".zstd")):
        return "zstd"
    return None


class _Decompressing(io.RawIOBase):
    """gzip (all members) or zstd (all frames) decompressed from a binary stream, checked: a
    stream that ends inside a member/frame, an empty file, or bytes the decompressor rejects
    raise :class:`StreamDamage` once every byte decodable before the damage has been read
    (Python's gzip loses the output of the buffer that failed; zstandard's stream reader
    stops at a truncated frame with no error at all)."""

    CHUNK = 1 << 16

    def __init__(self, raw, kind: str, start: int = 0):
        self.raw, self.kind = raw, kind
        self.pos = start           # bytes of the compressed stream consumed
        self.member_start = start  # where the current gzip member / zstd frame starts
        self.fed = False           # the current member/frame has been given bytes
        self.any = False           # any byte at all
        self.d = self._new()
        self.out: list[bytes] = []
        self.head = 0              # read position in out[0]
        self.error: StreamDamage | None = None
        self.done = False

    def _new(self):
        if self.kind == "gzip":
            return zlib.decompressobj(31)
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()

    def readinto(self, b) -> int:
        while not self.out:
            if self.error is not None:
                err, self.error = self.error, None
                self.done = True
                raise err
            if self.done:
                return 0
            self._fill()
        first = self.out[0]
        n = min(len(b), len(first) - self.head)
        b[:n] = first[self.head:self.head + n]
        self.head += n
        if self.head == len(first):
            self.out.pop(0)
            self.head = 0
        return n

    def _damage(self, kind: str, offset: int, message: str) -> None:
        self.error = StreamDamage(kind, offset, message)

    def _fill(self) -> None:
        chunk = self.raw.read(self.CHUNK)
        if not chunk:
            self.done = True
            unit = "gzip member" if self.kind == "gzip" else "zstd frame"
            if not self.any:
                self._damage("truncated", self.pos, f"empty {self.kind} file (0 bytes, no {unit})")
            elif self.fed:
                self._damage("truncated", self.pos, f"the file ends at byte {self.pos:,}, inside a {unit} "
                             f"that starts at byte {self.member_start:,}")
            return
        self.any = True
        offset, self.pos = self.pos, self.pos + len(chunk)
        data = chunk
        while data:
            if not self.fed and self.kind == "gzip" and not data.strip(b"\0"):
                return  # zero padding after the last member (as gzip allows)
            try:
                piece = self.d.decompress(data)
            except Exception as err:  # zlib.error, zstandard.ZstdError
                self._recover(data, offset, err)
                return
            self.fed = True
            if piece:
                self.out.append(piece)
            if self.d.eof:
                rest = self.d.unused_data
                offset += len(data) - len(rest)
                self.member_start, self.fed, self.d, data = offset, False, self._new(), rest
            else:
                data = b""

    def _recover(self, data: bytes, offset: int, err: Exception) -> None:
        """The decompressor failed somewhere in ``data`` (which starts at ``offset``): decode the
        member again up to ``offset``, then ``data`` byte by byte, so that every byte before the
        damage is delivered and the damage is named to the byte."""
        d, out, at, fed = self._new(), [], offset, self.fed
        try:
            if offset > self.member_start:  # replay the member (its output was delivered already)
                self.raw.seek(self.member_start)
                left = offset - self.member_start
                while left > 0 and (block := self.raw.read(min(left, 1 << 20))):
                    left -= len(block)
                    d.decompress(block)
            for i in range(len(data)):
                at = offset + i
                byte = data[i:i + 1]
                if not fed and self.kind == "gzip" and byte == b"\0":
                    continue
                fed = True
                if piece := d.decompress(byte):
                    out.append(piece)
                if d.eof:  # a member ended cleanly here: the damage is in a later one
                    d, fed = self._new(), False
        except Exception as found:  # noqa: BLE001 - the same damage, now found to the byte
            err = found
        self.out += out
        self.done = True
        why = str(err) or type(err).__name__
        if "data check" in why or "checksum" in why:  # the trailer: the damage is somewhere in the member
            unit = "gzip member" if self.kind == "gzip" else "zstd frame"
            self._damage("corrupt", self.member_start, f"the checksum of the {unit} that starts at byte "
                         f"{self.member_start:,} fails: its text may be damaged ({why})")
        else:
            self._damage("corrupt", at, f"{self.kind} data is corrupt at byte {at:,} ({why})")


def open_decompressed(path: str, start: int = 0):
    """A possibly compressed file (gzip ``.gz``, zstd ``.zst``/``.zstd``, plain) for binary
    reading; a damaged compressed file raises :class:`StreamDamage` after its good bytes.
    ``start``: begin at this byte of the (compressed) file (a member/frame boundary)."""
    kind = compression_of(path)
    raw = open_read(path)
    if start:
        raw.seek(start)
    if kind is None:
        return raw
    return io.BufferedReader(_Decompressing(raw, kind, start), 1 << 20)


def compressed_damage(path: str, start: int = 0) -> StreamDamage | None:
    """Decompress a gzip/zstd file from byte ``start`` (a member boundary) to its end and
    return its damage, if any: the check of files another library (fastwarc) decompresses,
    which stops at a truncated member in silence."""
    if compression_of(path) is None:
        return None
    try:
        with open_decompressed(path, start) as fh:
            while fh.read(1 << 20):
                pass
    except StreamDamage as err:
        return err
    return None


def open_write(path: str):
    """A binary file object for writing (parent folders are created); on object storage the
    object appears, whole, when it is closed."""
    if is_url(path):
        return _SpoolWriter(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, "wb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as fh:
        return fh.read()


def write_bytes(path: str, data: bytes) -> None:
    with open_write(path) as fh:
        fh.write(data)


def read_json(path: str):
    if is_url(path):
        return json.loads(read_bytes(path).decode("utf-8"))
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_json(path: str, obj, indent: int | None = 2, durable: bool = False) -> None:
    """Write ``obj`` as JSON; ``durable``: flushed and fsynced, a failure names the file."""
    if is_url(path):  # one PUT: there is no half-written object to fsync
        write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"))
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as err:  # a full disk fails in write/flush, with no file name: name it
        raise named(err, path) from None


def write_text(path: str, text: str) -> None:
    if is_url(path):
        write_bytes(path, text.encode("utf-8"))
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def parquet_file(path: str) -> pq.ParquetFile:
    """A Parquet file for reading its metadata and row groups (range reads on object storage)."""
    return pq.ParquetFile(open_read(path, random_access=True) if is_url(path) else path)


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    if is_url(path):
        with open_read(path, random_access=True) as fh:
            return pq.read_table(fh, columns=columns)
    return pq.read_table(path, columns=columns)


def read_tables(paths: list[str], columns: list[str] | None = None) -> pa.Table | None:
    """The files concatenated in the given order; None when there are none."""
    tables = [read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables) if tables else None


def write_table(table: pa.Table, path: str, **options) -> None:
    if is_url(path):
        with open_write(path) as fh:
            pq.write_table(table, fh, **options)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(table, path, **options)


class _RemoteParquetWriter(pq.ParquetWriter):
    """A ParquetWriter whose file is uploaded when it is closed."""

    def __init__(self, path: str, schema: pa.Schema, **options):
        self._sink = _SpoolWriter(path)
        super().__init__(self._sink, schema, **options)

    def close(self) -> None:
        super().close()
        self._sink.close()


def parquet_writer(path: str, schema: pa.Schema, **options) -> pq.ParquetWriter:
    if is_url(path):
        return _RemoteParquetWriter(path, schema, **options)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return pq.ParquetWriter(path, schema, **options)


def write_array(path: str, array, npy: bool = False) -> None:
    """A numpy array as raw bytes (``.bin``), or as a ``.npy`` file."""
    import numpy as np

    if is_url(path):
        with open_write(path) as fh:
            np.save(fh, array) if npy else fh.write(np.ascontiguousarray(array).tobytes())
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if npy:
        np.save(path, array)
    else:
        array.tofile(path)


# --------------------------------------------------------------------------- local copies (models)

def local_copy(path: str) -> str:
    """A local path holding ``path`` (a file or a folder): itself on local disk; for a URL, a
    copy in this machine's cache, keyed by the URL and the objects' sizes and versions, made
    once (a temp folder renamed into place, so concurrent workers never see half of it). For
    libraries that open files by name (fasttext, sentence-transformers, tokenizers)."""
    if not is_url(path):
        return path
    import tempfile

    folder = isdir(path)
    files = list(walk_files(path)) if folder else [path]
    if not files:
        raise FileNotFoundError(errno.ENOENT, "no such object or folder", objstore.public_url(path))
    key = hashlib.sha256(f"{path}\0{fingerprint(files)}".encode()).hexdigest()[:20]
    cache = os.path.join(os.environ.get("SIFTMIX_CACHE", os.path.join(tempfile.gettempdir(), "siftmix-cache")), key)
    target = os.path.join(cache, "folder" if folder else basename(path))
    if os.path.exists(target):
        return target
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(dir=cache, prefix=".partial-")
    try:
        dst = os.path.join(work, "x")
        copy(path, dst)
        try:
            os.rename(dst, target)
        except OSError:
            if not os.path.exists(target):  # another worker won the race: use its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@contextmanager
def local_folder(path: str):
    """A local folder to write into for the block: ``path`` itself on local disk; for a URL, a
    temp folder uploaded to ``path`` when the block ends without an error."""
    if not is_url(path):
        os.makedirs(path, exist_ok=True)
        yield path
        return
    import tempfile

    work = tempfile.mkdtemp(prefix="siftmix-upload-")
    try:
        yield work
        copy(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- fingerprints

def fingerprint(files: list[str]) -> str:
    """Fingerprint of input files: path, size and version. The version is what changes with
    the content where the store gives it: the ETag on S3 and HTTPS, the update time on GCS
    (pyarrow gives no generation), the modification time on local disk (like make)."""
    files = sorted(files)
    return fingerprint_infos(files, stat_many(files))


def fingerprint_infos(files: list[str], infos: list[objstore.Info | None], missing_ok: bool = False) -> str:
    """:func:`fingerprint` from stats already made (None: the file is missing, an error unless
    ``missing_ok``, where it counts as missing)."""
    h = hashlib.sha256()
    for f, info in sorted(zip(files, infos), key=lambda x: x[0]):
        if info is None and not missing_ok:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", objstore.public_url(f))
        h.update((f"{f}\0missing\n" if info is None else f"{f}\0{info.size}\0{info.version}\n").encode())
    return h.hexdigest()


def tree_listing(folder: str, skip: Callable[[str], bool] = lambda _: False,
                 versions: bool = False) -> list[tuple]:
    """(relative path, size) of every file under ``folder``, in a stable order; with
    ``versions``: (relative path, size, ETag) where the store gives an ETag (S3), else ''."""
    if is_url(folder):
        rows = [(relpath(i.url, folder), i.size, i.version if objstore.scheme_of(folder) == "s3" else "")
                for i in _remote_tree(folder) if not i.is_dir]
        return [r if versions else r[:2] for r in rows if not skip(r[0])]
    out = []
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            rel = os.path.relpath(p, folder)
            if not skip(rel):
                out.append((rel, os.path.getsize(p), "") if versions else (rel, os.path.getsize(p)))
    return out


# --------------------------------------------------------------------------- errors

def named(err: OSError, path: str) -> OSError:
    """The same kind of OSError (PermissionError, ...), naming ``path``: one line for the user."""
    return type(err)(err.errno, err.strerror or str(err), path) if err.errno else OSError(f"{err}: {path}")


def check_writable(folder: str) -> None:
    """Fail at once, before any work starts, if ``folder`` (the run dir) cannot be created or
    written: one OSError naming it (permission denied, not a directory, read-only or full disk;
    on object storage: a missing bucket, bad credentials, a read-only scheme)."""
    if is_url(folder):
        probe = join(folder, f".siftmix-write-test-{os.getpid()}")
        try:
            write_bytes(probe, b"siftmix")
            _be(folder).delete([probe])
        except OSError as err:  # name the run dir, not the probe
            if err.errno:
                raise type(err)(err.errno, err.strerror, objstore.public_url(folder)) from None
            raise OSError(str(err).replace(probe, folder)) from None
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, "the run dir is a file, not a folder", folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise named(err, err.filename or folder) from None
    probe = os.path.join(folder, f".siftmix-write-test-{os.getpid()}")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"siftmix")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise named(err, folder) from None
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass


# --------------------------------------------------------------------------- the run-dir lock

LOCK = ".siftmix.lock"
LEASE_S = float(os.environ.get("SIFTMIX_LEASE_S", "60"))  # a lease on object storage lasts this long unrenewed


class RunDirLocked(OSError):
    """Another live siftmix process holds the run dir's lock."""


class LockLost(OSError):
    """This process's lease on the run dir expired and another process took it."""


_held: dict[str, list] = {}  # lock path -> [handle, depth]: the locks this process holds (re-entrant)


def _holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"{info.get('command') or 'siftmix'} (pid {info.get('pid')} on {info.get('host')}, since {since})"


def _lock_path(folder: str) -> str:
    return join(folder if is_url(folder) else os.path.abspath(folder), LOCK)


@contextmanager
def run_lock(folder: str, command: str = "", log: Callable[[str], None] | None = None):
    """Hold the run dir's lock for the block: one siftmix process at a time writes a run dir.
    Re-entrant within a process. On local disk the lock is a ``flock`` on ``.siftmix.lock``,
    which the kernel drops when its holder dies (kill -9 included); on object storage it is a
    lease object (:class:`_Lease`). Either way the lock names its holder, for the one-line
    error another process gets, and a dead holder's lock is taken over."""
    path = _lock_path(folder)
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    import socket

    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
    handle = _Lease(path, info, log) if is_url(path) else _Flock(path, info, log)
    handle.acquire()
    _held[path] = [handle, 1]
    try:
        yield
    finally:
        del _held[path]
        handle.release()


class _Flock:
    def __init__(self, path: str, info: dict, log):
        self.path, self.info, self.log, self.fd = path, info, log, None

    def acquire(self) -> None:
        import fcntl

        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise named(err, self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            info = _read_lock(fd)
            os.close(fd)
            raise RunDirLocked(errno.EBUSY, f"the run dir is in use by {_holder_text(info)}: wait for it to end "
                               "or stop it", folder) from None
        previous = _read_lock(fd)
        if previous and self.log:  # its holder died without releasing it
            self.log(f"took over the lock of {_holder_text(previous)}, which is no longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.info).encode(), 0)
        self.fd = fd

    def check(self) -> None:
        return None

    def release(self) -> None:
        try:
            os.ftruncate(self.fd, 0)  # an empty lock file: released in order
        finally:
            os.close(self.fd)


def _read_lock(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


class _Lease:
    """The run-dir lock on object storage: ``RUN_DIR/.siftmix.lock`` holds the holder (host,
    pid, start time, command), a random token and an expiry. It is created with a conditional
    put (``If-None-Match: *``), renewed by a thread every third of :data:`LEASE_S` with
    ``If-Match`` on its ETag, and taken over (``If-Match`` on the old ETag) when it has expired,
    or at once when its holder is a dead pid on this host. Conditional puts make two takers
    race safely on S3; on GCS (pyarrow, no conditions) the lease is written and read back.
    :meth:`check` (before every commit) fails if the lease was lost."""

    def __init__(self, path: str, info: dict, log):
        import secrets
        import threading

        self.path, self.log = path, log
        self.info = {**info, "token": secrets.token_hex(8)}
        self.etag = ""
        self.lost: str | None = None
        self.stop = threading.Event()
        self.thread = None

    def _read(self) -> tuple[dict, str] | None:
        info = stat(self.path)
        if info is None:
            return None
        try:
            return json.loads(read_bytes(self.path) or b"{}"), info.version
        except FileNotFoundError:
            return None
        except ValueError:
            return {}, info.version

    def _put(self, **cond) -> str:
        body = {**self.info, "expires": time.time() + LEASE_S}
        return _be(self.path).put(self.path, io.BytesIO(json.dumps(body).encode()), **cond)

    def acquire(self) -> None:
        import socket

        for _ in range(5):
            cur = self._read()
            try:
                if cur is None:
                    self.etag = self._put(if_none_match=True)
                else:
                    holder, etag = cur
                    dead_here = holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid"))
                    if holder.get("expires", 0) > time.time() and not dead_here and holder.get("token"):
                        raise RunDirLocked(errno.EBUSY, f"the run dir is in use by {_holder_text(holder)}: wait for "
                                           "it to end or stop it", dirname(self.path))
                    self.etag = self._put(if_match=etag)
                    if self.log and holder.get("token"):
                        why = "which is no longer running" if dead_here else "whose lease expired"
                        self.log(f"took over the lock of {_holder_text(holder)}, {why}")
            except objstore.PreconditionFailed:
                continue  # someone else moved first: look again
            if not self.etag:  # no ETag from this store: read back to see who won
                got = self._read()
                if not got or got[0].get("token") != self.info["token"]:
                    continue
                self.etag = got[1]
            break
        else:
            raise RunDirLocked(errno.EBUSY, "the run dir's lock keeps changing hands: another siftmix is "
                               "starting on it", dirname(self.path))
        import threading

        self.thread = threading.Thread(target=self._renew, daemon=True, name="siftmix-lease")
        self.thread.start()

    def _renew(self) -> None:
        while not self.stop.wait(LEASE_S / 3):
            if not self._renew_once():
                return

    def _renew_once(self) -> bool:
        """Extend the lease (If-Match on its ETag); False once another process has taken it."""
        try:
            self.etag = self._put(if_match=self.etag) or self.etag
        except objstore.PreconditionFailed:
            self.lost = "another process took the run dir's lock (this one's lease had expired)"
            return False
        except OSError:  # the store is unreachable (after retries): try again at the next tick
            pass
        return True

    def check(self) -> None:
        if self.lost:
            raise LockLost(errno.EBUSY, self.lost, dirname(self.path))

    def release(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        if self.lost:
            return
        try:
            cur = self._read()
            if cur and cur[0].get("token") == self.info["token"]:
                _be(self.path).delete([self.path])
        except OSError:
            pass  # the lease expires on its own


def holds_lock(folder: str) -> bool:
    return _lock_path(folder) in _held


def check_lock(folder: str) -> None:
    """Raise :class:`LockLost` if this process held the run dir's lease and lost it."""
    entry = _held.get(_lock_path(folder))
    if entry:
        entry[0].check()


# --------------------------------------------------------------------------- the stage commit

def committed_attempt(stage_dir: str) -> str | None:
    """The attempt folder name the stage's committed manifest names, if any."""
    try:
        m = read_json(join(stage_dir, MANIFEST))
    except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
        return None
    return m.get("attempt") if isinstance(m, dict) else None


def clean_uncommitted(stage_dir: str) -> list[str]:
    """Remove every entry of a stage folder but its manifest and the attempt that manifest
    names: the attempts that were never committed (a crash, a kill -9) and the superseded
    ones. Only under the run dir's lock (:func:`run_lock`), so no live process owns them."""
    keep = {MANIFEST, committed_attempt(stage_dir)}
    gone = [e for e in listdir(stage_dir) if e not in keep]
    for e in gone:
        remove(join(stage_dir, e))
    return gone


class StageOutput:
    """The attempt folder a stage writes into; :meth:`commit` makes it the finished stage."""

    def __init__(self, stage_dir: str):
        import secrets

        self.final = stage_dir if is_url(stage_dir) else os.path.abspath(stage_dir)
        self.parent, self.name = dirname(self.final), basename(self.final)
        self.attempt = f"{ATTEMPT_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-" \
                       f"{secrets.token_hex(3)}"
        self.tmp = join(self.final, self.attempt)
        self.started = time.time()

    def path(self, *parts: str) -> str:
        return join(self.tmp, *parts)

    def commit(self, manifest: dict) -> dict:
        """Complete ``manifest`` (:func:`.manifest.complete`: attempt, the list of files, output
        fingerprint, timings, versions), check the run dir's lock is still ours, write it as
        ``_manifest.json`` last (one PUT; on disk durably, then ``os.replace``), then remove
        the other attempts."""
        from .manifest import complete

        manifest = complete(manifest, self.tmp, self.started, self.attempt)
        check_lock(self.parent)
        target = join(self.final, MANIFEST)
        if is_url(target):
            write_json(target, manifest)
        else:
            tmp_manifest = target + ".tmp"
            write_json(tmp_manifest, manifest, durable=True)
            os.replace(tmp_manifest, target)
            _fsync_dir(self.final)
        clean_uncommitted(self.final)
        return manifest

    def abort(self) -> None:
        """Remove this attempt; and the stage folder too if nothing else is in it (a stage that
        never finished leaves no folder on disk)."""
        remove(self.tmp)
        if not is_url(self.final):
            try:
                os.rmdir(self.final)
            except OSError:
                pass  # not empty: an earlier commit (or another attempt) is there


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def stage_output(stage_dir: str):
    """Context manager: a fresh attempt folder for the stage; removed if the block raises."""
    out = StageOutput(stage_dir)
    if not holds_lock(out.parent):
        raise RuntimeError(f"stage_output({stage_dir}) outside run_lock({out.parent})")
    makedirs(out.final)
    clean_uncommitted(out.final)
    makedirs(out.tmp)
    try:
        yield out
    except BaseException:
        out.abort()
        raise
