"""Words and n-grams as GPT-3 appendix C defines them, vectorised over Arrow batches.

A word is a whitespace-separated token (Python's ``str.split()`` whitespace), lowercased, with
punctuation removed (ASCII punctuation and the common Unicode punctuation blocks, see
:func:`is_punct`); tokens that are all punctuation are not words. Each word keeps the
character span it came from, so that the training side can cut text around a collision.

Words are hashed with 64-bit FNV-1a over their normalised UTF-8 bytes and n-grams with a
polynomial over the word hashes, all in one numba pass per batch (no Python loop per word or
per n-gram).
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
NGRAM_PRIME = np.uint64(0x9E3779B97F4A7C15)

_ASCII_PUNCT = np.zeros(128, dtype=np.bool_)
for _c in string.punctuation:
    _ASCII_PUNCT[ord(_c)] = True
_ASCII_CLASS = np.zeros(128, dtype=np.uint8)  # 0 word character, 1 space, 2 punctuation, 3 upper case
_ASCII_CLASS[_ASCII_PUNCT] = 2
_ASCII_CLASS[ord("A"):ord("Z") + 1] = 3
for _c in (0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20):
    _ASCII_CLASS[_c] = 1
_SPACES = (0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F,
           0x205F, 0x3000)


@numba.njit(cache=True, inline="always")
def _is_space(cp: int) -> bool:
    if cp <= 0x20:
        return cp == 0x20 or (0x9 <= cp <= 0xD) or (0x1C <= cp <= 0x1F)
    if cp < 0x85:
        return False
    return (cp == 0x85 or cp == 0xA0 or cp == 0x1680 or (0x2000 <= cp <= 0x200A) or cp == 0x2028
            or cp == 0x2029 or cp == 0x202F or cp == 0x205F or cp == 0x3000)


@numba.njit(cache=True, inline="always")
def _is_punct(cp: int, ascii_punct) -> bool:
    if cp < 128:
        return ascii_punct[cp]
    return ((0x2010 <= cp <= 0x2027) or (0x2030 <= cp <= 0x205E) or cp == 0xA1 or cp == 0xAB or cp == 0xB7
            or cp == 0xBB or cp == 0xBF or (0x3001 <= cp <= 0x3003) or (0x3008 <= cp <= 0x3011))


def is_punct(ch: str) -> bool:
    """The punctuation that words lose (the same rule as the numba kernel)."""
    return bool(_is_punct(ord(ch), _ASCII_PUNCT))


@numba.njit(cache=True, inline="always")
def _emit(doc_of, hashes, starts, ends, nw, d, h, start, end):
    doc_of[nw] = d
    hashes[nw] = h
    if len(starts):  # spans are wanted
        starts[nw] = start
        ends[nw] = end
    return nw + 1


def _lower_table() -> np.ndarray:
    """Lowercase code point of every code point from 0x80 up to the last one that changes (int32):
    Arrow's ``utf8_lower`` (utf8proc's simple case mapping, code point to code point), saved from
    pyarrow as pairs in ``lowercase.npy`` (tests compare it with Arrow on every code point)."""
    pairs = np.load(Path(__file__).with_name("lowercase.npy"))
    table = np.arange(int(pairs[0].max()) + 1, dtype=np.int32)
    table[pairs[0]] = pairs[1]
    return table


_LOWER = _lower_table()


@numba.njit(cache=True)
def _decode(data, i, b, ascii_punct, lower):
    """(class, length in bytes, lowercase code point or -1 where lowercasing keeps it) of the
    non-ASCII UTF-8 character starting with byte b at data[i]; the class is the lowercase's."""
    if b < 0xE0:
        cp = ((b & 0x1F) << 6) | (data[i + 1] & 0x3F)
        ln = 2
    elif b < 0xF0:
        cp = ((b & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
        ln = 3
    else:
        cp = ((b & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6) | (data[i + 3] & 0x3F)
        ln = 4
    low = lower[cp] if cp < len(lower) else cp
    c = np.uint8(1 if _is_space(low) else 2 if _is_punct(low, ascii_punct) else 0)
    return c, ln, (np.int64(low) if low != cp else np.int64(-1))


@numba.njit(cache=True, inline="always")
def _hash_cp(h, cp):
    """FNV-1a over the UTF-8 bytes of code point ``cp``."""
    if cp < 0x80:
        return (h ^ np.uint64(cp)) * FNV_PRIME
    if cp < 0x800:
        h = (h ^ np.uint64(0xC0 | (cp >> 6))) * FNV_PRIME
    elif cp < 0x10000:
        h = (h ^ np.uint64(0xE0 | (cp >> 12))) * FNV_PRIME
        h = (h ^ np.uint64(0x80 | ((cp >> 6) & 0x3F))) * FNV_PRIME
    else:
        h = (h ^ np.uint64(0xF0 | (cp >> 18))) * FNV_PRIME
        h = (h ^ np.uint64(0x80 | ((cp >> 12) & 0x3F))) * FNV_PRIME
        h = (h ^ np.uint64(0x80 | ((cp >> 6) & 0x3F))) * FNV_PRIME
    return (h ^ np.uint64(0x80 | (cp & 0x3F))) * FNV_PRIME


@numba.njit(cache=True, inline="always")
def _scan_body(data, offsets, ascii_punct, ascii_class, lower, spans):
    """Words of every document: (doc index, FNV-1a hash, start char, end char); without
    ``spans`` the start/end arrays are empty. Lowercasing happens here: ASCII upper case by its
    class (3), other characters by the ``lower`` table (Arrow's mapping; the lowercase's UTF-8
    bytes are hashed), so no batch needs a lowercasing pass. Two tight loops: separators, then
    one token.
    Inlined into the two entry points below with ``spans`` a constant, so that the variant
    without spans carries none of their work (measured 1.45x faster than a runtime flag)."""
    n_docs = len(offsets) - 1
    cap = (len(data) + n_docs) // 2 + 1  # a word and the space after it take at least 2 bytes
    doc_of = np.empty(cap, np.int32)
    hashes = np.empty(cap, np.uint64)
    starts = np.empty(cap if spans else 0, np.int64)
    ends = np.empty(cap if spans else 0, np.int64)
    nw = 0
    low = np.int64(-1)
    for d in range(n_docs):
        i = offsets[d]
        end = offsets[d + 1]
        ch = 0  # character index within the document
        while i < end:
            b = data[i]
            if b < 0x80:  # ASCII: one table lookup (0 word character, 1 space, 2 punctuation, 3 upper case)
                c = ascii_class[b]
                ln = 1
            else:
                c, ln, low = _decode(data, i, b, ascii_punct, lower)
            if c == 1:
                i += ln
                ch += 1
                continue
            tok_start = ch
            h = FNV_OFFSET
            has = False
            # the token: until a space or the end of the document (the character read is written
            # out again below: a helper function returning it made this loop 6x slower in numba)
            while True:
                if c != 2:
                    has = True
                    if ln == 1:
                        h = (h ^ np.uint64(b + 32 if c == 3 else b)) * FNV_PRIME
                    elif low >= 0:
                        h = _hash_cp(h, low)
                    else:
                        for k in range(ln):
                            h = (h ^ np.uint64(data[i + k])) * FNV_PRIME
                i += ln
                ch += 1
                if i >= end:
                    break
                b = data[i]
                if b < 0x80:  # ASCII: one table lookup (0 word character, 1 space, 2 punctuation, 3 upper case)
                    c = ascii_class[b]
                    ln = 1
                else:
                    c, ln, low = _decode(data, i, b, ascii_punct, lower)
                if c == 1:
                    break
            if has:
                nw = _emit(doc_of, hashes, starts, ends, nw, d, h, tok_start, ch)
    return doc_of[:nw], hashes[:nw], starts[: nw if spans else 0], ends[: nw if spans else 0]


@numba.njit(cache=True)
def _scan_spans(data, offsets, ascii_punct, ascii_class, lower):
    return _scan_body(data, offsets, ascii_punct, ascii_class, lower, True)


@numba.njit(cache=True)
def _scan_words(data, offsets, ascii_punct, ascii_class, lower):
    return _scan_body(data, offsets, ascii_punct, ascii_class, lower, False)


def _scan(data, offsets, spans: bool):
    return (_scan_spans if spans else _scan_words)(data, offsets, _ASCII_PUNCT, _ASCII_CLASS, _LOWER)


def lowercase(text: pa.Array) -> pa.Array:
    """Unicode lowercase. Arrow maps code point to code point (utf8proc's simple case mapping:
    U+0130 becomes "i", not "i" + U+0307), so character offsets, and the spans of words, stay
    valid (tested in test_lowercase_keeps_character_offsets)."""
    return pc.utf8_lower(text)


class Words:
    """The words of a batch of documents (flat arrays, grouped by document)."""

    __slots__ = ("doc", "hash", "start", "end", "n_docs", "doc_start")

    def __init__(self, doc, hash_, start, end, n_docs):
        self.doc, self.hash, self.start, self.end, self.n_docs = doc, hash_, start, end, n_docs
        # words of doc d: [doc_start[d], doc_start[d+1]) (queries in doc's dtype: no copy of doc)
        self.doc_start = np.searchsorted(doc, np.arange(n_docs + 1, dtype=doc.dtype))


def single_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array of a column: its only chunk as it is (``combine_chunks`` copies even that one)."""
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def words(text: pa.Array | pa.ChunkedArray | list[str], spans: bool = True) -> Words:
    """The words of a batch; ``spans=False`` skips their character spans (dedup needs none)."""
    if isinstance(text, list):
        text = pa.array(text, pa.large_string())
    text = single_array(text)
    text = text.cast(pa.large_string())  # lowercased inside the scan
    if text.null_count:  # (fill_null copies the data even where there is no null: 350 MB/s)
        text = pc.fill_null(text, "")
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64, count=len(text) + 1 + text.offset)[text.offset:]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    doc, h, s, e = _scan(data, offsets, spans)
    return Words(doc, h, s, e, len(text))


def ngram_hashes(w: Words, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every n-gram that lies inside one document, and the index of its first word."""
    if len(w.hash) < n:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    m = len(w.hash) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for k in range(n):  # n vectorised steps, not a loop per n-gram
        h = h * NGRAM_PRIME + w.hash[k:k + m]
    first = np.arange(m)
    same_doc = w.doc[:m] == w.doc[n - 1:]
    return h[same_doc], first[same_doc]


def normalized_words(text: str) -> list[str]:
    """The words of one text, as strings (reports; the oracle's definition in plain Python)."""
    low = pc.utf8_lower(pa.array([text], pa.large_string()))[0].as_py()  # the same case table
    if len(low) != len(text):
        low = "".join(c.lower() if c.isascii() else c for c in text)
    return [w for w in low.translate(_punct_table()).split() if w]


@functools.cache
def _punct_table() -> dict[int, None]:
    """str.translate's table deleting every character :func:`is_punct` names (all are below
    U+3012); one dict lookup per character instead of a compiled call each."""
    return {cp: None for cp in range(0x3012) if is_punct(chr(cp))}


def word_hash(word: str) -> int:
    h = int(FNV_OFFSET)
    for b in word.encode("utf-8"):
        h = ((h ^ b) * int(FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return h
