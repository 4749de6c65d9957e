"""The decontam stage (and its audit variant) on the core contract: GPT-3 appendix C.

Pass 1 (``scan``, Ray tasks) counts, per benchmark 13-gram, the training documents holding it
and finds the dirty benchmark examples; pass 2 (the shard pass, not for an audit) cuts the
collisions out. Writes audit.json / audit.md / audit.html beside the data.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pyarrow as pa
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.core.manifest import read_manifest, stage_path
from siftmix.pipeline.core.shards import Processed, ShardRef, ShardResult, ShardWorker, summarize
from siftmix.pipeline.core.stage import ShardStage, StageContext

from .appendix_c import NgramIndex
from .benchmarks import (
    BenchmarkError,
    benchmark_files,
    load_benchmarks,
    subset_files,
    write_subsets,
)
from .config import DecontamConfig
from .report import (
    BENCHMARK_HEAD,
    C1_HEAD,
    audit_warnings,
    benchmark_rows,
    build_audit,
    c1_rows_html,
    dirty_chart,
    esc,
    figure_4_2,
    write_reports,
)
from .scores import ScoresError, read_scores, score_files, table_c1
from .shard import excise_table, scan_shard


def _scan_task(shard: ShardRef, index: NgramIndex, cfg: DecontamConfig) -> dict:
    return scan_shard(shard.path, index, cfg)


class ExciseWorker(ShardWorker):
    def __init__(self, index: NgramIndex, ignored: np.ndarray, cfg: DecontamConfig, keep_text: bool, max_bytes: int):
        self.index, self.ignored, self.cfg, self.keep_text = index, ignored, cfg, keep_text
        self.batch_rows, self.max_bytes = cfg.batch_rows, max_bytes

    def extra_init(self) -> dict:
        # Counters, not dicts: the core adds a batch's Counter into these with .update (a dict's
        # .update would replace the count of a reason seen in an earlier batch)
        return {"chars_in": 0, "chars_rejected": 0, "rows_out": 0, "rejected_rows": Counter(),
                "rejected_in_part": Counter(), "documents_cut": 0, "collisions": 0, "ignored": 0}

    def process(self, batch: pa.Table, state) -> Processed:
        return excise_table(batch, self.index, self.ignored, self.cfg, self.keep_text)


class DecontamStage(ShardStage):
    name = "decontam"
    folder = "30_decontam"
    config_key = "decontam"
    config_model = DecontamConfig
    help = """Remove benchmark contamination from the training data (GPT-3 appendix C) and report it.

    Every 13-gram shared with a benchmark is cut out with 200 characters on each side; 13-grams in
    more than 10 documents are ignored as boilerplate. Writes RUN_DIR/30_decontam (data, rejected,
    audit.json, audit.md, audit.html).

    Examples:

        siftmix decontam configs/demo.yaml

        siftmix decontam configs/gpt3.yaml --workers 32
    """

    def __init__(self, audit_only: bool = False):
        self.audit_only = audit_only
        if audit_only:
            self.name, self.folder, self.input_of = "audit", "30_audit", "decontam"
            self.help = "Report which benchmark examples occur in a dataset; never changes the data."

    def enabled_by_default(self, cfg) -> bool:
        return bool(cfg.decontam.benchmarks)

    def check(self, cfg) -> None:
        if not cfg.decontam.benchmarks:
            raise ValueError("decontam.benchmarks: required when stages include decontam")

    def hash_inputs(self, cfg) -> dict:
        d = cfg.decontam
        return {"stage": "decontam", "audit_only": self.audit_only, "decontam": d.model_dump(),
                "benchmarks": storage.fingerprint(benchmark_files(d.benchmarks)),
                "scores": storage.fingerprint(score_files(d.scores)) if d.scores else None,
                "seed": cfg.seed if d.scores else None,  # the bootstrap's
                "keep_rejected_text": cfg.ingest.keep_rejected_text}

    def input_shards(self, ctx: StageContext) -> list[ShardRef]:
        return ctx.input_shards()

    def load(self, ctx: StageContext) -> dict:
        """The benchmarks, their n-gram index, the scores and the warnings (before any pass)."""
        d, name = ctx.cfg.decontam, self.name
        try:
            benches = load_benchmarks(d.benchmarks, d.fields)
        except (BenchmarkError, UnicodeDecodeError, OSError) as err:
            raise StageError(f"{name}: {err}") from None
        if not benches:
            raise StageError(f"{name}: no benchmark files found in {', '.join(d.benchmarks)}")
        return benchmark_side(benches, d, name, ctx.log)

    def prepare(self, ctx: StageContext) -> dict:
        d = ctx.cfg.decontam
        p = self.load(ctx)
        index = p["index"]
        all_h, all_c, dirty, rows = [], [], {}, 0
        shards = self.input_shards(ctx)
        for r in ctx.map(_scan_task, shards, label="scan", unit="shards", fn_kwargs={"index": index, "cfg": d}):
            all_h.append(np.frombuffer(r["hashes"], np.uint64))
            all_c.append(np.frombuffer(r["counts"], np.int64))
            rows += r["rows"]
            for k, v in r["dirty"].items():
                old = dirty.get(k)
                epochs = sorted(set(v.get("epochs", ())) | set(old.get("epochs", ()) if old else ())) if "epochs" in v else None
                if old is None or v["doc"] < old["doc"]:
                    dirty[k] = old = dict(v)
                if epochs is not None:
                    old["epochs"] = epochs
        h = np.concatenate(all_h) if all_h else np.zeros(0, np.uint64)
        c = np.concatenate(all_c) if all_c else np.zeros(0, np.int64)
        uh, inv = np.unique(h, return_inverse=True)
        docs_per_gram = np.bincount(inv, weights=c).astype(np.int64) if len(h) else np.zeros(0, np.int64)
        training = {"documents_in": ctx.upstream.kept if ctx.upstream else rows, "colliding_13grams": int(len(uh)),
                    "ngrams_ignored_as_boilerplate": int(np.sum(docs_per_gram > d.max_docs))}
        return {**p, "dirty": dirty, "ignored": uh[docs_per_gram > d.max_docs], "training": training, "rows": rows}

    def worker(self, ctx: StageContext, p: dict) -> ExciseWorker:
        cfg = ctx.cfg
        return ExciseWorker(p["index"], p["ignored"], cfg.decontam, cfg.ingest.keep_rejected_text, cfg.ingest.shard_max_bytes)

    def run(self, ctx: StageContext) -> dict:
        p = self.prepare(ctx)
        results = [] if self.audit_only else ctx.map_shards(self.worker(ctx, p), self.order(ctx, ctx.input_shards()),
                                                            label="excise")
        return self.finish(ctx, results, p)

    def finish(self, ctx: StageContext, results: list[ShardResult], p: dict) -> dict:
        dcfg, training = ctx.cfg.decontam.model_dump(), p["training"]
        if results:
            ex = [r.extra for r in results]
            chars_in, chars_kept = sum(e["chars_in"] for e in ex), sum(r.chars_kept for r in results)
            chars_rej = sum(e["chars_rejected"] for e in ex)
            if chars_in != chars_kept + chars_rej:
                raise StageError(f"decontam: characters do not add up ({chars_in} in, {chars_kept} kept, {chars_rej} rejected)")
            training.update({"documents_cut": sum(e["documents_cut"] for e in ex),
                             "documents_dropped": sum(sum(r.rejected.values()) for r in results),
                             "collisions": sum(e["collisions"] for e in ex), "collisions_ignored": sum(e["ignored"] for e in ex),
                             "chars_in": chars_in, "chars_kept": chars_kept, "chars_removed": chars_rej})
        audit = write_audit(p, training, dcfg, ctx.cfg.seed, ctx.tmp)
        table = audit["table_c1"]
        n = ctx.upstream.kept if ctx.upstream else p["rows"]
        counts = summarize(results) if results else {"in": n, "kept": n, "rejected": 0}
        if results:
            _count_rejected_in_part(counts, results)
        return {"config": {"decontam": dcfg}, "counts": counts, "training_side": training,
                "benchmarks": [{k: v for k, v in b.items() if k != "dirty_examples"} for b in audit["benchmarks"]],
                "warnings": audit["warnings"], "table_c1": table,
                "index": p["index_info"], "files": [r.to_json() for r in results]}

    def summary(self, m: dict, out_dir: str) -> str:
        t, bs = m["training_side"], m["benchmarks"]
        c1, warns = m.get("table_c1") or [], m.get("warnings") or []
        return (f"{self.name}: {sum(b['dirty'] for b in bs)} dirty benchmark examples across {len(bs)} benchmarks"
                + ("" if self.audit_only else f"; {t['documents_cut']} training documents cut, "
                   f"{t['documents_dropped']} dropped, {t['ngrams_ignored_as_boilerplate']} boilerplate 13-grams ignored")
                + (f"; Table C.1: {len(c1)} rows, {sum(r['flagged'] for r in c1)} flagged" if c1 else "")
                + (f"; {len(warns)} warnings" if warns else "")
                + f"; report: {storage.join(out_dir, m['attempt'], 'audit.html')}")

    def report(self, run_dir: str, folder: str, m: dict) -> str:
        bs = m.get("benchmarks") or []
        audit = storage.join(folder, m["attempt"], "audit.html")
        link = f' · <a href="{audit}">audit.html</a> (every dirty example)' if storage.exists(storage.join(run_dir, audit)) else ""
        training = "".join(f"<li>{esc(k.replace('_', ' '))}: {esc(f'{v:,}' if isinstance(v, int) else v)}</li>"
                           for k, v in (m.get("training_side") or {}).items())
        part = (m.get("counts") or {}).get("rejected_in_part_by_reason") or {}
        part_html = ("<h3>Cut in part by reason</h3><p>documents whose contaminated text was cut out (their pieces "
                     "are kept, so they count as kept above)</p><table class=\"sortable\"><thead><tr><th>reason</th>"
                     "<th>documents</th></tr></thead><tbody>"
                     + "".join(f'<tr><td>{esc(r)}</td><td data-k="{esc(f"{self.name}.in_part.{r}")}">{v:,}</td></tr>'
                               for r, v in sorted(part.items(), key=lambda kv: (-kv[1], kv[0])))
                     + "</tbody></table>") if part else ""
        warns = "".join(f"<li>{esc(w['message'])}</li>" for w in m.get("warnings") or [])
        c1 = m.get("table_c1") or []
        c1_html = (f'<h3>Clean vs all (Table C.1)</h3><table class="sortable"><thead><tr>'
                   f'{"".join(f"<th>{esc(h)}</th>" for h in C1_HEAD)}</tr></thead><tbody>{c1_rows_html(c1)}</tbody></table>'
                   + figure_4_2(c1, svg_id=f"{self.name}-figure-4-2")) if c1 else ""
        return (f"<h3>Contamination per benchmark</h3><p>GPT-3 appendix C: an example is dirty if one of its "
                f"N-grams occurs in the training data{link}</p>" + (f"<h3>Warnings</h3><ul>{warns}</ul>" if warns else "")
                + part_html
                + f'<table class="sortable">{BENCHMARK_HEAD}<tbody>{benchmark_rows(bs, key=self.name)}</tbody></table>'
                + dirty_chart(bs, svg_id=f"{self.name}-dirty") + c1_html
                + (f"<h3>Training side</h3><ul>{training}</ul>" if training else ""))


def benchmark_side(benches: list, d: DecontamConfig, name: str = "audit", log=None) -> dict:
    """The benchmark side of appendix C for loaded benchmarks: their n-gram index (each
    benchmark's N), the scores and the warnings; what every audit (scan, index, service) starts from."""
    log = log or (lambda _msg: None)
    seen: dict[str, str] = {}
    for b in benches:  # a name is a benchmark's key in the reports, the scores and clean/<name>
        if b.name in seen:
            raise StageError(f"{name}: two benchmark files are both named {b.name!r}: {seen[b.name]} and {b.path}")
        seen[b.name] = b.path
    t0 = time.time()
    index = NgramIndex.build(benches, d.min_n, short=d.short_examples)
    index_s = time.time() - t0
    index_bytes = sum(a.nbytes for t in index.tables.values() for a in t)
    log(f"{name}: {len(benches)} benchmarks, {sum(len(b.texts) for b in benches):,} examples, "
        f"{len(index.tables[13][0]):,} 13-grams indexed in {index_s:.1f}s ({index_bytes / 2**20:.1f} MiB)")
    try:  # before any pass: a bad scores file fails at once
        scores = read_scores(d.scores, benches, d.fields) if d.scores else None
    except (ScoresError, OSError) as err:
        raise StageError(f"{name}: {err}") from None
    warnings = audit_warnings(benches, index, d.short_examples) + (scores.warnings if scores else [])
    for w in warnings:
        log(f"{name}: warning: {w['message']}")
    return {"benches": benches, "index": index, "scores": scores, "warnings": warnings,
            "index_info": {"build_s": round(index_s, 3), "bytes": int(index_bytes),
                           "ngrams_13": int(len(index.tables[13][0]))}}


def write_audit(p: dict, training: dict, dcfg: dict, seed: int, folder: str, subsets: bool = True) -> dict:
    """audit.json, audit.md, audit.html and the clean/dirty subsets in ``folder`` from the dirty
    examples an audit found (``p``: :func:`benchmark_side` plus ``dirty``); returns audit.json's dict.
    ``subsets=False`` (the service, which answers with a report only): the subsets are named in the
    report but not written (writing them is half of an audit's time against an index)."""
    benches = p["benches"]
    dirty_sets: dict[str, set[int]] = {b.name: set() for b in benches}
    for k in p["dirty"]:
        bi, e = k.split(":")
        dirty_sets[benches[int(bi)].name].add(int(e))
    files = {b.name: write_subsets(b, dirty_sets[b.name], folder) if subsets else subset_files(b) for b in benches}
    scores = p["scores"]
    table = table_c1(scores, dirty_sets, seed, order=[b.name for b in benches]) if scores else []
    audit = build_audit(benches, p["index"], p["dirty"], training,
                        {k: v for k, v in dcfg.items() if k != "batch_rows"}, warnings=p["warnings"], table=table,
                        files=files, scores_files=scores.files if scores else [])
    write_reports(audit, folder)
    return audit


def _count_rejected_in_part(counts: dict, results: list[ShardResult]) -> None:
    """Documents cut but kept in part (their pieces go on; in = kept + rejected counts them as
    kept) by reason ``contaminated:<benchmark>``, in total and per source, beside
    ``rejected_by_reason`` (documents dropped whole)."""
    total: Counter = Counter()
    for r in results:
        part = Counter(r.extra.get("rejected_in_part") or {})
        total.update(part)
        s = counts["by_source"][r.source]
        s.setdefault("rejected_in_part_by_reason", Counter()).update(part)
    for s in counts["by_source"].values():
        by = dict(sorted(s.pop("rejected_in_part_by_reason", Counter()).items()))
        s["rejected_in_part"], s["rejected_in_part_by_reason"] = sum(by.values()), by
    counts["rejected_in_part"], counts["rejected_in_part_by_reason"] = sum(total.values()), dict(sorted(total.items()))


class FolderAuditStage(DecontamStage):
    """``siftmix audit -i RUN_DIR/<stage folder>``: the audit of a finished stage's output where it
    is (not ingested again). For the training mix (``RUN_DIR/40_mix``: its shards, pieces and
    repeats) each dirty example counts once per epoch (repeat) in which it is seen."""

    reads_upstream = False
    counts_follow_input = False

    def __init__(self, stage_dir: str):
        super().__init__(audit_only=True)
        self.stage_dir = stage_dir.rstrip("/")
        self.help = "Report which benchmark examples occur in a finished stage's output (RUN_DIR/40_mix, ...)."

    def _manifest(self) -> dict:
        m = read_manifest(self.stage_dir)
        if m is None:
            raise StageError(f"audit: {self.stage_dir} is not a finished stage folder")
        return m

    def hash_inputs(self, cfg) -> dict:
        return {**super().hash_inputs(cfg), "stage_folder": self.stage_dir}

    def input_fingerprint(self, cfg, upstream) -> str:
        return self._manifest()["output_fingerprint"]

    def input_shards(self, ctx: StageContext) -> list[ShardRef]:
        m = self._manifest()
        sub = "shards/" if m.get("stage") == "mix" else "data/"
        outs = sorted((o for o in m.get("outputs", []) if o["path"].startswith(sub) and o["path"].endswith(".parquet")),
                      key=lambda o: o["path"])
        return [ShardRef(path=stage_path(self.stage_dir, m, o["path"]), name=storage.basename(o["path"]).removesuffix(".parquet"),
                         source=m.get("stage", "stage"), index=i, size=o["size"]) for i, o in enumerate(outs)]


def is_stage_folder(path: str) -> bool:
    """A finished stage folder of a run (its committed manifest names its data)."""
    return read_manifest(path) is not None


DECONTAM = DecontamStage()
AUDIT = DecontamStage(audit_only=True)
