"""Pure, vectorised dedup pieces against brute force: bucket candidates, verification, star
contraction vs scipy components, keeper choice, exact (normalised) hashes, sign_table."""

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles import choose_keeper, components
from siftmix.dedup.cluster import (
    all_pair_jaccards,
    bucket_candidates,
    components_min_label,
    keeper_order,
    keeper_verified,
    large_star,
    small_star,
    star_violations,
    unique_edges,
    verify_pairs,
)
from siftmix.dedup.config import DedupConfig
from siftmix.dedup.minhash import batch_signatures, doc_hashes, shingle_sets, shingle_strings
from siftmix.dedup.shard import sign_table
from siftmix.pipeline.core.text import words


def _brute_candidates(key, band, doc, exact, max_bucket, pivots=8):
    out = {}
    for k in set(key.tolist()):
        rows = [i for i in range(len(key)) if key[i] == k]
        if band[rows[0]] < 0:
            m = min(doc[i] for i in rows)
            for i in rows:
                if doc[i] != m:
                    out[(m, doc[i])] = 0
            continue
        reps = {}
        for i in rows:
            reps[exact[i]] = min(reps.get(exact[i], doc[i]), doc[i])
        # members in (exact, doc) order, as the vectorised version sorts them
        members = [reps[e] for e in sorted(reps)]
        for j in range(len(members)):
            for i in range(j if len(members) <= max_bucket else min(j, pivots)):
                a, b = sorted((members[i], members[j]))
                out.setdefault((a, b), 1)
    return out


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 2), st.integers(0, 30)), max_size=80, unique=True),
       st.integers(2, 5))
def test_bucket_candidates_equal_brute_force(rows, max_bucket):
    # the key determines the band (as in the stage: the band is mixed into the key); a document
    # has one normalised-text hash (documents 0-2, 3-5, ... are exact duplicates of each other)
    key = np.array([r[0] * 10 + r[1] + 1 for r in rows], np.uint64)
    band = np.array([r[1] for r in rows], np.int16)
    doc = np.array([r[2] for r in rows], np.int64)
    exact = (doc // 3).astype(np.uint64)
    a, b, k = bucket_candidates(key, band, doc, exact, max_bucket=max_bucket, pivots=2)
    got = {(int(x), int(y)): int(z) for x, y, z in zip(a, b, k)}
    want = {}
    for (x, y), z in _brute_candidates(key, band, doc, exact, max_bucket, pivots=2).items():
        want[(x, y)] = min(z, want.get((x, y), 9))
    assert got == want
    assert all(x < y for x, y in got)


def test_verify_pairs_equal_brute_force():
    texts = [" ".join(f"w{i}" for i in range(s, s + 60)) for s in (0, 3, 10, 40, 0)] + ["too short", ""]
    w = words(texts)
    vals, off = shingle_sets(w, 5)
    sig = batch_signatures(texts, num_perm=64)
    ia, ib = np.array([0, 0, 0, 1, 0, 5]), np.array([1, 2, 3, 3, 4, 6])
    est, jac = verify_pairs(sig, off, vals, ia, ib)
    sets = [set(shingle_strings(t)) for t in texts]
    for p, (i, j) in enumerate(zip(ia, ib)):
        u = sets[i] | sets[j]
        assert jac[p] == pytest.approx(len(sets[i] & sets[j]) / len(u) if u else 1.0)
        assert est[p] == pytest.approx(np.mean(sig[i] == sig[j]))


def _star_contraction(a, b):
    """Large-star / small-star to convergence in one process (the stage runs the same steps per
    partition)."""
    u, v = np.concatenate([a, b]), np.concatenate([b, a])
    for _ in range(100):
        u, v, _ = unique_edges(u, v)
        if star_violations(u, v) == 0:
            break
        x, y = large_star(u, v)
        x, y = small_star(x, y)
        u, v = np.concatenate([x, y]), np.concatenate([y, x])
    else:
        raise AssertionError("no convergence")
    d, i = np.unique(u, return_index=True)
    return dict(zip(d.tolist(), np.minimum(d, v[i]).tolist()))


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=120))
def test_star_contraction_equals_scipy_and_union_find(edges):
    edges = [(a, b) for a, b in edges if a != b]
    a = np.array([e[0] for e in edges], np.int64)
    b = np.array([e[1] for e in edges], np.int64)
    nodes, root = components_min_label(a, b)
    want = dict(zip(nodes.tolist(), root.tolist()))
    assert _star_contraction(a, b) == want
    uf = {int(m): int(r) for r, ms in components([(str(x).zfill(3), str(y).zfill(3)) for x, y in edges]).items() for m in ms
          for r in [r]} if edges else {}
    assert {int(k): int(v) for k, v in uf.items()} == want


