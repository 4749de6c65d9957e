"""Pure pieces of the quality filter: preprocessing, deterministic hashing, the GPT-3 Pareto rule,
small logistic models, and evaluation metrics. No Ray here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from siftmix.pipeline.core.hashing import hash01

HQ, LQ = "__label__hq", "__label__lq"


# --------------------------------------------------------------------------- text

def preprocess(text: pa.Array | pa.ChunkedArray, max_chars: int = 20_000) -> pa.Array:
    """The one text preprocessing used at train and predict time (vectorised), as GPT-3's Spark
    Tokenizer did: lowercase, split on whitespace. Newlines become spaces (fastText reads one
    example per line); only the first ``max_chars`` characters are read."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    t = pc.fill_null(text, "")
    if (pc.max(pc.binary_length(t)).as_py() or 0) > max_chars:  # bytes >= characters: slice only if needed
        t = pc.utf8_slice_codeunits(t, 0, max_chars)
    t = pc.ascii_lower(t) if pc.all(pc.string_is_ascii(t)).as_py() else pc.utf8_lower(t)
    return _bytes_to_space(t, (10, 13))


def _bytes_to_space(arr: pa.Array, codes: tuple[int, ...]) -> pa.Array:
    """Replace single-byte characters (newlines) by spaces in one numpy pass over the data
    buffer; lengths and offsets are unchanged."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    validity, offsets, data = arr.buffers()
    if data is None:
        return arr
    buf = np.frombuffer(data, np.uint8).copy()
    hit = buf == codes[0]
    for c in codes[1:]:
        hit |= buf == c
    buf[hit] = 32
    return pa.Array.from_buffers(arr.type, len(arr), [validity, offsets, pa.py_buffer(buf)], arr.null_count, arr.offset)


# --------------------------------------------------------------------------- hashing

def pareto_keep_probability(score: np.ndarray, alpha: float = 9.0) -> np.ndarray:
    """P(numpy.random.pareto(alpha) > 1 - score) = (2 - score) ** -alpha (NumPy's pareto is Lomax)."""
    return np.power(2.0 - np.asarray(score, dtype=np.float64), -alpha)


def pareto_keep(score: np.ndarray, ids, seed: int, alpha: float = 9.0) -> np.ndarray:
    """GPT-3 appendix A: keep iff pareto(alpha) > 1 - score, drawn deterministically per id:
    keep iff u < (2 - score) ** -alpha with u = hash01(seed, id)."""
    return hash01(seed, "pareto", ids) < pareto_keep_probability(score, alpha)


# --------------------------------------------------------------------------- logistic models

def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method (IRLS) on a few features; returns [w..., b].
    Deterministic, no solver dependencies; l2 keeps it finite on separable data."""
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    X = np.hstack([x, np.ones((len(y), 1))])
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(X.shape[1])
    reg = l2 * np.eye(X.shape[1])
    reg[-1, -1] = 0
    for _ in range(iters):
        p = _sigmoid(X @ w)
        g = X.T @ (p - y) + reg @ w
        H = (X * (p * (1 - p))[:, None]).T @ X + reg + 1e-9 * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def apply_logistic(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return _sigmoid(x @ np.asarray(w[:-1]) + w[-1])


# --------------------------------------------------------------------------- metrics

def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_report(y: np.ndarray, score: np.ndarray, threshold: float = 0.5, alpha: float = 9.0, bins: int = 20) -> dict:
    """What eval.json holds for one scorer: AUC, accuracy / precision / recall at the threshold,
    the expected Pareto keep rate per class, and score histograms per class."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    pred = score >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    edges = np.linspace(0, 1, bins + 1)
    keep = pareto_keep_probability(score, alpha)
    return {
        "n": int(len(y)), "n_positive": int(y.sum()), "n_negative": int((~y).sum()),
        "roc_auc": roc_auc(y, score),
        "threshold": threshold,
        "accuracy": (tp + tn) / max(1, len(y)),
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "pareto_alpha": alpha,
        "expected_keep_rate": {"positive": float(keep[y].mean()) if y.any() else None,
                               "negative": float(keep[~y].mean()) if (~y).any() else None},
        "histogram": {"edges": [round(e, 3) for e in edges.tolist()],
                      "positive": np.histogram(score[y], edges)[0].tolist(),
                      "negative": np.histogram(score[~y], edges)[0].tolist()},
    }
