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
import glob as _glob
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"


# --------------------------------------------------------------------------- paths and listing

def join(*parts) -> str:
    return os.path.join(*map(str, parts))


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


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob (``**`` recursive)."""
    return sorted(_glob.glob(pattern, recursive=True))


def has_magic(path: str) -> bool:
    return _glob.has_magic(path)


def walk_files(folder: str) -> Iterator[str]:
    """Every file under ``folder``, recursively, skipping dotfiles and dot-folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (os.path.join(root, f) for f in files if not f.startswith("."))


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


def open_decompressed(path: str):
    """A possibly compressed file (gzip ``.gz``, zstd ``.zst``/``.zstd``, plain) for binary reading."""
    import gzip
    import io

    lower = path.lower()
    if lower.endswith(".gz"):
        raw = open_read(path)
        gz = gzip.GzipFile(fileobj=raw, mode="rb")
        gz.myfileobj = raw  # closed with it, as gzip.open does for a path
        return gz
    if lower.endswith((".zst", ".zstd")):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open_read(path), closefd=True), 1 << 20)
    return open_read(path)


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


# --------------------------------------------------------------------------- the stage commit

def _clean_stale(parent: str, name: str) -> None:
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
    _clean_stale(out.parent, out.name)
    os.makedirs(out.tmp)
    try:
        yield out
    except BaseException:
        out.abort()
        raise
