"""MinHash signatures against datasketch (the oracle) and a simple reference implementation."""

import numpy as np
import pytest
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st
from siftmix.dedup.minhash import (
    batch_signatures,
    fmix32,
    permutations,
    shingle_hashes,
    shingle_strings,
    signatures,
    signatures_numpy,
)

WORDS = ["the", "River", "mill,", "valley", "old", "town's", "Bridge", "(north)", "école", "a", "1850", "—", "of", "and"]
docs_st = st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=60).map(" ".join), min_size=1, max_size=8)


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@settings(max_examples=60, deadline=None)
@given(docs=docs_st, seed=st.integers(0, 2**31 - 1), num_perm=st.sampled_from([16, 128]))
def test_compatible_mode_equals_datasketch_bit_for_bit(scheme, docs, seed, num_perm):
    ours = batch_signatures(docs, n=5, num_perm=num_perm, seed=seed, scheme=scheme, compatible=True)
    for i, d in enumerate(docs):
        m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        sh = shingle_strings(d, 5)
        if sh:
            m.update_batch([s.encode("utf-8") for s in sh])
        assert ours[i].tolist() == m.hashvalues.tolist()
        assert ours.dtype == m.hashvalues.dtype


def test_permutations_equal_datasketch():
    for scheme in ("affine32", "legacy"):
        a, b = permutations(64, 7, scheme)
        pa_, pb = MinHash(num_perm=64, seed=7, scheme=scheme).permutations
        assert (a == pa_).all() and (b == pb).all()


@settings(max_examples=60, deadline=None)
@given(docs=docs_st, seed=st.integers(0, 1000))
def test_fast_family_equals_a_simple_reference(docs, seed):
    """Default family: the same shingle hashes, min over a Python loop per permutation."""
    sig = batch_signatures(docs, n=5, num_perm=32, seed=seed)
    h, d = shingle_hashes(docs, 5)
    a, b = permutations(32, seed)
    for i in range(len(docs)):
        hs = h[d == i]
        for k in range(32):
            want = 0xFFFFFFFF if len(hs) == 0 else min(int((int(a[k]) * int(fmix32(np.array([x], np.uint32))[0]) + int(b[k])) % 2**32) for x in hs)
            assert int(sig[i, k]) == want


def test_similar_documents_have_similar_signatures():
    rng = np.random.default_rng(0)
    base = [str(x) for x in rng.integers(0, 5000, 400)]
    a = " ".join(base)
    b = " ".join(base[:380] + [str(x) for x in rng.integers(5000, 9000, 20)])
    c = " ".join(str(x) for x in rng.integers(0, 5000, 400))
    s = batch_signatures([a, b, c], num_perm=256)
    sa = {tuple(base[i:i + 5]) for i in range(396)}
    sb = {tuple(b.split()[i:i + 5]) for i in range(396)}
    exact = len(sa & sb) / len(sa | sb)
    assert abs(np.mean(s[0] == s[1]) - exact) < 0.08 and np.mean(s[0] == s[2]) < 0.05


def test_signatures_empty_and_chunking():
    h = np.array([5, 9, 5, 7], np.uint32)
    d = np.array([2, 0, 0, 2])
    full = signatures(h, d, 4, num_perm=8, seed=3)
    tiny = signatures_numpy(h, d, 4, num_perm=8, seed=3, chunk=1)
    assert (full == tiny).all()
    for scheme in ("affine32", "legacy"):
        rng = np.random.default_rng(1)
        hh = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
        dd = np.sort(rng.integers(0, 50, 5000))
        assert (signatures(hh, dd, 60, 64, 9, scheme) == signatures_numpy(hh, dd, 60, 64, 9, scheme)).all()
    assert (full[1] == 0xFFFFFFFF).all() and (full[3] == 0xFFFFFFFF).all()
