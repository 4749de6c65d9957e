"""Stage manifests: what a finished stage wrote, and whether a rerun may skip it.

``_manifest.json`` holds the config hash, the input fingerprint, the output fingerprint (the
next stage's input fingerprint), the counts, per-file results, timings and package versions,
and the commit: ``attempt`` (the folder under the stage folder that holds its files) and
``outputs`` (every file of that attempt with its size, and its ETag where the store gives one).
A finished stage whose manifest matches the config hash and the input fingerprint is skipped.
Read a stage's files through :func:`stage_path`: only the committed attempt counts.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata

from . import storage

MANIFEST = storage.MANIFEST
MANIFEST_VERSION = 2  # 2: files under the committed attempt folder

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
    """The manifest of a finished stage folder, else None (missing, unreadable, or from an older
    siftmix whose layout this one does not read: not finished)."""
    try:
        m = storage.read_json(storage.join(stage_dir, MANIFEST))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(m, dict) or m.get("manifest_version") != MANIFEST_VERSION or not m.get("attempt"):
        return None
    return m


def stage_path(stage_dir: str, manifest: dict, *parts: str) -> str:
    """A file of a finished stage: under the attempt its manifest names."""
    return storage.join(stage_dir, manifest["attempt"], *parts)


def committed_files(stage_dir: str) -> dict[str, str]:
    """{path relative to the attempt: full path} of every file a finished stage's manifest
    lists; {} if the stage has not finished."""
    m = read_manifest(stage_dir)
    if m is None:
        return {}
    return {o["path"]: stage_path(stage_dir, m, o["path"]) for o in m.get("outputs", [])}


def is_finished(stage_dir: str, config_hash: str, input_fingerprint: str) -> dict | None:
    """The manifest if the stage is finished with this config and input, else None."""
    m = read_manifest(stage_dir)
    if m and m.get("config_hash") == config_hash and m.get("input_fingerprint") == input_fingerprint:
        return m
    return None


def output_fingerprint(outputs: list[dict], config_hash: str, input_fp: str) -> str:
    """Fingerprint of a stage's output, used as the next stage's input fingerprint: the chain of
    config hashes and input fingerprints plus the names and sizes of the written files."""
    import hashlib

    h = hashlib.sha256(f"{config_hash}\0{input_fp}\n".encode())
    for o in sorted(outputs, key=lambda o: o["path"]):
        h.update(f"{o['path']}\0{o['size']}\n".encode())
    return h.hexdigest()


def list_outputs(attempt_dir: str) -> list[dict]:
    """Every file of an attempt folder: path (relative, with ``/``), size, and ETag where known."""
    out = []
    for rel, size, etag in storage.tree_listing(attempt_dir, versions=True):
        rel = rel.replace("\\", "/")
        out.append({"path": rel, "size": size, **({"etag": etag} if etag else {})})
    return sorted(out, key=lambda o: o["path"])


def complete(manifest: dict, attempt_dir: str, started: float, attempt: str) -> dict:
    """The manifest as written: version, attempt and its files, output fingerprint, timings,
    package versions, argv."""
    now = time.time()
    outputs = list_outputs(attempt_dir)
    return {
        "manifest_version": MANIFEST_VERSION,
        **manifest,
        "attempt": attempt,
        "outputs": outputs,
        "output_fingerprint": output_fingerprint(outputs, manifest["config_hash"], manifest["input_fingerprint"]),
        "timings": {**manifest.get("timings", {}), "started": started, "finished": now, "wall_s": round(now - started, 3)},
        "versions": package_versions(),
        "argv": sys.argv,
    }
