"""GPT-3 appendix C: the vectorised implementation against a brute-force, obviously-correct one
(hypothesis), on random documents with planted benchmark passages and boilerplate."""

import re

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from siftmix.contamination.appendix_c import (
    Benchmark,
    NgramIndex,
    benchmark_matches,
    decontaminate_batch,
    dirty_examples,
    doc_counts,
    training_collisions,
)
from siftmix.pipeline.core.text import is_punct, normalized_words, words

# --------------------------------------------------------------------------- the oracle


def oracle_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start char, end char): whitespace tokens, lowercased, punctuation removed."""
    low = pa.compute.utf8_lower(pa.array([text], pa.large_string()))[0].as_py()
    if len(low) != len(text):
        low = "".join(c.lower() if c.isascii() else c for c in text)
    out = []
    for m in re.finditer(r"\S+", low):
        w = "".join(c for c in m.group() if not is_punct(c))
        if w:
            out.append((w, m.start(), m.end()))
    return out


def oracle(docs, benchmarks, min_n=8, max_docs=10, window=200, min_piece=200, max_pieces=10):
    bench_grams = {}
    for b in benchmarks:
        for t in b.texts:
            ws = [w for w, _, _ in oracle_words(t)]
            for i in range(len(ws) - 12):
                bench_grams.setdefault(tuple(ws[i:i + 13]), b.name)
    doc_words = [oracle_words(t) for t in docs]
    holders = {}
    for d, ws in enumerate(doc_words):
        for i in range(len(ws) - 12):
            g = tuple(w for w, _, _ in ws[i:i + 13])
            if g in bench_grams:
                holders.setdefault(g, set()).add(d)
    result = {}
    for d, (text, ws) in enumerate(zip(docs, doc_words)):
        removed = [False] * len(text)
        first = None
        for i in range(len(ws) - 12):
            g = tuple(w for w, _, _ in ws[i:i + 13])
            if g in bench_grams and len(holders[g]) <= max_docs:
                first = first or bench_grams[g]
                for c in range(max(0, ws[i][1] - window), min(len(text), ws[i + 12][2] + window)):
                    removed[c] = True
        if first is None:
            continue
        pieces, cur = [], []
        for c, r in zip(text, removed):
            if r:
                if cur:
                    pieces.append("".join(cur))
                cur = []
            else:
                cur.append(c)
        if cur:
            pieces.append("".join(cur))
        if len(pieces) > max_pieces:
            result[d] = ("dropped", first)
        else:
            result[d] = ([p for p in pieces if len(p) >= min_piece], first)
    # benchmark side
    train_grams = {}
    dirty = {}
    for b in benchmarks:
        lengths = [len(normalized_words(t)) for t in b.texts]
        n = int(np.clip(np.floor(np.percentile(lengths, 5)), min_n, 13))
        if n not in train_grams:
            train_grams[n] = {tuple(w for w, _, _ in ws[i:i + n]) for ws in doc_words for i in range(len(ws) - n + 1)}
        dirty[b.name] = {e for e, t in enumerate(b.texts)
                         if any(tuple(ws[i:i + n]) in train_grams[n]
                                for ws in [normalized_words(t)] for i in range(len(ws) - n + 1))}
    return result, dirty


def fast(docs, benchmarks, max_docs=10):
    index = NgramIndex.build(benchmarks)
    table = pa.table({"id": [str(i) for i in range(len(docs))], "text": pa.array(docs, pa.large_string())})
    w = words(table["text"])
    d, _, h, _ = training_collisions(w, index)
    hashes, counts = doc_counts(d, h)
    exc, _ = decontaminate_batch(table, index, hashes[counts > max_docs])
    result = {}
    for doc, e in exc:
        assert "".join(e.pieces) + "".join(e.removed) != "" or docs[doc] == ""
        assert sum(map(len, e.pieces)) + sum(map(len, e.removed)) == len(docs[doc])  # chars add up
        result[doc] = ("dropped" if e.dropped else e.pieces, e.benchmark)
    matched = {size: set(int(x) for x in u) for size, (u, _, _) in benchmark_matches(w, index).items()}
    dirty = {k: set(v) for k, v in dirty_examples(index, matched).items()}
    return result, dirty


VOCAB = ["the", "river", "Mill", "valley", "old", "town's", "bridge", "(north)", "Ashford", "crossed", "a", "—", "quiet",
         "école", "ÉCOLE", "grew", "built", "1850", "near", "its", "walls.", "and", "of", "“gate”"]


@st.composite
def corpora(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    benches = []
    for b in range(draw(st.integers(1, 3))):
        texts = [" ".join(rng.choice(VOCAB, rng.integers(6, 30))) for _ in range(rng.integers(3, 8))]
        benches.append(Benchmark(f"bench{b}", [str(i) for i in range(len(texts))], texts))
    docs = []
    for _ in range(rng.integers(1, 14)):
        parts = [" ".join(rng.choice(VOCAB, rng.integers(0, 120)))]
        for _ in range(rng.integers(0, 3)):  # planted passages, sometimes re-cased and re-punctuated
            b = benches[rng.integers(len(benches))]
            t = b.texts[rng.integers(len(b.texts))]
            parts.append(t.upper() if rng.random() < 0.3 else t.replace(" ", rng.choice([" ", "  ", "\n", ", "])))
            parts.append(" ".join(rng.choice(VOCAB, rng.integers(0, 80))))
        docs.append(" ".join(parts))
    return docs, benches


@settings(max_examples=150, deadline=None)
@given(corpora(), st.sampled_from([1, 2, 10]))
def test_vectorised_equals_brute_force(corpus, max_docs):
    docs, benches = corpus
    want_train, want_dirty = oracle(docs, benches, max_docs=max_docs)
    got_train, got_dirty = fast(docs, benches, max_docs=max_docs)
    assert got_dirty == want_dirty
    assert set(got_train) == set(want_train)
    for d, (pieces, bench) in want_train.items():
        assert got_train[d][1] == bench
        assert got_train[d][0] == pieces, d


FILLER = " ".join(["lorem"] * 100)  # 599 characters of words no benchmark has
PASSAGE = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."


def test_excision_window_pieces_and_drop():
    bench = [Benchmark("gsm", ["0"], [PASSAGE])]
    one = FILLER + " " + PASSAGE + " " + FILLER
    many = " ".join([FILLER] + [PASSAGE + " " + FILLER] * 11)  # 12 pieces -> dropped whole
    got, _ = fast([one, many], bench)
    assert got[0][1] == "gsm" and got[1][1] == "gsm"
    assert oracle([one, many], bench)[0] == got
    pieces, _ = got[0]
    start = one.index(PASSAGE)
    assert pieces == [one[: start - 200], one[start + len(PASSAGE) + 200:]]
    assert got[1][0] == "dropped"


def test_boilerplate_ngram_in_more_than_max_docs_is_ignored():
    bench = [Benchmark("b", ["0"], [PASSAGE])]
    docs = [FILLER + " " + PASSAGE + " " + FILLER for _ in range(11)]
    assert fast(docs, bench, max_docs=10)[0] == {}  # 11 documents hold it: boilerplate
    assert len(fast(docs[:10], bench, max_docs=10)[0]) == 10
    # the benchmark side still sees the example as dirty either way
    assert fast(docs, bench, max_docs=10)[1] == {"b": {0}}


def test_n_is_fifth_percentile_clamped():
    short = Benchmark("short", ["0", "1"], ["one two three", "a b c d e f g h i j"])
    long = Benchmark("long", ["0"], [" ".join(f"w{i}" for i in range(40))])
    idx = NgramIndex.build([short, long])
    assert idx.n == {"short": 8, "long": 13}
    assert idx.build([short], min_n=3).n == {"short": 3}
