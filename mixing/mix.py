"""Mixing: token-weighted mixture with per-source epochs, deterministic sampling and shuffling.

Pure functions over Arrow tables and small dicts; :mod:`.stage` runs them through Ray in three
passes (count, sample + partition by shuffle key, sort + write shards).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import xxhash
from siftmix.pipeline.core.hashing import hash01

N_BUCKETS = 1 << 16  # hash01 buckets of the threshold search (bounded driver memory)

PIECE_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("text", pa.large_string()),
    pa.field("n_tokens", pa.int64()), pa.field("h", pa.float64()), pa.field("tokens", pa.large_binary()),
])
MIX_SCHEMA = pa.schema([
    pa.field("id", pa.string()), pa.field("source", pa.string()), pa.field("repeat", pa.int32()),
    pa.field("text", pa.large_string()), pa.field("n_tokens", pa.int64()),
])


class PlanError(ValueError):
    """A mixture that cannot be made from the data; the message says which source and by how much."""


# --------------------------------------------------------------------------- pieces

_WS = re.compile(r"\s")


def split_text(text: str, max_chars: int) -> list[str]:
    """Pieces of at most ~max_chars characters, cut at the last whitespace before the limit
    (a training context is ~2k tokens: mixing long books in pieces keeps the shares exact)."""
    if len(text) <= max_chars:
        return [text]
    out, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = max(text.rfind(" ", start + max_chars // 2, end), text.rfind("\n", start + max_chars // 2, end))
        cut = end if cut <= start else cut + 1
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def make_pieces(table: pa.Table, tokenizer, seed: int, split_chars: int, keep_tokens: bool) -> pa.Table:
    """Documents -> pieces (id ``<id>@<k>`` when split) with token counts, token ids (uint16/32
    bytes, optional) and the sampling hash h = hash01(seed, "mix", id)."""
    ids, srcs, texts = [], [], []
    for i, s, t in zip(table["id"].to_pylist(), table["source"].to_pylist(), table["text"].to_pylist()):
        parts = split_text(t, split_chars)
        if len(parts) == 1:
            ids.append(i)
            srcs.append(s)
            texts.append(t)
        else:
            for k, p in enumerate(parts):
                ids.append(f"{i}@{k}")
                srcs.append(s)
                texts.append(p)
    toks = tokenizer.encode(texts)
    n = np.fromiter((len(x) for x in toks), dtype=np.int64, count=len(toks))
    tok_bytes = [np.asarray(x, dtype=tokenizer.dtype).tobytes() for x in toks] if keep_tokens else [None] * len(toks)
    return pa.table({"id": pa.array(ids, pa.string()), "source": pa.array(srcs, pa.string()),
                     "text": pa.array(texts, pa.string()).cast(pa.large_string()), "n_tokens": pa.array(n),
                     "h": pa.array(hash01(seed, "mix", ids)), "tokens": pa.array(tok_bytes, pa.large_binary())},
                    schema=PIECE_SCHEMA)


def bucket_token_sums(pieces: pa.Table) -> dict[str, np.ndarray]:
    """Per source: tokens in each of N_BUCKETS hash buckets (what the threshold search needs)."""
    out = {}
    src = pieces["source"].to_numpy(zero_copy_only=False)
    h = pieces["h"].to_numpy()
    n = pieces["n_tokens"].to_numpy()
    b = np.minimum((h * N_BUCKETS).astype(np.int64), N_BUCKETS - 1)
    for s in np.unique(src):
        m = src == s
        out[str(s)] = np.bincount(b[m], weights=n[m], minlength=N_BUCKETS).astype(np.int64)
    return out


# --------------------------------------------------------------------------- the plan

@dataclass
class SourcePlan:
    source: str
    weight: float
    available_tokens: int
    epochs: float
    target_tokens: float

    @property
    def full_copies(self) -> int:
        return int(math.floor(self.epochs + 1e-12))

    @property
    def fraction_tokens(self) -> float:
        return self.target_tokens - self.full_copies * self.available_tokens


def plan_mixture(available: dict[str, int], weights: dict[str, float], total_tokens: int | None,
                 max_epochs: dict[str, float]) -> tuple[int, list[SourcePlan]]:
    """Epochs e_s = w_s T / A_s. T is given, or the largest T for which no source exceeds its
    epoch cap. A plan that needs more epochs than a cap fails naming the source and the shortfall."""
    total_w = sum(weights.values())
    if abs(total_w - 1.0) > 1e-6:
        raise PlanError(f"mix.weights must sum to 1 (they sum to {total_w:.6g})")
    for s, w in weights.items():
        if w < 0:
            raise PlanError(f"mix.weights.{s} is negative ({w})")
    extra = sorted(s for s in available if s not in weights and available[s] > 0)
    if extra:
        raise PlanError(f"source(s) {', '.join(extra)} reach the mix stage but have no mix.weights entry "
                        "(give each a weight; 0 excludes it)")
    missing = sorted(s for s, w in weights.items() if w > 0 and available.get(s, 0) == 0)
    if missing:
        raise PlanError(f"mix.weights gives weight to {', '.join(missing)}, but no tokens of "
                        f"{'it' if len(missing) == 1 else 'them'} reach the mix stage")
    live = {s: w for s, w in weights.items() if w > 0}
    if total_tokens is None:
        total_tokens = int(min(max_epochs[s] * available[s] / w for s, w in live.items()))
    plans = []
    short = []
    for s, w in sorted(weights.items()):
        a = available.get(s, 0)
        e = w * total_tokens / a if a else 0.0
        if e > max_epochs[s] + 1e-9:
            need = w * total_tokens / max_epochs[s]
            short.append(f"{s} needs {e:.2f} epochs of its {a:,} tokens for {w:.0%} of {total_tokens:,} "
                         f"(cap {max_epochs[s]:g}; short by {need - a:,.0f} tokens)")
        plans.append(SourcePlan(s, w, a, e, w * total_tokens))
    if short:
        raise PlanError("mixture not possible: " + "; ".join(short) +
                        ": add data, lower the weight, lower mix.total_tokens or raise mix.max_epochs")
    return total_tokens, plans


def find_threshold(bucket_sums: np.ndarray, target: float) -> tuple[int, float]:
    """(bucket b, tokens before it): the hash bucket in which the cumulative token count of the
    pieces, in hash order, reaches ``target``."""
    cum = np.cumsum(bucket_sums)
    b = int(np.searchsorted(cum, target, side="left"))
    b = min(b, len(bucket_sums) - 1)
    before = float(cum[b - 1]) if b > 0 else 0.0
    return b, before


def refine_threshold(candidates: pa.Table, bucket: int, before: float, target: float) -> float:
    """Exact threshold tau inside the bucket: pieces with h < tau are taken once more; tau is
    chosen so the taken tokens are as close to the target as one piece allows."""
    hi = (bucket + 1) / N_BUCKETS
    if candidates.num_rows == 0:
        return hi
    order = np.lexsort((candidates["id"].to_numpy(zero_copy_only=False), candidates["h"].to_numpy()))
    h = candidates["h"].to_numpy()[order]
    n = candidates["n_tokens"].to_numpy()[order]
    cum = before + np.concatenate([[0], np.cumsum(n)])  # tokens taken if the first k are included
    k = int(np.argmin(np.abs(cum - target)))
    return float(h[k]) if k < len(h) else hi


def repeats_of(sources, h: np.ndarray, copies: dict[str, int], tau: dict[str, float]) -> np.ndarray:
    """How many times each piece appears: copies[s], plus once more iff h < tau[s]."""
    return np.array([copies[s] + (hv < tau[s]) for s, hv in zip(sources, h)], dtype=np.int64)


def shuffle_keys(seed: int, ids, repeat) -> np.ndarray:
    """The shuffle key of each appearance: xxh64(seed, id, repeat) (uint64)."""
    prefix = f"{seed}\x00shuffle\x00".encode()
    return np.fromiter((xxhash.xxh64_intdigest(prefix + i.encode() + b"\x00" + str(int(r)).encode())
                        for i, r in zip(ids, repeat)), dtype=np.uint64, count=len(ids))


def partition_of(keys: np.ndarray, n_partitions: int) -> np.ndarray:
    """The shuffle partition of each key: its top bits (key ranges do not overlap across partitions)."""
    bits = max(1, (n_partitions - 1).bit_length())
    if n_partitions <= 1:
        return np.zeros(len(keys), np.int64)
    return (np.asarray(keys, np.uint64) >> np.uint64(64 - bits)).astype(np.int64) % n_partitions


def assign(pieces: pa.Table, copies: dict[str, int], tau: dict[str, float], seed: int, n_partitions: int) -> pa.Table:
    """Each piece appears copies[s] times plus once more iff h < tau[s]; each appearance gets its
    repeat index and a shuffle key xxh64(seed, id, repeat); the key's top bits pick the partition."""
    src = pieces["source"].to_numpy(zero_copy_only=False)
    reps = repeats_of(src, pieces["h"].to_numpy(), copies, tau)
    idx = np.repeat(np.arange(pieces.num_rows), reps)
    repeat = (np.arange(len(idx)) - np.repeat(np.cumsum(reps) - reps, reps)).astype(np.int32)
    out = pieces.take(pa.array(idx))
    keys = shuffle_keys(seed, out["id"].to_pylist(), repeat)
    part = partition_of(keys, n_partitions)
    return out.append_column("repeat", pa.array(repeat)).append_column("key", pa.array(keys)).append_column(
        "partition", pa.array(part))


