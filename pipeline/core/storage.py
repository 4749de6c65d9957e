"""The one storage layer: every file a stage reads or writes goes through this module.

Inputs, shards, manifests, work folders and models: open/read/write, listing and globs,
exists/size/fingerprint, remove, and the stage commit (:class:`StageOutput`). Today every path
is a path on the local disk; an object-store backend (S3, GCS, fsspec URLs) plugs in here
without touching any stage.

The stage commit: a stage writes into ``RUN_DIR/.<stage>.tmp-<pid>/`` and, when everything is
written, puts ``_manifest.json`` there last and renames the folder to ``RUN_DIR/<stage>/``. A
crash at any point leaves either the previous finished stage or no stage folder, never a
half-written one that looks finished.
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

MANIFEST = "_manifest.json"


# --------------------------------------------------------------------------- paths and listing

def join(*parts) -> str:
    return os.path.join(*map(str, parts))


def dirname(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def basename(path: str) -> str:
    return os.path.basename(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(path)


def size(path: str) -> int:
    return os.path.getsize(path)


def listdir(folder: str) -> list[str]:
    """Sorted entry names of a folder; [] when it does not exist."""
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_files(folder: str, suffix: str = "") -> list[str]:
    """Sorted full paths of the files in ``folder`` (not recursive) whose name ends with ``suffix``."""
    return [os.path.join(folder, f) for f in listdir(folder) if f.endswith(suffix)
            and os.path.isfile(os.path.join(folder, f))]


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


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob; ``**`` is recursive and safe against symlink loops (Python's
    glob follows a ``self -> .`` link until the path is too long)."""
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
    for root, _dirs, files in _walk(folder):
        yield from (os.path.join(root, f) for f in files
                    if not f.startswith(".") and os.path.isfile(os.path.join(root, f)))  # not a dangling link


def makedirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    """Remove a file or a folder tree; nothing if it is not there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def copy(src: str, dst: str) -> None:
    """Copy a file or a folder tree."""
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)


# --------------------------------------------------------------------------- bytes, JSON, Parquet

def open_read(path: str):
    """A binary file object for reading."""
    return open(path, "rb")


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
    """A binary file object for writing (parent folders are created)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return open(path, "wb")


def read_json(path: str):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_json(path: str, obj, indent: int | None = 2, durable: bool = False) -> None:
    """Write ``obj`` as JSON; ``durable``: flushed and fsynced, a failure names the file."""
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
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def parquet_file(path: str) -> pq.ParquetFile:
    return pq.ParquetFile(path)


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def read_tables(paths: list[str], columns: list[str] | None = None) -> pa.Table | None:
    """The files concatenated in the given order; None when there are none."""
    tables = [pq.read_table(p, columns=columns) for p in paths]
    return pa.concat_tables(tables) if tables else None


def write_table(table: pa.Table, path: str, **options) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(table, path, **options)


def parquet_writer(path: str, schema: pa.Schema, **options) -> pq.ParquetWriter:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return pq.ParquetWriter(path, schema, **options)


def write_array(path: str, array, npy: bool = False) -> None:
    """A numpy array as raw bytes (``.bin``), or as a ``.npy`` file."""
    import numpy as np

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if npy:
        np.save(path, array)
    else:
        array.tofile(path)


# --------------------------------------------------------------------------- fingerprints

def fingerprint(files: list[str]) -> str:
    """Fingerprint of input files: path, size and modification time (like make)."""
    h = hashlib.sha256()
    for f in sorted(files):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def tree_listing(folder: str, skip: Callable[[str], bool] = lambda _: False) -> list[tuple[str, int]]:
    """(relative path, size) of every file under ``folder``, in a stable order."""
    out = []
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            rel = os.path.relpath(p, folder)
            if not skip(rel):
                out.append((rel, os.path.getsize(p)))
    return out


# --------------------------------------------------------------------------- errors

def named(err: OSError, path: str) -> OSError:
    """The same kind of OSError (PermissionError, ...), naming ``path``: one line for the user."""
    return type(err)(err.errno, err.strerror or str(err), path) if err.errno else OSError(f"{err}: {path}")