def test_star_contraction_long_path():
    rng = np.random.default_rng(0)
    perm = rng.permutation(2000)
    a, b = perm[:-1].astype(np.int64), perm[1:].astype(np.int64)  # one path through 2000 nodes
    got = _star_contraction(a, b)
    assert set(got.values()) == {0} and len(got) == 2000


def test_keeper_order_equals_scalar_rule():
    rng = np.random.default_rng(0)
    n = 300
    root = rng.integers(0, 40, n)
    srcs = np.array(["common_crawl", "webtext2", "wikipedia", "other"])
    source = srcs[rng.integers(0, 4, n)]
    score = np.where(rng.random(n) < 0.3, np.nan, rng.choice([0.1, 0.5, 0.9], n))
    ids = np.array([f"id{rng.integers(0, 10**6):07d}-{i}" for i in range(n)])
    prio = ["wikipedia", "books1", "webtext2", "common_crawl"]
    rank = {s: i for i, s in enumerate(prio)}
    order = keeper_order(root, ids, np.array([rank.get(s, 4) for s in source]), score)
    assert (np.diff(root[order]) >= 0).all()
    for g in np.unique(root):
        members = [i for i in order if root[i] == g]  # in keeper order
        rest = [{"id": ids[i], "source": source[i], "quality_score": None if np.isnan(score[i]) else score[i]} for i in members]
        for i in members:  # each member is the scalar rule's keeper of itself and the members after it
            assert choose_keeper(rest, prio)["id"] == ids[i]
            rest = rest[1:]


def _sets_arrays(sets: list[set]) -> tuple[np.ndarray, np.ndarray]:
    off = np.zeros(len(sets) + 1, np.int64)
    off[1:] = np.cumsum([len(x) for x in sets])
    vals = np.concatenate([np.array(sorted(x), np.uint64) for x in sets]) if off[-1] else np.zeros(0, np.uint64)
    return off, vals


