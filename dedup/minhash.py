"""MinHash signatures of word shingles, vectorised over whole batches.

Shingles are n consecutive words (n = 5 by default) with the words defined as in the
decontamination stage (whitespace tokens, lowercased, punctuation removed). Two hash families:

* **default (fast)**: each shingle's 64-bit polynomial hash from the numba word scan
  (:func:`siftmix.contamination.ngrams.ngram_hashes`), folded to 32 bits — no Python per shingle;
* **datasketch-compatible**: ``hashfunc`` (datasketch's ``sha1_hash32`` by default) applied to
  the shingle's bytes (``" ".join(words).encode()``), one Python call per shingle (use it to
  check against or to interoperate with datasketch, not on the hot path).

Either way the permutations are datasketch 2.0's, drawn from ``np.random.RandomState(seed)``
exactly as ``datasketch.MinHash`` draws them, for ``scheme="affine32"`` (MurmurHash3 finalizer,
then ``a*h + b`` mod 2^32) or ``scheme="legacy"`` (``(a*h + b) mod (2^61 - 1)``, low 32 bits):
with the same shingle hashes, num_perm, seed and scheme the signatures equal datasketch's
``MinHash.hashvalues`` bit for bit. An empty document gets the all-max signature, as datasketch.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
from siftmix.pipeline.core.text import NGRAM_PRIME, Words, ngram_hashes, words

MERSENNE = np.uint64((1 << 61) - 1)
MAX32 = np.uint64((1 << 32) - 1)
SCHEMES = ("affine32", "legacy")


def permutations(num_perm: int, seed: int, scheme: str = "affine32") -> tuple[np.ndarray, np.ndarray]:
    """(a, b) as datasketch.MinHash(num_perm, seed, scheme=...) draws them."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array([(gen.randint(1, MERSENNE, dtype=np.uint64), gen.randint(0, MERSENNE, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64).T
        return ab[0], ab[1]
    if scheme != "affine32":
        raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def shingle_hashes(text: pa.Array | list[str] | None, n: int = 5, w: Words | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fast family: (uint32 shingle hashes, doc index of each), every shingle of every document
    (a document with fewer than n words has none). ``w``: the batch's words, if already scanned."""
    w = words(text, spans=False) if w is None else w
    h, first = ngram_hashes(w, n)
    h32 = ((h >> np.uint64(32)) ^ (h & MAX32)).astype(np.uint32)
    return h32, w.doc[first].astype(np.int64)


def shingle_sets(w: Words, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Each document's set of 64-bit shingle hashes, for exact Jaccard: (values, offsets) with
    the sorted unique hashes of document d in ``values[offsets[d]:offsets[d + 1]]``. The
    shingle hashes are those of :func:`ngram_hashes` (the same polynomial), computed, sorted and
    made unique per document in one compiled pass (no global sort)."""
    doc_start = w.doc_start.astype(np.int64)
    out = np.empty(max(0, len(w.hash) - (n - 1)), np.uint64)
    off = np.zeros(w.n_docs + 1, np.int64)
    _shingle_sets(w.hash, doc_start, n, out, off)
    return out[:off[-1]], off


@numba.njit(cache=True)
def _radix_sort(a, tmp, cnt):
    """Sort ``a`` (uint64) in place: LSD radix sort, 8 bits a pass, a pass skipped where every
    value has the same digit (3x numba's np.sort on documents' shingles)."""
    n = len(a)
    src, dst = a, tmp
    for shift in range(0, 64, 8):
        sh = np.uint64(shift)
        cnt[:] = 0
        for i in range(n):
            cnt[(src[i] >> sh) & np.uint64(255)] += 1
        if cnt[(src[0] >> sh) & np.uint64(255)] == n:
            continue
        total = 0
        for d in range(256):
            c = cnt[d]
            cnt[d] = total
            total += c
        for i in range(n):
            d = (src[i] >> sh) & np.uint64(255)
            dst[cnt[d]] = src[i]
            cnt[d] += 1
        src, dst = dst, src
    if src is not a:
        a[:] = src


@numba.njit(cache=True)
def _shingle_sets(word_hash, doc_start, n, out, off):
    longest = 0
    for d in range(len(doc_start) - 1):
        longest = max(longest, doc_start[d + 1] - doc_start[d] - (n - 1))
    seg = np.empty(max(longest, 0), np.uint64)
    tmp = np.empty(max(longest, 0), np.uint64)
    cnt = np.zeros(256, np.int64)
    k = 0
    for d in range(len(doc_start) - 1):
        first = doc_start[d]
        m = doc_start[d + 1] - first - (n - 1)
        if m > 0:
            s = seg[:m]
            for j in range(m):  # the n-gram polynomial of ngram_hashes
                h = np.uint64(0)
                for i in range(n):
                    h = h * NGRAM_PRIME + word_hash[first + j + i]
                s[j] = h
            if m > 64:
                _radix_sort(s, tmp[:m], cnt)
            else:
                s.sort()
            for i in range(m):
                if i == 0 or s[i] != s[i - 1]:
                    out[k] = s[i]
                    k += 1
        off[d + 1] = k


@numba.njit(cache=True)
def _doc_hashes(word_hash, doc_start, out):
    for d in range(len(out)):
        h = np.uint64(0x84222325CBF29CE4)
        for i in range(doc_start[d], doc_start[d + 1]):
            h = (h ^ word_hash[i]) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        out[d] = h


def doc_hashes(w: Words) -> np.ndarray:
    """uint64 hash of each document's normalised text (its words in order: lowercase, no
    punctuation, any whitespace): equal for documents that differ only in case, punctuation or
    spacing. Exact dedup collapses equal hashes."""
    out = np.empty(w.n_docs, np.uint64)
    _doc_hashes(w.hash, w.doc_start, out)
    return out


def shingle_strings(text: str, n: int = 5) -> list[str]:
    """The shingles of one text as strings (the datasketch-compatible family hashes these)."""
    from siftmix.pipeline.core.text import normalized_words

    ws = normalized_words(text)
    return [" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def compat_shingle_hashes(texts: list[str], n: int = 5, hashfunc=None) -> tuple[np.ndarray, np.ndarray]:
    """datasketch-compatible family: hashfunc(shingle bytes) per shingle (Python per shingle)."""
    if hashfunc is None:
        from datasketch.hashfunc import sha1_hash32 as hashfunc
    hs, docs = [], []
    for d, t in enumerate(texts):
        for s in shingle_strings(t, n):
            hs.append(hashfunc(s.encode("utf-8")))
            docs.append(d)
    return np.array(hs, dtype=np.uint64), np.array(docs, dtype=np.int64)


@numba.njit(cache=True)
def _sig_affine32(hashes, docs, a, b, out):
    for i in range(len(hashes)):
        h = np.uint64(hashes[i]) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(16)
        h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(13)
        h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(16)
        d = docs[i]
        for k in range(len(a)):
            v = np.uint32((np.uint64(a[k]) * h + np.uint64(b[k])) & np.uint64(0xFFFFFFFF))
            if v < out[d, k]:
                out[d, k] = v


@numba.njit(cache=True)
def _sig_legacy(hashes, docs, a, b, out):
    for i in range(len(hashes)):
        h = np.uint64(hashes[i])
        d = docs[i]
        for k in range(len(a)):
            v = ((a[k] * h + b[k]) % np.uint64(0x1FFFFFFFFFFFFFFF)) & np.uint64(0xFFFFFFFF)
            if v < out[d, k]:
                out[d, k] = v


@numba.njit(cache=True)
def _sig_words_affine32(word_hash, doc_start, n, a, b, out):
    """Fused fast path: each document's n-gram hashes (the polynomial of
    :func:`siftmix.contamination.ngrams.ngram_hashes`), folded to 32 bits and permuted, without
    materialising the shingles."""
    prime = np.uint64(0x9E3779B97F4A7C15)
    m32 = np.uint64(0xFFFFFFFF)
    P = len(a)
    for d in range(len(doc_start) - 1):
        row = out[d]
        for i in range(doc_start[d], doc_start[d + 1] - n + 1):
            g = np.uint64(0)
            for k in range(n):
                g = g * prime + word_hash[i + k]
            h = ((g >> np.uint64(32)) ^ (g & m32)) & m32
            h ^= h >> np.uint64(16)
            h = (h * np.uint64(0x85EBCA6B)) & m32
            h ^= h >> np.uint64(13)
            h = (h * np.uint64(0xC2B2AE35)) & m32
            h ^= h >> np.uint64(16)
            for k in range(P):
                v = np.uint32((np.uint64(a[k]) * h + np.uint64(b[k])) & m32)
                if v < row[k]:
                    row[k] = v


def signatures_from_words(w: Words, n: int = 5, num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Fast family, affine32: (signatures, shingles per document) straight from a batch's words,
    equal to ``signatures(*shingle_hashes(None, n, w), ...)``."""
    a, b = permutations(num_perm, seed, "affine32")
    sig = np.full((w.n_docs, num_perm), 0xFFFFFFFF, dtype=np.uint32)
    _sig_words_affine32(w.hash, w.doc_start.astype(np.int64), n, a, b, sig)
    return sig, np.maximum(np.diff(w.doc_start) - n + 1, 0)


