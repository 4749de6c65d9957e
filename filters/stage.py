"""The quality stage on the core contract: train (or reuse) the model, score the filtered
sources through an actor pool (the model loaded once per actor), keep by the GPT-3 Pareto rule;
other sources pass through with a null score."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import StageError, TaskError
from siftmix.pipeline.core.htmlkit import Series, column_chart, esc, pct
from siftmix.pipeline.core.shards import Processed, ShardRef, ShardResult, ShardWorker, summarize
from siftmix.pipeline.core.stage import ShardStage, StageContext, reasons_text

from .config import QualityConfig
from .quality import (
    QualityModel,
    balance,
    filter_table,
    quality_schema,
    sample_examples,
    train_model,
)

COLUMNS = ["id", "source", "text", "url", "meta"]


def quality_classes(cfg) -> tuple[list[str], list[str]]:
    """(positive sources: the curated reference, negative sources: the raw crawl), checked."""
    t = cfg.quality.train
    names = {s.name for s in cfg.sources}
    pos = t.positive_sources or [s.name for s in cfg.sources if not s.filter]
    neg = t.negative_sources or [s.name for s in cfg.sources if s.filter]
    for n in pos + neg:
        if n not in names:
            raise StageError(f"quality.train: unknown source {n!r} (sources: {', '.join(sorted(names))})")
    if not pos or not neg:
        raise StageError("quality: training needs positive sources (filter: false, the curated reference) and "
                         "negative sources (filter: true, raw crawl); set quality.train.positive_sources / "
                         "negative_sources or give a trained model with quality.model")
    return pos, neg


# --------------------------------------------------------------------------- training (Ray tasks)

def _sample_task(shard: ShardRef, out_dir: str, pos: list[str], neg: list[str], rates: dict, seed: int,
                 chunk_chars: int) -> int:
    """One shard's candidate training examples, written beside the model (not sent back)."""
    t = storage.read_table(shard.path, columns=["id", "source", "text"])
    ex = sample_examples(t, set(pos), set(neg), rates, seed, chunk_chars)
    if ex.num_rows:
        storage.write_table(ex, storage.join(out_dir, shard.name + ".parquet"), compression="lz4")
    return ex.num_rows


def _train_task(files: list[str], q: QualityConfig, seed: int, out: str) -> dict:
    """Balance the sampled examples and train, in one task: the driver never holds the text."""
    examples = storage.read_tables(files).sort_by("id")  # task completion order must not matter
    examples = balance(examples, q.train.max_docs_per_class, seed)
    with storage.local_folder(out) as local:  # fasttext writes by file name: a local folder, uploaded after
        result = train_model(examples, q, seed, local, log=lambda *_: None)
    n_pos = int(pa.compute.sum(examples["label"]).as_py())
    return {**result, "examples": {"total": examples.num_rows, "positive": n_pos}}


