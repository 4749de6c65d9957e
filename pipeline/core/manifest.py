"""Stage manifests: what a finished stage wrote, and whether a rerun may skip it.

``_manifest.json`` holds the config hash, the input fingerprint, the output fingerprint (the
next stage's input fingerprint), the counts, per-file results, timings and package versions.
A finished stage whose manifest matches the config hash and the input fingerprint is skipped.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata

from . import storage

MANIFEST = storage.MANIFEST
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
    """The manifest of a finished stage folder, else None (missing or unreadable: not finished)."""
    try:
        return storage.read_json(storage.join(stage_dir, MANIFEST))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_finished(stage_dir: str, config_hash: str, input_fingerprint: str) -> dict | None:
    """The manifest if the stage is finished with this config and input, else None."""
    m = read_manifest(stage_dir)
    if m and m.get("config_hash") == config_hash and m.get("input_fingerprint") == input_fingerprint:
        return m
    return None


def output_fingerprint(stage_tmp: str, config_hash: str, input_fp: str) -> str:
    """Fingerprint of a stage's output, used as the next stage's input fingerprint: the chain of
    config hashes and input fingerprints plus the names and sizes of the written files."""
    import hashlib

    h = hashlib.sha256(f"{config_hash}\0{input_fp}\n".encode())
    for rel, size in storage.tree_listing(stage_tmp, skip=lambda rel: rel == MANIFEST):
        h.update(f"{rel}\0{size}\n".encode())
    return h.hexdigest()


def complete(manifest: dict, stage_tmp: str, started: float) -> dict:
    """The manifest as written: version, output fingerprint, timings, package versions, argv."""
    now = time.time()
    return {
        "manifest_version": MANIFEST_VERSION,
        **manifest,
        "output_fingerprint": output_fingerprint(stage_tmp, manifest["config_hash"], manifest["input_fingerprint"]),
        "timings": {**manifest.get("timings", {}), "started": started, "finished": now, "wall_s": round(now - started, 3)},
        "versions": package_versions(),
        "argv": sys.argv,
    }