def _jac(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


@st.composite
def _components(draw):
    """A few components of documents whose shingle sets overlap a lot (chains of edits of a base
    set), some documents sharing their normalised text (the same exact hash and set)."""
    comps, sets, exact = [], [], []
    for c in range(draw(st.integers(1, 4))):
        base = set(range(c * 1000, c * 1000 + draw(st.integers(5, 30))))
        members = []
        for _ in range(draw(st.integers(1, 9))):
            if members and draw(st.booleans()) and draw(st.booleans()):  # an exact copy of an earlier member
                j = draw(st.sampled_from(members))
                sets.append(sets[j])
                exact.append(exact[j])
            else:
                cur = set(base)
                drop = draw(st.lists(st.sampled_from(sorted(base)), max_size=6))
                add = draw(st.lists(st.integers(c * 1000 + 500, c * 1000 + 520), max_size=6))
                cur = (cur - set(drop)) | set(add)
                sets.append(cur or {c * 1000})
                exact.append(len(exact) + 7)  # a distinct text
            members.append(len(sets) - 1)
        comps.append(members)
    return comps, sets, np.array(exact, np.uint64)


@given(_components(), st.sampled_from([0.5, 0.7, 0.8, 0.9]))
def test_keeper_verified_against_brute_force(data, t):
    """The keeper-verified rule on small components with exact Jaccards: every removed document
    has a kept partner >= t (its reported partner, with that exact similarity), no two kept
    members of a component are >= t, and the decisions equal a plain scalar greedy."""
    comps, sets, exact = data
    order = np.array([i for c in comps for i in c])  # keeper order: as listed
    starts = np.r_[0, np.cumsum([len(c) for c in comps])].astype(np.int64)
    s = [sets[i] for i in order]
    off, vals = _sets_arrays(s)
    ex = exact[order]
    r = keeper_verified(starts, ex, np.arange(len(s)), None, off, vals, t)
    for a, b in zip(starts[:-1], starts[1:]):
        kept = []
        for i in range(a, b):  # the rule, one member at a time
            twin = next((k for k in range(a, i) if ex[k] == ex[i]), None)
            if twin is not None:
                want = (twin, 1.0, True) if r["partner"][twin] < 0 else (r["partner"][twin], r["sim"][twin], r["exact"][twin])
            else:
                sims = [(_jac(s[i], s[k]), -k) for k in kept]
                best = max(sims, default=(-1, 0))
                want = (-best[1], best[0], False) if best[0] >= t else (-1, None, False)
            if want[0] == -1:
                kept.append(i)
                assert r["partner"][i] == -1
            else:
                assert (r["partner"][i], bool(r["exact"][i])) == (want[0], want[2])
                assert r["sim"][i] == pytest.approx(want[1])
        for i in range(a, b):  # the properties
            p = r["partner"][i]
            if p >= 0:
                assert r["partner"][p] == -1 and a <= p < b and _jac(s[i], s[p]) >= t
                assert r["sim"][i] == pytest.approx(_jac(s[i], s[p]))
        for x, y in itertools.combinations(kept, 2):
            assert _jac(s[x], s[y]) < t
    assert not r["capped"].any()


def test_keeper_verified_chain_keeps_the_far_end_and_caps_big_components():
    """A ~ B and B ~ C, but C is far from A: C is kept (connected components removed it)."""
    a = set(range(100))
    b = set(range(10, 110))  # J(a, b) = 90/110 = 0.82
    c = set(range(20, 120))  # J(b, c) = 0.82, J(a, c) = 80/120 = 0.67
    off, vals = _sets_arrays([a, b, c])
    r = keeper_verified(np.array([0, 3]), np.array([1, 2, 3], np.uint64), np.arange(3), None, off, vals, 0.8)
    assert r["partner"].tolist() == [-1, 0, -1]
    # a big component: 12 distinct documents, compared with at most 2 kept members each
    sets = [set(range(k * 100, k * 100 + 50)) for k in range(12)]
    off, vals = _sets_arrays(sets)
    r = keeper_verified(np.array([0, 12]), np.arange(12, dtype=np.uint64), np.arange(12), None, off, vals, 0.8,
                        max_component=10, max_compare=2)
    assert (r["partner"] == -1).all() and r["capped"].sum() == 12 - 3


def test_all_pair_jaccards_brute_force():
    rng = np.random.default_rng(1)
    sets = [set(rng.integers(0, 40, rng.integers(1, 30)).tolist()) for _ in range(7)]
    off, vals = _sets_arrays(sets)
    got = all_pair_jaccards(np.arange(7), np.arange(7), off, vals)
    want = [_jac(sets[i], sets[j]) for i, j in itertools.combinations(range(7), 2)]
    assert np.allclose(got, want)


def test_doc_hashes_normalise_case_punctuation_spacing():
    texts = ["The cat, sat.", "the CAT sat", "  the\ncat   sat!!", "the cat sat on", "", "!!!"]
    h = doc_hashes(words(texts))
    assert h[0] == h[1] == h[2]
    assert h[3] != h[0]
    assert h[4] == h[5]  # no words at all: one (empty) normalised text


def test_sign_table_rows_and_scope():
    t = pa.table({"id": ["a", "b", "c"], "source": ["s1", "s2", "s1"],
                  "text": ["one two three four five six seven", "one two three four five six seven", "tiny"]})
    p = DedupConfig(bands=4, rows=3, num_perm=16)
    bands, meta = sign_table(t, 3, 10, p)
    assert meta["doc"].to_pylist() == [(3 << 32) | 10, (3 << 32) | 11, (3 << 32) | 12]
    # 3 exact rows + 4 band rows for each document with shingles ("tiny" has none)
    assert bands.num_rows == 3 + 2 * 4
    key = bands["key"].to_numpy()
    band = bands["band"].to_numpy()
    doc = bands["doc"].to_numpy() & 0xFFFFFFFF
    # within_source: identical texts of different sources never share a key
    assert not set(key[doc == 10]) & set(key[doc == 11])
    bands, _ = sign_table(t, 3, 10, DedupConfig(bands=4, rows=3, num_perm=16, scope="cross_source"))
    key, doc = bands["key"].to_numpy(), bands["doc"].to_numpy() & 0xFFFFFFFF
    assert set(key[doc == 10]) == set(key[doc == 11])
    assert (band[band >= 0] < 4).all()


def test_pairs_in_big_buckets_use_pivots():
    n = 200  # one bucket of 200 distinct documents (boilerplate): 8 pivots, not 19,900 pairs
    a, b, k = bucket_candidates(np.full(n, 7, np.uint64), np.zeros(n, np.int16), np.arange(n, dtype=np.int64),
                                np.arange(n, dtype=np.uint64), max_bucket=64, pivots=8)
    assert len(a) == sum(min(j, 8) for j in range(n))
    assert set(itertools.chain(a.tolist(), b.tolist())) == set(range(n))


@given(st.lists(st.text(alphabet="ab cDé,.\n\u00a0", max_size=60), max_size=12), st.integers(1, 6))
def test_fused_signatures_equal_materialised_shingles(texts, n):
    from siftmix.dedup.minhash import (
        shingle_hashes,
        signatures,
        signatures_from_words,
        signatures_numpy,
    )

    w = words(texts)
    fused, count = signatures_from_words(w, n, 32, 7)
    h, d = shingle_hashes(None, n, w=w)
    assert (fused == signatures(h, d, len(texts), 32, 7)).all()
    assert (fused == signatures_numpy(h, d, len(texts), 32, 7)).all()
    assert (count == np.bincount(d, minlength=len(texts))).all()


@given(st.lists(st.text(alphabet="aZ b,.\\n\u0130É", max_size=40), max_size=8))
def test_words_without_spans_and_ascii_fast_path_equal_the_full_scan(texts):
    from siftmix.pipeline.core.text import normalized_words, word_hash

    full, fast = words(texts), words(texts, spans=False)
    assert (full.hash == fast.hash).all() and (full.doc == fast.doc).all() and len(fast.start) == 0
    ascii_texts = [t.encode("ascii", "ignore").decode() for t in texts]
    w = words(ascii_texts, spans=False)  # lowercased inside the scan
    assert w.hash.tolist() == [word_hash(x) for t in ascii_texts for x in normalized_words(t)]


def test_lowercase_keeps_character_offsets():
    import pyarrow.compute as pc
    from siftmix.pipeline.core.text import lowercase

    # every code point of the BMP but surrogates, and the astral planes' letters Arrow knows
    cps = [c for c in range(1, 0x30000) if not 0xD800 <= c <= 0xDFFF]
    text = pa.array([chr(c) for c in cps], pa.large_string())
    assert pc.all(pc.equal(pc.utf8_length(lowercase(text)), 1)).as_py()


def test_scan_lowercases_as_arrow_does():
    """The scan's lowercase table is Arrow's utf8_lower on every code point, and the words of a
    text equal the words of its Arrow-lowercased copy (hashes, documents and spans)."""
    import pyarrow.compute as pc
    from siftmix.pipeline.core import text as T

    cps = np.r_[np.arange(0x80, 0xD800), np.arange(0xE000, 0x110000)].astype(np.uint32)
    low = pc.utf8_lower(pa.array([cps.tobytes().decode("utf-32-le")], pa.large_string()))[0].as_py()
    arrow = np.frombuffer(low.encode("utf-32-le"), np.uint32)
    ours = np.where(cps < len(T._LOWER), T._LOWER[np.minimum(cps, len(T._LOWER) - 1)], cps)
    assert (ours == arrow).all()
    # every code point as a word of its own (with a letter, so that punctuation stays a word too)
    text = pa.array([" ".join(chr(c) + "Q" for c in cps[i:i + 20000]) for i in range(0, len(cps), 20000)], pa.large_string())
    a, b = T.words(text), T.words(pc.utf8_lower(text))
    assert len(a.hash) == len(cps) and (a.hash == b.hash).all() and (a.doc == b.doc).all()
    assert (a.start == b.start).all() and (a.end == b.end).all()


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=120), max_size=6),
       st.integers(1, 6))
