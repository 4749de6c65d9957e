"""Unit tests of the quality filter's pure functions (no Ray)."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from siftmix.filters.config import HeuristicsConfig, QualityConfig
from siftmix.filters.heuristics import heuristic_reasons, heuristic_stats
from siftmix.filters.quality import balance, chunk_examples, filter_table, kmeans, similarity
from siftmix.filters.scoring import (
    apply_logistic,
    binary_report,
    fit_logistic,
    hash01,
    pareto_keep,
    pareto_keep_probability,
    preprocess,
    roc_auc,
)


@pytest.mark.parametrize("score", [0.05, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_pareto_rule_matches_numpy_pareto(score):
    """keep iff u < (2 - s)^-alpha (u = hash01(seed, id)) has the keep rate of GPT-3's
    np.random.pareto(alpha) > 1 - s, at several scores (many draws, 5 standard errors)."""
    n = 200_000
    ids = [f"doc-{i}" for i in range(n)]
    ours = pareto_keep(np.full(n, score), ids, seed=1234, alpha=9).mean()
    numpy_rate = (np.random.default_rng(7).pareto(9, n) > 1 - score).mean()
    p = pareto_keep_probability(np.array([score]), 9)[0]
    se = np.sqrt(p * (1 - p) / n)
    assert abs(ours - p) < 5 * se + 1e-9
    assert abs(numpy_rate - p) < 5 * se + 1e-9
    assert abs(ours - numpy_rate) < 7 * se + 1e-9


def test_pareto_keep_probability_known_values():
    assert pareto_keep_probability(np.array([0.9]), 9)[0] == pytest.approx(0.424, abs=1e-3)
    assert pareto_keep_probability(np.array([0.5]), 9)[0] == pytest.approx(0.026, abs=1e-3)
    assert pareto_keep_probability(np.array([1.0]), 9)[0] == 1.0


def test_hash01_deterministic_uniform_and_seeded():
    from scipy.stats import kstest

    ids = [f"x{i}" for i in range(20_000)]
    a, b = hash01(3, "s", ids), hash01(3, "s", ids)
    assert (a == b).all() and a.min() >= 0 and a.max() < 1
    assert kstest(a, "uniform").pvalue > 1e-3
    assert not (hash01(4, "s", ids) == a).all() and not (hash01(3, "t", ids) == a).all()


def test_preprocess_is_one_line_lowercase():
    out = preprocess(pa.array(["Hello, World!\nNew  line.\r\n\"Quoted\" (x)", None, "A" * 50]), max_chars=40).to_pylist()
    assert out[0] == 'hello, world! new  line.  "quoted" (x)'
    assert out[1] == ""
    assert out[2] == "a" * 40
    assert all("\n" not in s for s in out)


def test_logistic_and_auc_against_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (400, 2)), rng.normal(1, 1, (400, 2))])
    y = np.r_[np.zeros(400), np.ones(400)]
    w = fit_logistic(x, y, l2=1e-6)
    sk = LogisticRegression(C=1e6).fit(x, y)
    assert np.allclose(apply_logistic(w, x), sk.predict_proba(x)[:, 1], atol=1e-3)
    s = x.sum(1)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_binary_report_counts():
    r = binary_report(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]))
    assert r["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert r["accuracy"] == 0.5 and r["roc_auc"] == 0.75
    assert sum(r["histogram"]["positive"]) == 2 and sum(r["histogram"]["negative"]) == 2


def _brute_heuristics(doc: str) -> dict:
    words = doc.split()
    lines = [ln.strip() for ln in doc.split("\n")]
    nonempty = [ln for ln in lines if ln]
    seen, dup = set(), 0
    for ln in lines:  # duplicates of an earlier line (empty lines count as lines but not in fractions)
        if ln in seen and ln:
            dup += 1
        seen.add(ln)
    import re

    return {
        "word_count": len(words),
        "mean_word_length": sum(map(len, words)) / max(1, len(words)),
        "symbol_ratio": (doc.count("#") + doc.count("...") + doc.count("\u2026")) / max(1, len(words)),
        "ellipsis_lines": sum(ln.endswith(("...", "\u2026")) for ln in nonempty) / max(1, len(nonempty)),
        "bullet_lines": sum(ln[:1] in "\u2022-*\u00b7\u2023\u25aa\u25cf" and ln != "" for ln in nonempty) / max(1, len(nonempty)),
        "stop_words": sum(bool(re.search(rf"\b{w}\b", doc.lower())) for w in ("the", "be", "to", "of", "and", "that", "have", "with")),
        "duplicate_lines": dup / max(1, len(nonempty)),
    }


_words = st.sampled_from(["the", "cat", "and", "#tag", "...", "\u2022", "-", "of", "word", "with", "x\u2026", "Be", "long-word"])
_line = st.lists(_words, min_size=0, max_size=8).map(" ".join)
_doc = st.lists(_line, min_size=1, max_size=8).map("\n".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(_doc, min_size=1, max_size=6))
def test_heuristic_stats_equal_brute_force(docs):
    got = heuristic_stats(pa.array(docs, pa.large_string()))
    for i, doc in enumerate(docs):
        want = _brute_heuristics(doc)
        for k, v in want.items():
            assert got[k][i] == pytest.approx(v), (k, doc)


def test_heuristic_rules_each_have_a_reason():
    cfg = HeuristicsConfig(enabled=True)
    good = ("The river runs through the valley and the town, with its old mill, has grown around it. " * 10).strip()
    docs = {
        None: good,
        "heuristic:word_count": "The cat and the dog.",
        "heuristic:mean_word_length": " ".join(["internationalisation"] * 60) + " the and",
        "heuristic:symbol_ratio": good + " " + "#x " * 30,
        "heuristic:ellipsis_lines": "\n".join([good[:200] + " ..."] * 2 + [good[:300]] * 1) + "\n" + "the end ...",
        "heuristic:bullet_lines": "\n".join("\u2022 item number with the and " + str(i) for i in range(60)),
        "heuristic:stop_words": " ".join(["lorem ipsum dolor sit amet"] * 20),
        "heuristic:duplicate_lines": "\n".join([good[:120]] * 4 + [good[120:400]]),
    }
    got = heuristic_reasons(pa.array(list(docs.values()), pa.large_string()), cfg).to_pylist()
    assert got == list(docs)


def test_chunks_and_balance():
    t = pa.table({"id": ["book", "page"], "text": ["x" * 12_000, "short page"]})
    ex = chunk_examples(t, 1, 5000)
    assert ex["id"].to_pylist() == ["book#0", "book#1", "book#2", "page"]
    ex = pa.concat_tables([ex, chunk_examples(pa.table({"id": ["n1", "n2"], "text": ["a", "b"]}), 0, 5000)])
    b = balance(ex, 10, seed=0)
    assert b["label"].to_pylist().count(1) == b["label"].to_pylist().count(0) == 2
    assert balance(ex, 10, seed=0).equals(b)


def test_kmeans_and_similarity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = kmeans(x, 4, seed=1)
    assert c.shape == (4, 8) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    assert (kmeans(x, 4, seed=1) == c).all()
    s = similarity(x, c)
    assert s.shape == (200,) and (s <= 1 + 1e-6).all() and (s >= -1 - 1e-6).all()


class _FixedModel:
    def score(self, text):
        return np.array([0.999 if "good" in t else 0.001 for t in text.to_pylist()], np.float32)


def test_filter_table_counts_and_passthrough():
    n = 400
    t = pa.table({"id": [f"d{i}" for i in range(n)], "source": ["cc"] * n,
                  "text": pa.array(["good text" if i % 2 else "spam" for i in range(n)], pa.large_string()),
                  "url": pa.nulls(n, pa.string()), "meta": pa.nulls(n, pa.string())})
    cfg = QualityConfig()
    kept, rej, stats = filter_table(t, _FixedModel(), cfg, seed=0, filtered=True)
    assert kept.num_rows + rej.num_rows == n
    assert set(rej["reason"].to_pylist()) == {"quality"}
    assert all("good" in x for x in kept["text"].to_pylist())  # (2 - 0.999)^-9 ~ 0.99; spam ~ 0.002
    assert kept.num_rows > 180 and rej.num_rows > 190
    assert sum(stats["hist_kept"]) == kept.num_rows and sum(stats["hist_rejected"]) == rej.num_rows
    kept2, rej2, _ = filter_table(t, _FixedModel(), cfg, seed=0, filtered=True)
    assert kept2.equals(kept) and rej2.equals(rej)  # deterministic
    kept3, rej3, _ = filter_table(t, None, cfg, seed=0, filtered=False)  # a curated source passes through
    assert kept3.num_rows == n and rej3.num_rows == 0 and kept3["quality_score"].null_count == n
    kept4, rej4, _ = filter_table(t, _FixedModel(), cfg, seed=0, filtered=True, drop=False)  # score only
    assert kept4.num_rows == n and kept4["quality_score"].null_count == 0