def sort_partition(table: pa.Table) -> pa.Table:
    """Deterministic order inside a partition: by shuffle key, then id and repeat (ties)."""
    return table.sort_by([("key", "ascending"), ("id", "ascending"), ("repeat", "ascending")])


def shard_boundaries(n_tokens: np.ndarray, shard_tokens: int) -> list[tuple[int, int]]:
    """Row ranges of shards of about shard_tokens tokens (a shard ends at a document boundary)."""
    out, start, acc = [], 0, 0
    for i, n in enumerate(n_tokens):
        acc += int(n)
        if acc >= shard_tokens:
            out.append((start, i + 1))
            start, acc = i + 1, 0
    if start < len(n_tokens):
        out.append((start, len(n_tokens)))
    return out


def token_stream(tokens: pa.Array, eot: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-document token ids with <|endoftext|> after each; offsets[i] is where
    document i starts (len = documents + 1)."""
    parts, offsets, pos = [], [0], 0
    sep = np.array([eot], dtype=dtype)
    for b in tokens.to_pylist():
        arr = np.frombuffer(b, dtype=dtype)
        parts.append(arr)
        parts.append(sep)
        pos += len(arr) + 1
        offsets.append(pos)
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype)
    return ids, np.asarray(offsets, dtype=np.int64)


#: Megatron-LM / NeMo indexed dataset (``MMIDIDX``): header, version 1, dtype code.
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
                        np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7,
                        np.dtype(np.uint16): 8}


def megatron_dtype(n_vocab: int) -> np.dtype:
    """The token dtype of a Megatron ``.bin``: uint16 up to 65,536 ids, else int32 (the format has
    no uint32)."""
    return np.dtype(np.uint16) if n_vocab <= 65536 else np.dtype(np.int32)


def megatron_index(lengths: np.ndarray, dtype) -> bytes:
    """The ``.idx`` of a Megatron indexed dataset whose ``.bin`` holds the documents back to back:
    header, version, dtype code, sequence count, document count + 1, then int32 sequence
    lengths, int64 byte pointers and int64 document indices (one sequence per document, as
    Megatron's preprocess_data.py writes it)."""
    dtype = np.dtype(dtype)
    if dtype not in MEGATRON_DTYPE_CODES:
        raise ValueError(f"Megatron's indexed dataset has no dtype {dtype}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.min() < 0 or lengths.max() > np.iinfo(np.int32).max):
        raise ValueError("a sequence length does not fit Megatron's int32 lengths")
    n = len(lengths)
    pointers = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    doc_idx = np.arange(n + 1, dtype=np.int64)
    return b"".join([MEGATRON_HEADER, struct.pack("<Q", 1), struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]),
                     struct.pack("<Q", n), struct.pack("<Q", n + 1), lengths.astype("<i4").tobytes(),
                     pointers.astype("<i8").tobytes(), doc_idx.astype("<i8").tobytes()])


def read_megatron_index(data: bytes) -> dict:
    """The fields of a Megatron ``.idx`` (for ``siftmix trace`` and the tests): dtype, lengths,
    pointers, document indices."""
    if data[:9] != MEGATRON_HEADER:
        raise ValueError("not a Megatron indexed dataset index (no MMIDIDX header)")
    version, = struct.unpack_from("<Q", data, 9)
    code, = struct.unpack_from("<B", data, 17)
    n, n_docs = struct.unpack_from("<QQ", data, 18)
    off = 34
    lengths = np.frombuffer(data, dtype="<i4", count=n, offset=off)
    pointers = np.frombuffer(data, dtype="<i8", count=n, offset=off + 4 * n)
    doc_idx = np.frombuffer(data, dtype="<i8", count=n_docs, offset=off + 12 * n)
    dtype = next(d for d, c in MEGATRON_DTYPE_CODES.items() if c == code)
    return {"version": version, "dtype": dtype, "lengths": lengths, "pointers": pointers, "document_indices": doc_idx}


def table_2_2(plans: list[SourcePlan], realized: dict[str, dict]) -> str:
    """The mixture as GPT-3's Table 2.2: tokens, target weight, realized weight, epochs."""
    total = sum(r["tokens"] for r in realized.values()) or 1
    lines = [f"{'Dataset':<16}{'Tokens available':>18}{'Target weight':>15}{'Realized weight':>17}{'Epochs':>9}{'Tokens in mix':>15}",
             "-" * 90]
    for p in plans:
        r = realized.get(p.source, {"tokens": 0})
        lines.append(f"{p.source:<16}{p.available_tokens:>18,}{p.weight:>14.1%}{r['tokens'] / total:>16.2%}"
                     f"{(r['tokens'] / p.available_tokens if p.available_tokens else 0):>9.2f}{r['tokens']:>15,}")
    return "\n".join(lines)
