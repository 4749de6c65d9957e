"""Stage directories, manifests and resume.

A stage writes into ``RUN_DIR/.<stage>.tmp-<pid>/`` and, when everything is written, puts
``_manifest.json`` there last and renames the folder to ``RUN_DIR/<stage>/``. A crash at any
point leaves either the previous finished stage or no stage folder, never a half-written one
that looks finished. A finished stage whose manifest matches the config hash and the input
fingerprint is skipped on rerun.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from importlib import metadata

MANIFEST = "_manifest.json"
MANIFEST_VERSION = 1

_VERSION_PACKAGES = ("siftmix", "ray", "pyarrow", "numpy", "fastwarc", "resiliparse", "trafilatura", "pydantic")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for p in _VERSION_PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def read_manifest(stage_dir: str) -> dict | None:
    path = os.path.join(stage_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # unreadable manifest: the stage is not finished


def is_finished(stage_dir: str, config_hash: str, input_fingerprint: str) -> dict | None:
    """The manifest if the stage is finished with this config and input, else None."""
    m = read_manifest(stage_dir)
    if m and m.get("config_hash") == config_hash and m.get("input_fingerprint") == input_fingerprint:
        return m
    return None


def files_fingerprint(files: list[str]) -> str:
    """Fingerprint of input files: path, size and modification time (like make)."""
    h = hashlib.sha256()
    for f in sorted(files):
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def output_fingerprint(stage_tmp: str, config_hash: str, input_fp: str) -> str:
    """Fingerprint of a stage's output, used as the next stage's input fingerprint: the chain of
    config hashes and input fingerprints plus the names and sizes of the written files."""
    h = hashlib.sha256(f"{config_hash}\0{input_fp}\n".encode())
    for root, dirs, files in sorted(os.walk(stage_tmp)):
        dirs.sort()
        for f in sorted(files):
            if f == MANIFEST:
                continue
            p = os.path.join(root, f)
            h.update(f"{os.path.relpath(p, stage_tmp)}\0{os.path.getsize(p)}\n".encode())
    return h.hexdigest()


def _clean_stale(parent: str, name: str) -> None:
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.tmp-") or entry.startswith(f".{name}.old-"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


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
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            **manifest,
            "output_fingerprint": output_fingerprint(self.tmp, manifest["config_hash"], manifest["input_fingerprint"]),
            "timings": {
                **manifest.get("timings", {}),
                "started": self.started,
                "finished": time.time(),
                "wall_s": round(time.time() - self.started, 3),
            },
            "versions": package_versions(),
            "argv": sys.argv,
        }
        tmp_manifest = self.path(MANIFEST + ".tmp")
        try:
            with open(tmp_manifest, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=False)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:  # a full disk fails in write/flush, with no file name: name it
            raise _named(err, tmp_manifest) from None
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


def _named(err: OSError, path: str) -> OSError:
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
        raise _named(err, err.filename or folder) from None
    probe = os.path.join(folder, f".siftmix-write-test-{os.getpid()}")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"siftmix")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise _named(err, folder) from None
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass


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
