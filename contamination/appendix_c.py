"""GPT-3 appendix C on both sides, as pure functions over Arrow batches.

Training side: every 13-gram of a training document that also occurs in a benchmark collides;
13-grams found in more than ``max_docs`` training documents are ignored (boilerplate); each
remaining collision is removed with ``window`` characters on each side, the document is split
there, pieces shorter than ``min_piece`` characters are dropped, and a document split into more
than ``max_pieces`` pieces (counted before short pieces are dropped) is dropped whole.

Benchmark side: an example is dirty if any of its N-grams occurs in the training data, with N
the 5th percentile of the benchmark's example length in words, clamped to [min_n, 13]. An
example shorter than N has no N-gram and is never dirty by that rule; they are counted
(``NgramIndex.short``), and with ``short="whole"`` such an example is dirty when its whole word
sequence occurs in the training data.

The stage (:mod:`.stage`, two passes over the data) is built on these; the brute-force reference
they are tested against is ``oracle`` in ``tests/test_appendix_c.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from siftmix.pipeline.core.text import Words, ngram_hashes, words

TRAIN_N = 13
FILTER_BITS = 26


@dataclass
class Benchmark:
    name: str
    ids: list[str]
    texts: list[str]
    path: str = ""  # the file it was read from (the clean subset is written in its format)


@dataclass
class NgramIndex:
    """Sorted 64-bit n-gram hashes of the benchmarks with (benchmark, example) of each; one table
    of 13-grams for the training side, one per N for the benchmark side."""

    names: list[str]
    n: dict[str, int]
    tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: per table, a bitmap over the top FILTER_BITS bits of the hashes (8 MiB): most n-grams of a
    #: training document are in no benchmark, and the bitmap rejects them before any search
    filters: dict[int, np.ndarray] = field(default_factory=dict)
    #: per benchmark, the examples with fewer words than its N (no N-gram: never dirty by the paper's rule)
    short: dict[str, int] = field(default_factory=dict)
    #: ``short="whole"``: a short example of L >= 1 words is also in the L-table, as its one L-gram
    #: (an entry of benchmark b in a table of size < N_b is always such a whole example)
    whole: bool = False

    @classmethod
    def build(cls, benchmarks: list[Benchmark], min_n: int = 8, max_n: int = 13, short: str = "ignore") -> NgramIndex:
        names = [b.name for b in benchmarks]
        n_of: dict = {}
        per_n: dict = {}
        short_of: dict = {}
        for bi, b in enumerate(benchmarks):
            w = words(b.texts)
            lengths = np.diff(w.doc_start)
            n = int(np.clip(np.floor(np.percentile(lengths, 5)) if len(lengths) else max_n, min_n, max_n))
            n_of[b.name] = n
            for size in {n, TRAIN_N}:
                h, first = ngram_hashes(w, size)
                per_n.setdefault(size, []).append((h, np.full(len(h), bi, np.int32), w.doc[first].astype(np.int32)))
            is_short = lengths < n
            short_of[b.name] = int(is_short.sum())
            if short == "whole":
                for size in np.unique(lengths[is_short & (lengths > 0)]):  # a few distinct lengths below N
                    h, first = ngram_hashes(w, int(size))
                    ex = w.doc[first]
                    one = lengths[ex] == size  # the example's whole word sequence, nothing longer's parts
                    per_n.setdefault(int(size), []).append((h[one], np.full(int(one.sum()), bi, np.int32),
                                                            ex[one].astype(np.int32)))
        idx = cls(names, n_of, short=short_of, whole=short == "whole")
        for size, parts in per_n.items():
            h = np.concatenate([p[0] for p in parts])
            b = np.concatenate([p[1] for p in parts])
            e = np.concatenate([p[2] for p in parts])
            order = np.lexsort((e, b, h))
            idx.tables[size] = (h[order], b[order], e[order])
            bits = np.zeros(1 << FILTER_BITS, dtype=bool)
            bits[(h >> np.uint64(64 - FILTER_BITS)).astype(np.int64)] = True
            idx.filters[size] = np.packbits(bits, bitorder="little")
        return idx

    def lookup(self, size: int, h: np.ndarray) -> np.ndarray:
        """Position in the size-table of each hash's first entry, or -1 (vectorised)."""
        table = self.tables.get(size)
        out = np.full(len(h), -1, np.int64)
        if table is None or len(h) == 0 or len(table[0]) == 0:
            return out
        top = (h >> np.uint64(64 - FILTER_BITS)).astype(np.int64)
        maybe = np.nonzero((self.filters[size][top >> 3] >> (top & 7).astype(np.uint8)) & 1)[0]
        keys = table[0]
        pos = np.searchsorted(keys, h[maybe])
        pos_c = np.minimum(pos, len(keys) - 1)
        found = (pos < len(keys)) & (keys[pos_c] == h[maybe])
        out[maybe[found]] = pos_c[found]
        return out


# --------------------------------------------------------------------------- training side

