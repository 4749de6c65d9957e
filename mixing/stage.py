"""The mix stage on the core contract: count tokens, plan epochs per source, sample
deterministically, shuffle by hash across sources, write Parquet (and token) shards.

Three passes through Ray: ``count`` (pieces, token counts, hash-bucket token sums per source),
``assign`` (repeats and shuffle keys, key-range partitions), ``shards`` (sort each partition by
key, cut shards of ``mix.shard_tokens``). The plan is written (plan.json) before any data moves.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.core.hashing import hash01
from siftmix.pipeline.core.htmlkit import Series, esc, hbar_chart, k, n, table
from siftmix.pipeline.core.shards import PARQUET_OPTIONS, ShardRef
from siftmix.pipeline.core.stage import Stage, StageContext

from .config import MixConfig
from .mix import (
    MIX_SCHEMA,
    N_BUCKETS,
    PlanError,
    assign,
    bucket_token_sums,
    find_threshold,
    make_pieces,
    megatron_dtype,
    megatron_index,
    partition_of,
    plan_mixture,
    read_megatron_index,
    refine_threshold,
    repeats_of,
    shard_boundaries,
    shuffle_keys,
    sort_partition,
    split_text,
    table_2_2,
    token_stream,
)
from .tokenizer import get_tokenizer


@dataclass(frozen=True)
class Partition:
    """One shuffle partition of the shard pass: its number and folder of piece files."""

    partition: int
    dir: str


def _ipc(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def _pieces_task(shard: ShardRef, mix: MixConfig, seed: int, out_dir: str) -> dict:
    tok = get_tokenizer(mix.tokenizer)
    pf = storage.parquet_file(shard.path)
    dest = storage.join(out_dir, "pieces", shard.name + ".parquet")
    writer, sums, tokens, docs = None, {}, Counter(), Counter()
    for batch in pf.iter_batches(batch_size=512, columns=["id", "source", "text"]):
        pieces = make_pieces(pa.Table.from_batches([batch]), tok, seed, mix.split_chars, mix.tokenized)
        if writer is None:
            writer = storage.parquet_writer(dest, pieces.schema, compression="zstd")
        writer.write_table(pieces)
        for src, arr in bucket_token_sums(pieces).items():
            sums[src] = sums.get(src, 0) + arr
        for src, nt in zip(pieces["source"].to_pylist(), pieces["n_tokens"].to_pylist()):
            tokens[src] += nt
            docs[src] += 1
    if writer is not None:
        writer.close()
    return {"file": dest if writer is not None else None, "tokens": dict(tokens), "pieces": dict(docs),
            "bucket_sums": {s: v.astype(np.int64).tobytes() for s, v in sums.items()}}


def _candidates_task(path: str, buckets: dict) -> bytes | None:
    t = storage.read_table(path, columns=["id", "source", "h", "n_tokens"])
    out = [t.filter(pc.and_(pc.equal(t["source"], src), pc.and_(pc.greater_equal(t["h"], b / N_BUCKETS),
                                                                 pc.less(t["h"], (b + 1) / N_BUCKETS))))
           for src, b in buckets.items()]
    return _ipc(pa.concat_tables(out)) if out else None


def _assign_task(path: str, copies: dict, tau: dict, seed: int, n_partitions: int, out_dir: str) -> list[int]:
    pf = storage.parquet_file(path)
    name = storage.basename(path).removesuffix(".parquet")
    writers = {}
    for batch in pf.iter_batches(batch_size=2048):
        t = assign(pa.Table.from_batches([batch]), copies, tau, seed, n_partitions)
        part = t["partition"].to_numpy()
        for p in np.unique(part):
            sub = t.filter(pa.array(part == p)).drop_columns(["partition", "h"])
            if p not in writers:
                path_p = storage.join(out_dir, "parts", f"p{int(p):05d}", f"{name}.parquet")
                writers[p] = storage.parquet_writer(path_p, sub.schema, compression="zstd")
            writers[p].write_table(sub)
    for w in writers.values():
        w.close()
    return sorted(int(p) for p in writers)


def _shard_task(task: Partition, mix: MixConfig, out_dir: str) -> dict:
    t = sort_partition(storage.read_tables(storage.list_files(task.dir)))
    tok = get_tokenizer(mix.tokenizer) if mix.tokenized else None
    out, tokens, docs = [], Counter(), Counter()
    for i, (a, b) in enumerate(shard_boundaries(t["n_tokens"].to_numpy(), mix.shard_tokens)):
        part = t.slice(a, b - a)
        name = storage.join(out_dir, "shards", f"shard-{task.partition:05d}-{i:05d}")
        storage.write_table(part.select(MIX_SCHEMA.names).cast(MIX_SCHEMA), name + ".parquet",
                            **{**PARQUET_OPTIONS, "use_dictionary": ["source"]})
        if tok is not None:
            ids, offsets = token_stream(part["tokens"], tok.eot, tok.dtype)
            if mix.token_format == "megatron":
                ids = ids.astype(megatron_dtype(tok.n_vocab), copy=False)
                storage.write_array(name + ".bin", ids)
                storage.write_bytes(name + ".idx", megatron_index(np.diff(offsets), ids.dtype))
            else:
                storage.write_array(name + ".bin", ids)
                storage.write_array(name + ".idx.npy", offsets, npy=True)
        nt = part["n_tokens"].to_numpy()
        for src, c in zip(part["source"].to_pylist(), nt):
            tokens[src] += int(c)
            docs[src] += 1
        keys = part["key"]
        # the shard's first and last shuffle key: `siftmix trace` finds a row's shard from its key
        out.append({"file": storage.basename(name) + ".parquet", "rows": part.num_rows, "tokens": int(nt.sum()),
                    "key_first": int(keys[0].as_py()), "key_last": int(keys[-1].as_py())})
    return {"partition": task.partition, "shards": out, "tokens": dict(tokens), "documents": dict(docs)}


class MixStage(Stage):
    name = "mix"
    folder = "40_mix"
    config_key = "mix"
    config_model = MixConfig
    counts_follow_input = False  # counts pieces and tokens, not documents kept / rejected
    help = """Mix the output of the previous stage into training shards by token weights (GPT-3 Table 2.2).

    Counts GPT-2 tokens, plans epochs per source (printed and written to plan.json before any
    data moves), samples deterministically, shuffles across sources and writes
    RUN_DIR/40_mix/shards/*.parquet (+ token ids: .bin + .idx in Megatron's indexed-dataset
    format, or .bin + .idx.npy offsets with mix.token_format: npy).

    Examples:

        siftmix mix configs/demo.yaml

        siftmix mix configs/gpt3.yaml --workers 64
    """

    def check(self, cfg) -> None:
        names = [s.name for s in cfg.sources]
        missing = [n for n in names if n not in cfg.mix.weights]
        unknown = [n for n, w in cfg.mix.weights.items() if n not in names and w > 0]
        if missing:
            raise ValueError(f"mix.weights: no weight for source(s) {', '.join(missing)} "
                             "(give each source a weight; 0 excludes it)")
        if unknown:
            raise ValueError(f"mix.weights: weight given to {', '.join(unknown)}, which is not a configured source")

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "mix", "seed": cfg.seed, "mix": cfg.mix.model_dump()}

    def _count(self, ctx: StageContext) -> tuple[list, Counter, Counter, dict]:
        """Pass 1: pieces, token counts, hash-bucket token sums (folded in as results arrive:
        the driver keeps one bucket array per source)."""
        counted, available, pieces_n, sums = [], Counter(), Counter(), {}
        for r in ctx.map(_pieces_task, ctx.input_shards(), label="count", unit="shards",
                         fn_kwargs={"mix": ctx.cfg.mix, "seed": ctx.cfg.seed, "out_dir": ctx.tmp}):
            for s, arr in r.pop("bucket_sums").items():
                sums[s] = sums.get(s, 0) + np.frombuffer(arr, dtype=np.int64)
            available.update(r["tokens"])
            pieces_n.update(r["pieces"])
            counted.append(r)
        return counted, available, pieces_n, sums

    def _plan(self, ctx: StageContext, available: Counter, sums: dict, piece_files: list[str]):
        """The plan (written to plan.json and logged) and the sampling thresholds: pieces with
        h < tau[s] are taken once more than floor(epochs)."""
        mx = ctx.cfg.mix
        caps = {s: mx.epoch_cap(s) for s in set(available) | set(mx.weights)}
        try:
            total, plans = plan_mixture(dict(available), mx.weights, mx.total_tokens, caps)
        except PlanError as err:
            raise StageError(f"mix: {err}") from None
        plan_doc = {"total_tokens": total, "sources": [p.__dict__ for p in plans], "tokenizer": mx.tokenizer}
        storage.write_json(ctx.path("plan.json"), plan_doc)
        ctx.log("mix: plan (written before any data moves):\n" + "\n".join(
            f"  {p.source:<16} {p.available_tokens:>14,} tokens  weight {p.weight:>6.1%}  epochs {p.epochs:6.3f}"
            for p in plans) + f"\n  total {total:,} tokens")
        copies = {p.source: p.full_copies for p in plans}
        tau, buckets, before = {}, {}, {}
        for p in plans:
            if p.weight == 0 or p.available_tokens == 0:
                tau[p.source], copies[p.source] = 0.0, 0
                continue
            buckets[p.source], before[p.source] = find_threshold(sums[p.source], p.fraction_tokens)
        if buckets:
            cands = [pa.ipc.open_stream(r).read_all() for r in ctx.map(_candidates_task, piece_files,
                                                                      fn_kwargs={"buckets": buckets}) if r]
            cand = pa.concat_tables(cands) if cands else None
            for s, b in buckets.items():
                rows = cand.filter(pc.equal(cand["source"], s)) if cand is not None else pa.table(
                    {"id": pa.array([], pa.string()), "h": pa.array([], pa.float64()), "n_tokens": pa.array([], pa.int64())})
                tau[s] = refine_threshold(rows, b, before[s], next(p.fraction_tokens for p in plans if p.source == s))
        for s in available:
            copies.setdefault(s, 0)
            tau.setdefault(s, 0.0)
        return plans, plan_doc, copies, tau

    def run(self, ctx: StageContext) -> dict:
        mx, seed, by_src = ctx.cfg.mix, ctx.cfg.seed, ctx.upstream.manifest["counts"]["by_source"]
        counted, available, pieces_n, sums = self._count(ctx)
        piece_files = [r["file"] for r in counted if r["file"]]
        plans, plan_doc, copies, tau = self._plan(ctx, available, sums, piece_files)
        # pass 2: repeats, shuffle keys, key-range partitions
        est_bytes = sum(p.epochs * by_src.get(p.source, {}).get("bytes_kept", 0) for p in plans)
        n_parts = max(1, math.ceil(est_bytes / mx.partition_bytes))
        parts = set()
        for r in ctx.map(_assign_task, piece_files, fn_kwargs={"copies": copies, "tau": tau, "seed": seed,
                                                              "n_partitions": n_parts, "out_dir": ctx.tmp}):
            parts.update(r)
        # pass 3: sort each partition by key, cut shards
        tasks = [Partition(p, ctx.path("parts", f"p{p:05d}")) for p in sorted(parts)]
        written = sorted(ctx.map(_shard_task, tasks, label="shards", unit="partitions",
                                 fn_kwargs={"mix": mx, "out_dir": ctx.tmp}), key=lambda r: r["partition"])
        storage.remove(ctx.path("pieces"))
        storage.remove(ctx.path("parts"))
        return self._manifest(mx, seed, plans, plan_doc, available, pieces_n, written, copies, tau, n_parts)

    def _manifest(self, mx, seed, plans, plan_doc, available, pieces_n, written, copies, tau, n_parts) -> dict:
        tokens, docs = Counter(), Counter()
        for r in written:
            tokens.update(r["tokens"])
            docs.update(r["documents"])
        total_out = sum(tokens.values()) or 1
        realized = {s: {"tokens": int(tokens.get(s, 0)), "documents": int(docs.get(s, 0)),
                        "share": tokens.get(s, 0) / total_out,
                        "epochs": tokens.get(s, 0) / available[s] if available.get(s) else 0.0}
                    for s in sorted(set(available) | set(mx.weights))}
        tok_dtype = np.dtype(get_tokenizer(mx.tokenizer).dtype) if mx.tokenized else np.dtype(np.uint16)
        if mx.tokenized and mx.token_format == "megatron":
            tok_dtype = megatron_dtype(get_tokenizer(mx.tokenizer).n_vocab)
        dtype = tok_dtype.name
        return {
            "config": {"mix": mx.model_dump(), "seed": seed}, "plan": plan_doc,
            "counts": {"in": sum(pieces_n.values()), "tokens_available": int(sum(available.values())),
                       "tokens": int(sum(tokens.values())), "rows": int(sum(docs.values())),
                       "by_source": {s: {"pieces_in": int(pieces_n.get(s, 0)), "tokens_available": int(available.get(s, 0)),
                                         **realized[s], "target_weight": mx.weights.get(s, 0.0),
                                         "planned_epochs": next((p.epochs for p in plans if p.source == s), 0.0),
                                         "threshold": tau.get(s), "full_copies": copies.get(s)}
                                     for s in sorted(realized)}},
            "table_2_2": table_2_2(plans, realized),
            "tokenized": {"enabled": mx.tokenized, "format": mx.token_format, "tokenizer": mx.tokenizer, "dtype": dtype,
                          "eot_after_each_document": True},
            "shards": [sh for r in written for sh in r["shards"]],
            "partitions": n_parts,
        }

    def locate(self, stage_dir: str, m: dict, docs: list[dict]) -> list[dict]:
        """Where the documents that reached this stage sit in the mix (for `siftmix trace`): per
        piece and repeat, the shard, the row (= Megatron document) and the token offset. The
        plan in the manifest gives the pieces and repeats, the shuffle key gives the partition,
        the shards' key ranges the shard: one shard is read per appearance."""
        seed, mx = m["config"]["seed"], m["config"]["mix"]
        by = m["counts"]["by_source"]
        copies = {s: v.get("full_copies") or 0 for s, v in by.items()}
        tau = {s: v.get("threshold") if v.get("threshold") is not None else 0.0 for s, v in by.items()}
        shards = m.get("shards", [])
        out = []
        for d in docs:
            parts = split_text(d["text"], mx["split_chars"])
            ids = [d["id"]] if len(parts) == 1 else [f"{d['id']}@{k}" for k in range(len(parts))]
            h = hash01(seed, "mix", ids)
            reps = repeats_of([d["source"]] * len(ids), np.asarray(h), copies, tau) if d["source"] in by else [0] * len(ids)
            for pid, ptext, n_rep in zip(ids, parts, reps):
                piece = {"piece": pid, "from": d["id"], "chars": len(ptext), "repeats": int(n_rep), "appearances": []}
                for r in range(int(n_rep)):
                    key = int(shuffle_keys(seed, [pid], [r])[0])
                    p = int(partition_of(np.array([key], np.uint64), m.get("partitions", 1))[0])
                    piece["appearances"].append({"repeat": r, **self._find(stage_dir, m, shards, p, key, pid, r)})
                out.append(piece)
        return out

    def _find(self, stage_dir: str, m: dict, shards: list[dict], p: int, key: int, pid: str, r: int) -> dict:
        prefix = f"shard-{p:05d}-"
        cands = [sh for sh in shards if sh["file"].startswith(prefix)
                 and ("key_first" not in sh or sh["key_first"] <= key <= sh["key_last"])]
        for sh in cands:
            path = storage.join(stage_dir, m["attempt"], "shards", sh["file"])
            t = storage.read_table(path, columns=["id", "repeat"])
            hit = np.flatnonzero(pc.and_(pc.equal(t["id"], pid), pc.equal(t["repeat"], r)).to_numpy(zero_copy_only=False))
            if len(hit):
                row = int(hit[0])
                where = {"shard": sh["file"], "row": row, "shards_read": len(cands)}
                tok = m.get("tokenized") or {}
                base = path.removesuffix(".parquet")
                if tok.get("enabled") and tok.get("format", "npy") == "megatron":
                    idx = read_megatron_index(storage.read_bytes(base + ".idx"))
                    where.update(token_offset=int(idx["pointers"][row] // idx["dtype"].itemsize),
                                 tokens=int(idx["lengths"][row]), bin=storage.basename(base) + ".bin")
                elif tok.get("enabled"):
                    offsets = np.load(io.BytesIO(storage.read_bytes(base + ".idx.npy")))
                    where.update(token_offset=int(offsets[row]), tokens=int(offsets[row + 1] - offsets[row]),
                                 bin=storage.basename(base) + ".bin")
                return where
        return {"shard": None, "shards_read": len(cands)}

    def summary(self, m: dict, out_dir: str) -> str:
        return f"mix: {m['counts']['tokens']:,} tokens in {len(m['shards'])} shards\n" + m["table_2_2"]

    def report(self, run_dir: str, folder: str, m: dict) -> str:
        c = m.get("counts", {})
        by = c.get("by_source") or {}
        rows = [f'<tr><td>{esc(s)}</td><td{k(f"mix.available.{s}")}>{n(v.get("tokens_available"))}</td>'
                f'<td{k(f"mix.target.{s}")}>{v.get("target_weight", 0):.1%}</td><td{k(f"mix.share.{s}")}>{v.get("share", 0):.2%}</td>'
                f'<td>{v.get("planned_epochs", 0):.2f}</td><td{k(f"mix.epochs.{s}")}>{v.get("epochs", 0):.2f}</td>'
                f'<td{k(f"mix.tokens.{s}")}>{n(v.get("tokens"))}</td><td>{n(v.get("documents"))}</td></tr>'
                for s, v in by.items()]
        rows.append(f'<tr><th>total</th><th>{n(c.get("tokens_available"))}</th><th>{sum(v.get("target_weight", 0) for v in by.values()):.1%}</th>'
                    f'<th>{sum(v.get("share", 0) for v in by.values()):.2%}</th><th></th><th></th>'
                    f'<th{k("mix.tokens")}>{n(c.get("tokens"))}</th><th>{n(c.get("rows"))}</th></tr>')
        tab = table(["dataset", "tokens available", "target weight", "realized weight", "planned epochs",
                     "realized epochs", "tokens in mix", "rows"], rows, ' id="table-2-2"')
        names = list(by)
        chart = hbar_chart(names, [Series("target", [100 * by[s].get("target_weight", 0) for s in names]),
                                   Series("realized", [100 * by[s].get("share", 0) for s in names])],
                           fmt=lambda v: f"{v:.2f}%", label="target vs realized token share", svg_id="mix-shares")
        printed = (f"<details><summary>as printed by the run</summary><pre>{esc(m['table_2_2'])}</pre></details>"
                   if m.get("table_2_2") else "")
        shards = m.get("shards")
        return (f"<h3>Mixture (GPT-3 Table 2.2)</h3><p>{n(c.get('tokens'))} tokens"
                + (f" in {len(shards):,} shards" if shards is not None else "")
                + f"; {n(c.get('in'))} pieces in. Weights are shares of training tokens; epochs = tokens in mix / tokens available.</p>"
                + tab + chart + printed)


MIX = MixStage()
