"""Hashing every stage shares: the per-document uniform draw, a 64-bit mix, config hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numba
import numpy as np
import xxhash


def hash01(seed: int, salt: str, ids) -> np.ndarray:
    """Uniform [0, 1) from xxh64(seed, salt, id): the randomness of every per-document decision
    (never a global RNG, never worker order)."""
    prefix = f"{seed}\x00{salt}\x00".encode()
    h = np.fromiter((xxhash.xxh64_intdigest(prefix + i.encode()) for i in ids), dtype=np.uint64,
                    count=len(ids))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@numba.njit(cache=True)
def mix64_scalar(h):
    """A 64-bit finaliser (murmur3's fmix64), for compiled code."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@numba.njit(cache=True)
def _mix64_vec(v):
    out = np.empty_like(v)
    for i in range(len(v)):
        out[i] = mix64_scalar(v[i])
    return out


def mix64(values: np.ndarray) -> np.ndarray:
    """The same 64-bit finaliser over a uint64 array (bucket keys, shuffle partitions)."""
    return _mix64_vec(np.asarray(values, np.uint64))


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON encoding (sorted keys): the config hash of a stage."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
