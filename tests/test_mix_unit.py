"""Unit tests of the mixing pure functions (no Ray)."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from siftmix.mixing.mix import (
    N_BUCKETS,
    PlanError,
    assign,
    bucket_token_sums,
    find_threshold,
    make_pieces,
    plan_mixture,
    refine_threshold,
    shard_boundaries,
    sort_partition,
    split_text,
    token_stream,
)
from siftmix.mixing.tokenizer import Tokenizer, get_tokenizer


def test_gpt2_offline_matches_known_ids():
    tok = get_tokenizer("gpt2")
    assert tok.encode(["hello world"]) == [[31373, 995]]
    assert tok.n_vocab == 50257 and tok.eot == 50256 and tok.dtype == np.uint16
    text = "Caf\u00e9 \u201cquoted\u201d text \U0001F600 and <|endoftext|> as plain text"
    assert tok.decode(tok.encode([text])[0]) == text
    assert list(tok.count(pa.array(["hello world", "", None]))) == [2, 0, 0]


def test_hf_tokenizer_file(tmp_path):
    from tokenizers import Tokenizer as HF
    from tokenizers import models, pre_tokenizers

    hf = HF(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2, "</s>": 3}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer(str(tmp_path / "tokenizer.json"))
    assert tok.encode(["hello world"]) == [[0, 1]] and tok.eot == 3


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=400), st.integers(20, 120))
def test_split_text_is_lossless_and_bounded(text, n):
    parts = split_text(text, n)
    assert "".join(parts) == text
    assert all(len(p) <= n for p in parts)


def test_plan_epochs_and_errors():
    avail = {"cc": 1000, "wiki": 100}
    total, plans = plan_mixture(avail, {"cc": 0.6, "wiki": 0.4}, None, {"cc": 1.0, "wiki": 10.0})
    assert total == 1666  # cc binds: 1000 / 0.6
    p = {x.source: x for x in plans}
    assert p["wiki"].epochs == pytest.approx(0.4 * 1666 / 100) and p["cc"].epochs == pytest.approx(0.6 * 1666 / 1000)
    with pytest.raises(PlanError, match="sum to 1"):
        plan_mixture(avail, {"cc": 0.6, "wiki": 0.3}, None, {"cc": 1, "wiki": 1})
    with pytest.raises(PlanError, match=r"wiki needs 40\.00 epochs .* short by 3,900 tokens"):
        plan_mixture(avail, {"cc": 0.6, "wiki": 0.4}, 10_000, {"cc": 10, "wiki": 1})
    with pytest.raises(PlanError, match="no mix.weights entry"):
        plan_mixture({**avail, "books": 5}, {"cc": 0.6, "wiki": 0.4}, None, {"cc": 1, "wiki": 1, "books": 1})
    with pytest.raises(PlanError, match="no tokens of it reach"):
        plan_mixture(avail, {"cc": 0.5, "wiki": 0.3, "books": 0.2}, None, {"cc": 1, "wiki": 1, "books": 1})


def _pieces(n=3000, seed=1):
    rng = np.random.default_rng(seed)
    ids = [f"d{i}" for i in range(n)]
    from siftmix.pipeline.core.hashing import hash01

    return pa.table({"id": ids, "source": ["s"] * n, "text": ["x"] * n,
                     "n_tokens": pa.array(rng.integers(1, 500, n)), "h": pa.array(hash01(0, "mix", ids)),
                     "tokens": pa.array([b""] * n, pa.large_binary())})


@pytest.mark.parametrize("frac", [0.0, 0.013, 0.37, 0.5, 0.999])
def test_threshold_is_exact_to_one_piece_brute_force(frac):
    """The bucketed search + refinement equals the brute-force choice: pieces in hash order,
    the prefix whose token total is closest to the target."""
    p = _pieces()
    target = frac * p["n_tokens"].to_numpy().sum()
    b, before = find_threshold(bucket_token_sums(p)["s"], target)
    lo, hi = b / N_BUCKETS, (b + 1) / N_BUCKETS
    h = p["h"].to_numpy()
    cand = p.filter(pa.array((h >= lo) & (h < hi)))
    tau = refine_threshold(cand, b, before, target)
    taken = p["n_tokens"].to_numpy()[h < tau].sum()
    order = np.argsort(h)
    cum = np.concatenate([[0], np.cumsum(p["n_tokens"].to_numpy()[order])])
    best = cum[np.argmin(np.abs(cum - target))]
    assert taken == best
    assert abs(taken - target) <= p["n_tokens"].to_numpy().max()


def test_assign_repeats_keys_and_partitions():
    p = _pieces(500)
    out = assign(p, {"s": 2}, {"s": 0.5}, seed=3, n_partitions=4)
    h = p["h"].to_numpy()
    expect = 2 * 500 + int((h < 0.5).sum())
    assert out.num_rows == expect
    reps = {}
    for i, r in zip(out["id"].to_pylist(), out["repeat"].to_pylist()):
        reps.setdefault(i, []).append(r)
    assert all(v == list(range(len(v))) for v in reps.values())
    assert set(out["partition"].to_pylist()) <= {0, 1, 2, 3}
    again = assign(p, {"s": 2}, {"s": 0.5}, seed=3, n_partitions=4)
    assert again.equals(out)
    # the key decides the partition: key ranges do not overlap across partitions
    keys, parts = out["key"].to_numpy(), out["partition"].to_numpy()
    for a in range(3):
        assert keys[parts == a].max() < keys[parts == a + 1].min()
    s = sort_partition(out)
    assert (np.diff(s["key"].to_numpy().astype(np.float64)) >= 0).all()


def test_shard_boundaries_and_token_stream():
    assert shard_boundaries(np.array([5, 5, 5, 5, 1]), 10) == [(0, 2), (2, 4), (4, 5)]
    tok = get_tokenizer("gpt2")
    texts = ["hello world", "second document.", ""]
    pieces = make_pieces(pa.table({"id": ["a", "b", "c"], "source": ["s"] * 3, "text": texts}), tok, 0, 8192, True)
    ids, offsets = token_stream(pieces["tokens"], tok.eot, tok.dtype)
    assert ids.dtype == np.uint16 and offsets[-1] == len(ids) and len(offsets) == 4
    for i, t in enumerate(texts):
        seg = ids[offsets[i]:offsets[i + 1]]
        assert seg[-1] == tok.eot and tok.decode(seg[:-1]) == t