def signatures(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int = 128, seed: int = 1,
               scheme: str = "affine32", chunk: int = 1 << 16) -> np.ndarray:
    """(n_docs, num_perm) signatures from shingle hashes and their document indices: one
    compiled pass (numba), the min per document and permutation kept in place."""
    a, b = permutations(num_perm, seed, scheme)
    dtype = np.uint64 if scheme == "legacy" else np.uint32
    sig = np.full((n_docs, num_perm), 0xFFFFFFFF, dtype=dtype)
    if len(hashes):
        if scheme == "legacy":
            _sig_legacy(hashes.astype(np.uint64), docs.astype(np.int64), a, b, sig)
        else:
            _sig_affine32(hashes.astype(np.uint32), docs.astype(np.int64), a, b, sig)
    return sig


def signatures_numpy(hashes: np.ndarray, docs: np.ndarray, n_docs: int, num_perm: int = 128, seed: int = 1,
                     scheme: str = "affine32", chunk: int = 1 << 16) -> np.ndarray:
    """The same with numpy blocks of (shingles x permutations), min-reduced per document (the
    reference the compiled kernel is tested against)."""
    a, b = permutations(num_perm, seed, scheme)
    dtype = np.uint64 if scheme == "legacy" else np.uint32
    empty = MAX32.astype(dtype) if scheme == "legacy" else np.uint32(0xFFFFFFFF)
    sig = np.full((n_docs, num_perm), empty, dtype=dtype)
    if len(hashes) == 0:
        return sig
    order = np.argsort(docs, kind="stable")
    hashes, docs = hashes[order], docs[order]
    for start in range(0, len(hashes), chunk):
        h, d = hashes[start:start + chunk], docs[start:start + chunk]
        if scheme == "legacy":
            phv = (h.astype(np.uint64)[:, None] * a + b) % MERSENNE & MAX32
        else:
            phv = fmix32(h.astype(np.uint32))[:, None] * a + b
        bounds = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        mins = np.minimum.reduceat(phv, bounds, axis=0)
        rows = d[bounds]
        sig[rows] = np.minimum(sig[rows], mins)
    return sig


def batch_signatures(text: pa.Array | list[str], n: int = 5, num_perm: int = 128, seed: int = 1,
                     scheme: str = "affine32", compatible: bool = False, hashfunc=None) -> np.ndarray:
    """Signatures of a batch of documents (rows in input order)."""
    if compatible:
        texts = text.to_pylist() if isinstance(text, pa.Array | pa.ChunkedArray) else list(text)
        h, d = compat_shingle_hashes(texts, n, hashfunc)
        return signatures(h, d, len(texts), num_perm, seed, scheme)
    if scheme == "affine32":
        return signatures_from_words(words(text, spans=False), n, num_perm, seed)[0]
    h, d = shingle_hashes(text, n)
    return signatures(h, d, len(text), num_perm, seed, scheme)
