"""LSH banding: bands x rows from a Jaccard threshold, and band keys of signatures.

The parameter choice minimises the weighted sum of the false-positive and false-negative
probability integrals, as datasketch's ``MinHashLSH`` does (equal weights by default), so that
``optimal_params(0.8, 128)`` is the (bands, rows) datasketch would pick.
"""

from __future__ import annotations

import functools

import numpy as np
import xxhash


def _fp(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _fn(threshold: float, b: int, r: int) -> float:
    from scipy.integrate import quad

    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@functools.lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising fp_weight * P(false positive) + fn_weight * P(false negative)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), not {threshold}")
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            err = _fp(threshold, b, r) * fp_weight + _fn(threshold, b, r) * fn_weight
            if err < best:
                best, opt = err, (b, r)
    return opt


def collision_probability(jaccard: np.ndarray | float, bands: int, rows: int):
    """P(two documents with this Jaccard share at least one band) = 1 - (1 - J^r)^b."""
    return 1 - (1 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64 keys: xxh64 of each band's ``rows`` signature values (bytes), so a
    shared key means an identical band (up to a 2^-64 collision)."""
    n, p = sig.shape
    if bands * rows > p:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} permutations, the signatures have {p}")
    sig = np.ascontiguousarray(sig)
    out = np.empty((n, bands), np.uint64)
    width = rows * sig.itemsize
    raw = sig.view(np.uint8).reshape(n, p * sig.itemsize)
    for j in range(bands):  # one vectorised hash call per band would need a C kernel; bands are few
        chunk = np.ascontiguousarray(raw[:, j * width:(j + 1) * width])
        out[:, j] = np.fromiter((xxhash.xxh64_intdigest(row.tobytes()) for row in chunk), np.uint64, count=n)
    return out
