"""Heuristic pre-filters (Gopher/C4-style rules), vectorised over an Arrow batch.

Each rule has its own reject reason (``heuristic:<rule>``); a document gets the first rule it
fails, in the order below. All rules are optional (a ``None`` threshold turns one off); the GPT-3
preset turns the whole set off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
RULES = ("word_count", "mean_word_length", "symbol_ratio", "ellipsis_lines", "bullet_lines",
         "stop_words", "duplicate_lines")


def _per_row_sum(parents: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(parents, weights=values, minlength=n)


def heuristic_stats(text: pa.Array) -> dict[str, np.ndarray]:
    """Per document: words, mean word length, symbol/word ratio, fractions of ellipsis, bullet
    and duplicate lines, number of distinct stop words present."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    text = pc.fill_null(text, "")
    n = len(text)
    words = pc.utf8_split_whitespace(text)
    wparents = pc.list_parent_indices(words).to_numpy()
    wlen = pc.utf8_length(pc.list_flatten(words)).to_numpy(zero_copy_only=False).astype(np.float64)
    n_words = _per_row_sum(wparents, wlen > 0, n)  # runs of whitespace give empty pieces
    mean_wlen = _per_row_sum(wparents, wlen, n) / np.maximum(n_words, 1)
    symbols = (pc.count_substring(text, "#").to_numpy(zero_copy_only=False)
               + pc.count_substring(text, "...").to_numpy(zero_copy_only=False)
               + pc.count_substring(text, "\u2026").to_numpy(zero_copy_only=False))
    symbol_ratio = symbols / np.maximum(n_words, 1)

    lines = pc.split_pattern(text, "\n")
    lflat = pc.utf8_trim_whitespace(pc.list_flatten(lines))
    lparents = pc.list_parent_indices(lines).to_numpy()
    nonempty = pc.greater(pc.utf8_length(lflat), 0).to_numpy(zero_copy_only=False)
    n_lines = np.maximum(_per_row_sum(lparents, nonempty, n), 1)
    ellipsis = pc.or_(pc.ends_with(lflat, "..."), pc.ends_with(lflat, "\u2026")).to_numpy(zero_copy_only=False)
    bullet = pc.match_substring_regex(lflat, "^[\u2022\\-*\u00b7\u2023\u25aa\u25cf]").to_numpy(zero_copy_only=False)
    dup = pd.DataFrame({"p": lparents, "l": lflat.to_numpy(zero_copy_only=False)}).duplicated().to_numpy()
    stop = np.zeros(n)
    lower = pc.utf8_lower(text)
    for w in STOP_WORDS:
        stop += pc.match_substring_regex(lower, rf"\b{w}\b").to_numpy(zero_copy_only=False)
    return {
        "word_count": n_words,
        "mean_word_length": mean_wlen,
        "symbol_ratio": symbol_ratio,
        "ellipsis_lines": _per_row_sum(lparents, ellipsis & nonempty, n) / n_lines,
        "bullet_lines": _per_row_sum(lparents, bullet & nonempty, n) / n_lines,
        "stop_words": stop,
        "duplicate_lines": _per_row_sum(lparents, dup & nonempty, n) / n_lines,
    }


def heuristic_reasons(text: pa.Array, cfg) -> pa.Array:
    """Reject reason per document (``heuristic:<rule>``) or null when it passes every rule."""
    s = heuristic_stats(text)
    n = len(s["word_count"])
    fail = np.full(n, "", dtype=object)
    checks = [
        ("word_count", (s["word_count"] < (cfg.min_words or 0)) | (s["word_count"] > (cfg.max_words or np.inf))),
        ("mean_word_length", ((s["mean_word_length"] < (cfg.min_mean_word_length or 0))
                              | (s["mean_word_length"] > (cfg.max_mean_word_length or np.inf)))),
        ("symbol_ratio", s["symbol_ratio"] > (cfg.max_symbol_word_ratio if cfg.max_symbol_word_ratio is not None else np.inf)),
        ("ellipsis_lines", s["ellipsis_lines"] > (cfg.max_ellipsis_lines if cfg.max_ellipsis_lines is not None else np.inf)),
        ("bullet_lines", s["bullet_lines"] > (cfg.max_bullet_lines if cfg.max_bullet_lines is not None else np.inf)),
        ("stop_words", s["stop_words"] < (cfg.min_stop_words or 0)),
        ("duplicate_lines", s["duplicate_lines"] > (cfg.max_duplicate_line_fraction
                                                    if cfg.max_duplicate_line_fraction is not None else np.inf)),
    ]
    for rule, bad in reversed(checks):  # the first failing rule wins
        fail[bad] = f"heuristic:{rule}"
    return pa.array([f or None for f in fail], pa.string())