def train_quality(ctx: StageContext, out_model_dir: str) -> dict:
    """Sample balanced examples from the upstream shards (tasks write them beside the model
    folder) and train the model in one task; writes the model folder, returns its eval.json
    content. The driver holds counts only (bounded memory whatever the corpus)."""
    cfg, up, log = ctx.cfg, ctx.upstream, ctx.log
    pos, neg = quality_classes(cfg)
    t = cfg.quality.train
    by_src = up.manifest["counts"]["by_source"]

    def expected(names):  # examples a class can give: documents plus extra chunks of long ones
        return sum(by_src.get(n, {}).get("kept", 0) + by_src.get(n, {}).get("chars_kept", 0) // t.chunk_chars for n in names)

    rates = {1: min(1.0, 1.5 * t.max_docs_per_class / max(1, expected(pos))),
             0: min(1.0, 1.5 * t.max_docs_per_class / max(1, expected(neg)))}
    samples = out_model_dir.rstrip("/") + ".samples"
    storage.remove(samples)
    storage.makedirs(samples)
    try:
        shards = [s for s in ctx.input_shards() if s.source in pos or s.source in neg]
        n = sum(ctx.map(_sample_task, shards, fn_kwargs={"out_dir": samples, "pos": pos, "neg": neg, "rates": rates,
                                                         "seed": cfg.seed, "chunk_chars": t.chunk_chars}))
        files = storage.list_files(samples)
        if n == 0 or not files:
            raise StageError("quality: no training examples (are the positive and negative sources empty?)")
        log(f"quality: training {cfg.quality.scorer} on a balanced sample of {n:,} candidate examples "
            f"(reference: {', '.join(pos)}; crawl: {', '.join(neg)})")
        try:
            (result,) = ctx.map(_train_task, [files], fn_kwargs={"q": cfg.quality, "seed": cfg.seed, "out": out_model_dir},
                                num_cpus=cfg.quality.fasttext.threads)
        except TaskError as err:  # a training failure is one line, not a Ray traceback
            cause = err.cause or err
            raise StageError(f"quality: training failed: {type(cause).__name__}: {str(cause).splitlines()[0]}") from None
    finally:
        storage.remove(samples)
    ex = result.pop("examples")
    ev = result["heldout"][cfg.quality.scorer]
    log(f"quality: trained on {ex['total']:,} examples ({ex['positive']:,} reference, {ex['total'] - ex['positive']:,} crawl); "
        f"held-out ROC AUC {ev['roc_auc']:.3f}, accuracy {ev['accuracy']:.3f} at 0.5 "
        f"({ev['n']} examples); expected keep rate crawl {ev['expected_keep_rate']['negative']:.3f}, "
        f"reference {ev['expected_keep_rate']['positive']:.3f}")
    return result


# --------------------------------------------------------------------------- the filter (actors)

class QualityWorker(ShardWorker):
    """Scores the filtered sources' shards; the model is loaded once per actor (:meth:`setup`)."""

    columns = COLUMNS

    def __init__(self, model_dir: str | None, q: QualityConfig, filtered: set[str], seed: int, drop: bool,
                 keep_text: bool, max_bytes: int):
        self.model_dir, self.q, self.filtered, self.seed = model_dir, q, filtered, seed
        self.drop, self.keep_text, self.max_bytes = drop, keep_text, max_bytes
        self.batch_rows = q.batch_rows
        self.model = None

    def setup(self) -> None:
        if self.q.scorer in ("embedding", "both"):  # torch costs ~1 s to import: only when used
            import torch

            torch.set_num_threads(1)  # one actor per CPU: one thread each
        self.model = QualityModel(self.model_dir, self.q.scorer) if self.model_dir else None

    def output_schema(self, shard: ShardRef) -> pa.Schema:
        return quality_schema()

    def open(self, shard: ShardRef) -> bool:
        return shard.source in self.filtered

    def extra_init(self) -> dict:
        return {"hist_kept": np.zeros(20, np.int64), "hist_rejected": np.zeros(20, np.int64)}

    def process(self, batch: pa.Table, filtered: bool) -> Processed:
        kept, rejected, hist = filter_table(batch, self.model, self.q, self.seed, filtered, self.drop, self.keep_text)
        return Processed(kept, rejected, extra=hist)


class QualityStage(ShardStage):
    name = "quality"
    folder = "10_quality"
    config_key = "quality"
    config_model = QualityConfig
    use_actors = True
    help = """Score the filtered sources and keep documents by the GPT-3 rule (appendix A)."""

    def __init__(self, drop: bool = True):
        self.drop = drop
        if not drop:
            self.name, self.folder, self.input_of = "quality_score", "10_quality_scored", "quality"
            self.help = "Add quality_score to every document of the filtered sources, dropping nothing."

    def hash_inputs(self, cfg) -> dict:
        q = cfg.quality
        model = storage.fingerprint(storage.list_files(q.model)) if q.model else None
        return {"stage": "quality", "drop": self.drop, "seed": cfg.seed, "quality": q.model_dump(),
                "filter": {s.name: s.filter for s in cfg.sources}, "keep_rejected_text": cfg.ingest.keep_rejected_text,
                "model": model}

    def num_gpus(self, cfg) -> float:
        return cfg.quality.embedding.num_gpus if cfg.quality.scorer in ("embedding", "both") else 0

    def order(self, ctx: StageContext, shards: list[ShardRef]) -> list[ShardRef]:
        filtered = {s.name for s in ctx.cfg.sources if s.filter}
        return sorted(shards, key=lambda s: (s.source not in filtered, -s.size))

    def prepare(self, ctx: StageContext) -> dict:
        q = ctx.cfg.quality
        filtered = {s.name for s in ctx.cfg.sources if s.filter}
        model_dir = ctx.path("model")
        if not filtered:
            model_dir = None
            ctx.log(f"{self.name}: no source has filter: true; every document passes through")
        elif q.model:
            storage.copy(q.model, model_dir)
            ctx.log(f"{self.name}: using the trained model in {q.model}")
        else:
            train_quality(ctx, model_dir)
        ev = None
        if model_dir and storage.exists(storage.join(model_dir, "eval.json")):
            storage.copy(storage.join(model_dir, "eval.json"), ctx.path("eval.json"))
            ev = storage.read_json(ctx.path("eval.json"))
        return {"model_dir": model_dir, "filtered": filtered, "eval": ev}

    def worker(self, ctx: StageContext, prepared: dict) -> QualityWorker:
        cfg = ctx.cfg
        return QualityWorker(prepared["model_dir"], cfg.quality, prepared["filtered"], cfg.seed, self.drop,
                             cfg.ingest.keep_rejected_text, cfg.ingest.shard_max_bytes)

    def finish(self, ctx: StageContext, results: list[ShardResult], prepared: dict) -> dict:
        q, filtered, ev = ctx.cfg.quality, prepared["filtered"], prepared["eval"]
        hist = {}
        for r in results:
            if r.source in filtered:
                h = hist.setdefault(r.source, {"kept": np.zeros(20, int), "rejected": np.zeros(20, int)})
                h["kept"] += np.asarray(r.extra["hist_kept"])
                h["rejected"] += np.asarray(r.extra["hist_rejected"])
        files = [{k: v for k, v in r.to_json().items() if not k.startswith("hist_")} for r in results]
        return {
            "config": {"quality": q.model_dump(), "seed": ctx.cfg.seed, "filtered_sources": sorted(filtered)},
            "counts": summarize(results),
            "score_histograms": {"edges": np.linspace(0, 1, 21).round(2).tolist(),
                                 **{s: {k: v.tolist() for k, v in h.items()} for s, h in sorted(hist.items())}},
            "eval": ev and {k: {m: v[m] for m in ("roc_auc", "accuracy", "precision", "recall", "expected_keep_rate")}
                            for k, v in ev["heldout"].items()},
            "model": {"scorer": q.scorer, "reused_from": q.model, "num_gpus_per_actor": self.num_gpus(ctx.cfg)},
            "files": files,
        }

    def summary(self, manifest: dict, out_dir: str) -> str:
        c, filtered = manifest["counts"], manifest["config"]["filtered_sources"]
        rates = ", ".join(f"{s} {v['kept']}/{v['in']}" for s, v in c["by_source"].items() if s in filtered)
        return (f"{self.name}: {c['in']} documents -> {c['kept']} kept, {c['rejected']} rejected ({reasons_text(c)}); "
                f"filtered sources kept: {rates or 'none'}; {manifest['timings']['wall_s']:.1f}s")

    def report(self, run_dir: str, folder: str, m: dict) -> str:
        out = []
        for scorer, e in (m.get("eval") or {}).items():
            out.append(f"<p>held-out {esc(scorer)}: ROC AUC {e['roc_auc']:.3f}, accuracy {e['accuracy']:.3f}</p>")
        hist = dict(m.get("score_histograms") or {})
        edges = hist.pop("edges", [])
        labels = [f"{e:.2f}" for e in edges[:-1]]
        for src, h in hist.items():
            series = []
            for what, color in (("kept", "#81c784"), ("rejected", "#e57373")):
                counts, total = h[what], sum(h[what])
                tips = [f"{what} {edges[i]:.2f}–{edges[i + 1]:.2f}: {v:,} documents ({pct(v, total)} of {what})"
                        for i, v in enumerate(counts)]
                series.append(Series(f"{what} ({total:,})", [100 * v / total if total else 0.0 for v in counts], tips, color))
            out.append(f"<h3>Quality scores: {esc(src)}</h3>"
                       + column_chart(labels, series, x_label="quality score", y_label="% of kept / rejected",
                                      fmt=lambda v: f"{v:.0f}%", label_pos=0.0, svg_id=f"quality-hist-{src}"))
        return "".join(out)


QUALITY = QualityStage()
QUALITY_SCORE = QualityStage(drop=False)