def training_collisions(w: Words, index: NgramIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All 13-gram collisions of a batch: (doc, first word, hash, benchmark index)."""
    h, first = ngram_hashes(w, TRAIN_N)
    pos = index.lookup(TRAIN_N, h)
    hit = pos >= 0
    return w.doc[first[hit]], first[hit], h[hit], index.tables[TRAIN_N][1][pos[hit]] if hit.any() else np.zeros(0, np.int32)


def doc_counts(docs: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: for each colliding 13-gram, the number of distinct documents holding it."""
    if len(hashes) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    pairs = np.unique(np.stack([hashes, docs.astype(np.uint64)], axis=1), axis=0)
    return np.unique(pairs[:, 0], return_counts=True)


@dataclass
class Excision:
    pieces: list[str]          # kept pieces, in order
    removed: list[str]         # excised spans and dropped pieces (all the rejected text)
    dropped: bool              # dropped whole: split into more than max_pieces pieces
    benchmark: str | None      # the benchmark of the first collision
    n_collisions: int


def excise(text: str, spans: list[tuple[int, int]], benchmark: str | None, window: int = 200,
           min_piece: int = 200, max_pieces: int = 10) -> Excision:
    """Remove each colliding span (char start, char end) with ``window`` characters on each side;
    the rest is split into pieces. Characters add up: kept + removed = the text."""
    if not spans:
        return Excision([text], [], False, None, 0)
    cuts = sorted((max(0, s - window), min(len(text), e + window)) for s, e in spans)
    merged = [list(cuts[0])]
    for s, e in cuts[1:]:
        if s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    pieces, removed, pos = [], [], 0
    for s, e in merged:
        pieces.append(text[pos:s])
        removed.append(text[s:e])
        pos = e
    pieces.append(text[pos:])
    pieces = [p for p in pieces if p]  # a cut at the very start or end leaves no piece
    if len(pieces) > max_pieces:
        return Excision([], [text], True, benchmark, len(spans))
    kept = [p for p in pieces if len(p) >= min_piece]
    removed += [p for p in pieces if len(p) < min_piece]
    return Excision(kept, removed, False, benchmark, len(spans))


def decontaminate_batch(table: pa.Table, index: NgramIndex, ignored: set[int] | np.ndarray, window: int = 200,
                        min_piece: int = 200, max_pieces: int = 10) -> tuple[list[tuple[int, Excision]], dict]:
    """Pass 2 over one batch (columns id, text): the excision of every document with at least
    one collision that is not ignored; documents without one are unchanged (not listed)."""
    texts = table["text"].combine_chunks() if isinstance(table["text"], pa.ChunkedArray) else table["text"]
    w = words(texts)
    docs, first, h, bench = training_collisions(w, index)
    ignored = np.asarray(sorted(ignored) if isinstance(ignored, set) else ignored, dtype=np.uint64)
    keep = ~np.isin(h, ignored) if len(ignored) else np.ones(len(h), bool)
    docs, first, bench = docs[keep], first[keep], bench[keep]
    out = []
    py_texts = None
    for d in np.unique(docs):
        if py_texts is None:
            py_texts = texts.to_pylist()
        m = docs == d
        fs = first[m]
        spans = [(int(w.start[f]), int(w.end[f + TRAIN_N - 1])) for f in fs]
        first_bench = index.names[int(bench[m][np.argmin(fs)])]
        out.append((int(d), excise(py_texts[d], spans, first_bench, window, min_piece, max_pieces)))
    return out, {"collisions": int(keep.sum()), "ignored": int((~keep).sum())}


# --------------------------------------------------------------------------- benchmark side

def benchmark_sizes(index: NgramIndex) -> list[int]:
    """The n-gram sizes the benchmark side looks up: every benchmark's N, and with
    ``short_examples: whole`` the lengths of the short examples."""
    return sorted(set(index.n.values()) | ({s for s in index.tables if s != TRAIN_N} if index.whole else set()))


def counts_for(index: NgramIndex, bi: int, size: int) -> bool:
    """Whether an entry of benchmark ``bi`` in the ``size``-table makes its example dirty: the
    benchmark's own N, or (only whole short examples are there) a size below it."""
    n = index.n[index.names[bi]]
    return size == n or (index.whole and size < n)


def benchmark_matches(w: Words, index: NgramIndex) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each benchmark-side N: the distinct N-gram hashes of the batch that are in the index,
    with the document (row in the batch) and first word of their first occurrence."""
    out = {}
    for size in benchmark_sizes(index):
        h, first = ngram_hashes(w, size)
        pos = index.lookup(size, h)
        hit = pos >= 0
        if hit.any():
            hh, ff = h[hit], first[hit]
            uniq, where = np.unique(hh, return_index=True)
            out[size] = (uniq, w.doc[ff[where]], ff[where])
    return out


def dirty_examples(index: NgramIndex, matched: dict[int, set[int] | np.ndarray]) -> dict[str, dict[int, int]]:
    """{benchmark: {example index: one matched n-gram hash}} from the matched hashes per N."""
    out: dict[str, dict[int, int]] = {name: {} for name in index.names}
    for bi, name in enumerate(index.names):
        for size in benchmark_sizes(index):
            if not counts_for(index, bi, size):
                continue
            h, b, e = index.tables[size]
            m = np.asarray(sorted(matched.get(size, ())), dtype=np.uint64)
            sel = (b == bi) & np.isin(h, m)
            for hv, ex in zip(h[sel], e[sel]):
                out[name].setdefault(int(ex), int(hv))
    return out