def check_writable(folder: str) -> None:
    """Fail at once, before any work starts, if ``folder`` (the run dir) cannot be created or
    written: one OSError naming it (permission denied, not a directory, read-only or full disk)."""
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


class RunDirLocked(OSError):
    """Another live siftmix process holds the run dir's lock."""


_held: dict[str, list] = {}  # lock path -> [fd, depth]: the locks this process holds (re-entrant)


def _holder_text(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"{info.get('command') or 'siftmix'} (pid {info.get('pid')} on {info.get('host')}, since {since})"


@contextmanager
def run_lock(folder: str, command: str = "", log: Callable[[str], None] | None = None):
    """Hold ``folder/.siftmix.lock`` for the block: one siftmix process at a time writes a run
    dir. The lock is a ``flock`` on that file, which the kernel drops when its holder dies
    (kill -9 included), so a dead holder's lock is taken over at once; the file names the
    holder, for the one-line error another process gets. Re-entrant within a process."""
    import fcntl
    import socket

    folder = os.path.abspath(folder)
    path = os.path.join(folder, LOCK)
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    os.makedirs(folder, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise named(err, path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        info = _read_lock(fd)
        os.close(fd)
        raise RunDirLocked(errno.EBUSY, f"the run dir is in use by {_holder_text(info)}: wait for it to end "
                           "or stop it", folder) from None
    previous = _read_lock(fd)
    if previous and log:  # its holder died without releasing it
        log(f"took over the lock of {_holder_text(previous)}, which is no longer running")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _held[path] = [fd, 1]
    try:
        yield
    finally:
        del _held[path]
        try:
            os.ftruncate(fd, 0)  # an empty lock file: released in order
        finally:
            os.close(fd)


def _read_lock(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def holds_lock(folder: str) -> bool:
    return os.path.join(os.path.abspath(folder), LOCK) in _held


# --------------------------------------------------------------------------- the stage commit

def _clean_stale(parent: str, name: str) -> None:
    """Remove the work folders of earlier attempts at this stage: only under the run dir's
    lock (:func:`run_lock`), so no live process owns them."""
    for entry in listdir(parent):
        if entry.startswith(f".{name}.tmp-") or entry.startswith(f".{name}.old-"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StageOutput:
    """The temporary folder a stage writes into; :meth:`commit` makes it the finished stage."""

    def __init__(self, stage_dir: str):
        self.final = os.path.abspath(stage_dir)
        self.parent, self.name = os.path.split(self.final)
        self.tmp = os.path.join(self.parent, f".{self.name}.tmp-{os.getpid()}")
        self.started = time.time()

    def path(self, *parts: str) -> str:
        return os.path.join(self.tmp, *parts)

    def commit(self, manifest: dict) -> dict:
        """Complete ``manifest`` (:func:`.manifest.complete`: output fingerprint, timings,
        versions), write it as ``_manifest.json`` last (durably), then swap the folder into place."""
        from .manifest import complete

        manifest = complete(manifest, self.tmp, self.started)
        tmp_manifest = self.path(MANIFEST + ".tmp")
        write_json(tmp_manifest, manifest, durable=True)
        os.replace(tmp_manifest, self.path(MANIFEST))
        old = None
        if os.path.exists(self.final):
            old = os.path.join(self.parent, f".{self.name}.old-{os.getpid()}")
            os.rename(self.final, old)
        os.rename(self.tmp, self.final)
        _fsync_dir(self.parent)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return manifest

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def stage_output(stage_dir: str):
    """Context manager: a fresh temporary folder for the stage; removed if the block raises."""
    out = StageOutput(stage_dir)
    os.makedirs(out.parent, exist_ok=True)
    if not holds_lock(out.parent):
        raise RuntimeError(f"stage_output({stage_dir}) outside run_lock({out.parent})")
    _clean_stale(out.parent, out.name)
    os.makedirs(out.tmp)
    try:
        yield out
    except BaseException:
        out.abort()
        raise