def test_shingle_sets_equal_sorted_unique_ngram_hashes(docs, n):
    """The compiled per-document pass (n-grams, radix sort above 64 shingles, unique) equals numpy's
    sort-unique of ngram_hashes per document."""
    from siftmix.pipeline.core.text import ngram_hashes

    w = words([" ".join(d) for d in docs])
    vals, off = shingle_sets(w, n)
    h, first = ngram_hashes(w, n)
    doc = w.doc[first]
    for d in range(len(docs)):
        assert vals[off[d]:off[d + 1]].tolist() == np.unique(h[doc == d]).tolist()


def test_radix_sort_with_skipped_passes():
    """The radix sort skips a pass where every value has the same byte there; with an odd number
    of passes left the result is copied back from the scratch buffer."""
    from siftmix.dedup.minhash import _radix_sort

    rng = np.random.default_rng(0)
    for mask in (0xFFFFFFFFFFFFFFFF, 0x00FFFFFFFFFFFFFF, 0x00FF00FF00FF00FF, 0x0F, 0xFF00000000000000, 0):
        for n in (65, 1000):
            a = rng.integers(0, 2**63, n, dtype=np.uint64) & np.uint64(mask)
            b = a.copy()
            _radix_sort(b, np.empty_like(b), np.zeros(256, np.int64))
            assert np.array_equal(b, np.sort(a)), (hex(mask), n)
