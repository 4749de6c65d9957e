"""Stage runners: plan a stage, skip it if finished, else map its pure function over Ray and
commit its output with a manifest."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable

import numpy as np

from .config import STAGE_ORDER, IngestConfig, RunConfig, SourceConfig, stable_hash
from .ingest import IngestTask, ingest_file
from .ray_runner import Progress, map_actors, map_tasks, ray_session
from .readers import source_files
from .stage import files_fingerprint, is_finished, read_manifest, stage_output

STAGE_DIRS = {"ingest": "00_ingest", "quality": "10_quality", "dedup": "20_dedup", "decontam": "30_decontam", "mix": "40_mix"}


class StageError(RuntimeError):
    """A stage could not finish; the message is one line for the user."""


def stage_dir(cfg: RunConfig, stage: str) -> str:
    return os.path.join(cfg.run_dir, STAGE_DIRS[stage])


# --------------------------------------------------------------------------- ingest

def ingest_config_hash(cfg: RunConfig) -> str:
    return stable_hash({"stage": "ingest", "sources": [s.model_dump() for s in cfg.sources],
                        "ingest": cfg.ingest.model_dump()})


def plan_ingest(cfg: RunConfig) -> list[IngestTask]:
    tasks = []
    for src in cfg.sources:
        files = source_files(src)
        if not files:
            raise StageError(f"source {src.name!r}: no input files of a known format in {', '.join(src.paths)}")
        for i, (path, rel, fmt) in enumerate(files):
            tasks.append(IngestTask(path=path, rel=rel, fmt=fmt, source=src.name, index=i))
    return tasks


def _ingest_task(task: dict, source: dict, ingest: dict, out_dir: str) -> dict:
    """Runs on a Ray worker: one input file."""
    t = IngestTask(**task)
    stats = ingest_file(t, SourceConfig.model_construct(**source), IngestConfig(**ingest), out_dir)
    return stats.to_dict()


def upstream(cfg: RunConfig, stage: str) -> tuple[str, dict]:
    """The folder and manifest of a finished earlier stage, or a one-line error."""
    d = stage_dir(cfg, stage)
    m = read_manifest(d)
    if m is None:
        raise StageError(f"stage {stage!r} has not finished in {cfg.run_dir} (run `siftmix run` or `siftmix {stage}` first)")
    return d, m


def stage_input(cfg: RunConfig, stage: str) -> tuple[str, str, dict]:
    """(the configured stage that feeds ``stage``, its folder, its manifest), or a one-line error."""
    prev = previous_stage(cfg, stage)
    return (prev, *upstream(cfg, prev))


def finished(name: str, out_dir: str, chash: str, fp: str, force: bool, log: Callable[[str], None]) -> dict | None:
    """The manifest of a stage finished earlier with this config and input (logged), unless --force."""
    m = None if force else is_finished(out_dir, chash, fp)
    if m is not None:
        log(f"{name}: finished earlier, skipped ({out_dir})")
    return m


def shard_sources(manifest: dict) -> dict[str, str]:
    """{shard file name: source} from a stage manifest's per-file results."""
    out = {}
    for f in manifest.get("files", []):
        for sh in f.get("shards", []):
            out[sh["file"]] = f["source"]
    return out


def summarize(results: list[dict]) -> dict:
    """Counts for the manifest: in = kept + rejected, in total and per source."""
    by_source: dict[str, dict] = defaultdict(lambda: {"in": 0, "kept": 0, "rejected": 0, "rejected_by_reason": Counter(),
                                                      "bytes_in": 0, "chars_kept": 0, "bytes_kept": 0, "files": 0})
    for r in results:
        s = by_source[r["source"]]
        s["files"] += 1
        s["in"] += r["docs_in"]
        s["kept"] += r["kept"]
        s["rejected"] += sum(r["rejected"].values())
        s["rejected_by_reason"].update(r["rejected"])
        for k in ("bytes_in", "chars_kept", "bytes_kept"):
            s[k] += r[k]
    total_reasons: Counter = Counter()
    for s in by_source.values():
        total_reasons.update(s["rejected_by_reason"])
        s["rejected_by_reason"] = dict(sorted(s["rejected_by_reason"].items()))
    return {
        "in": sum(s["in"] for s in by_source.values()),
        "kept": sum(s["kept"] for s in by_source.values()),
        "rejected": sum(s["rejected"] for s in by_source.values()),
        "rejected_by_reason": dict(sorted(total_reasons.items())),
        "bytes_in": sum(s["bytes_in"] for s in by_source.values()),
        "bytes_kept": sum(s["bytes_kept"] for s in by_source.values()),
        "by_source": dict(sorted(by_source.items())),
    }


def run_ingest(cfg: RunConfig, *, force: bool = False, workers: int | None = None, console=None,
               log: Callable[[str], None] = print, out_dir: str | None = None, progress: bool = True) -> dict:
    out_dir = out_dir or stage_dir(cfg, "ingest")
    tasks = plan_ingest(cfg)
    chash = ingest_config_hash(cfg)
    fp = files_fingerprint([t.path for t in tasks])
    if m := finished("ingest", out_dir, chash, fp, force, log):
        return m
    srcs = {s.name: s.model_dump() for s in cfg.sources}
    total_bytes = sum(os.path.getsize(t.path) for t in tasks)
    # Biggest files first: better load balance. Output does not depend on the order.
    order = sorted(tasks, key=lambda t: -os.path.getsize(t.path))
    with stage_output(out_dir) as out:
        bar = Progress("ingest", len(tasks), total_bytes, console=console, enabled=progress)
        results, fatal = [], []
        try:
            payload = [{"task": t.__dict__, "source": srcs[t.source]} for t in order]
            for r in map_tasks(_run_ingest_payload, payload, workers=workers or cfg.ray.workers,
                               fn_kwargs={"ingest": cfg.ingest.model_dump(), "out_dir": out.tmp}):
                results.append(r)
                if r.get("fatal"):
                    fatal.append(r["fatal"])
                bar.advance(1, r["bytes_in"], docs=r["docs_in"])
        finally:
            bar.close()
        if fatal:
            more = f" (and {len(fatal) - 1} more files)" if len(fatal) > 1 else ""
            raise StageError(f"ingest failed: {sorted(fatal)[0]}{more}")
        results.sort(key=lambda r: (r["source"], r["file"]))
        counts = summarize(results)
        if counts["in"] != counts["kept"] + counts["rejected"]:
            raise StageError(f"ingest: counts do not add up ({counts['in']} in, {counts['kept']} kept, {counts['rejected']} rejected)")
        manifest = out.commit({
            "stage": "ingest",
            "config_hash": chash,
            "input_fingerprint": fp,
            "config": {"sources": [s.model_dump() for s in cfg.sources], "ingest": cfg.ingest.model_dump()},
            "counts": counts,
            "files": results,
            "ray": {"workers": workers or cfg.ray.workers},
        })
    wall = manifest["timings"]["wall_s"]
    log(f"ingest: {counts['in']} records -> {counts['kept']} documents kept, {counts['rejected']} rejected "
        f"({', '.join(f'{k} {v}' for k, v in counts['rejected_by_reason'].items()) or 'none'}); "
        f"{counts['bytes_in'] / 1e6:.1f} MB in {wall:.1f}s")
    return manifest


def _run_ingest_payload(p: dict, ingest: dict, out_dir: str) -> dict:
    return _ingest_task(p["task"], p["source"], ingest, out_dir)


# --------------------------------------------------------------------------- quality

def _quality_classes(cfg: RunConfig) -> tuple[list[str], list[str]]:
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


def _model_fingerprint(folder: str | None) -> str | None:
    if folder is None:
        return None
    return files_fingerprint([os.path.join(folder, f) for f in sorted(os.listdir(folder))])


def quality_config_hash(cfg: RunConfig, drop: bool = True) -> str:
    return stable_hash({"stage": "quality", "drop": drop, "seed": cfg.seed, "quality": cfg.quality.model_dump(),
                        "filter": {s.name: s.filter for s in cfg.sources},
                        "keep_rejected_text": cfg.ingest.keep_rejected_text,
                        "model": _model_fingerprint(cfg.quality.model)})


def _ipc(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(blob).read_all()


def _sample_task(task: dict, pos: list[str], neg: list[str], rates: dict, seed: int, chunk_chars: int) -> dict:
    """One shard's candidate training examples, written beside the model (not sent back)."""
    import pyarrow.parquet as pq
    from siftmix.filters.quality import sample_examples

    t = pq.read_table(task["path"], columns=["id", "source", "text"])
    ex = sample_examples(t, set(pos), set(neg), {int(k): v for k, v in rates.items()}, seed, chunk_chars)
    if ex.num_rows:
        pq.write_table(ex, task["out"], compression="lz4")
    return {"n": ex.num_rows}


def _train_task(task: dict) -> dict:
    """Balance the sampled examples and train, in one task: the driver never holds the text."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.filters.quality import balance, train_model

    from .config import QualityConfig

    q = QualityConfig.model_validate(task["quality"])
    examples = pa.concat_tables([pq.read_table(f) for f in task["files"]])
    examples = examples.sort_by("id")  # task completion order must not matter
    examples = balance(examples, q.train.max_docs_per_class, task["seed"])
    result = train_model(examples, q, task["seed"], task["out"], log=lambda *_: None)
    n_pos = int(pa.compute.sum(examples["label"]).as_py())
    return {**result, "examples": {"total": examples.num_rows, "positive": n_pos}}


def train_quality(cfg: RunConfig, out_model_dir: str, *, workers: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Sample balanced examples from the ingest output (Ray tasks write them beside the model
    folder) and train the model in a Ray task; writes the model folder and returns its eval.json
    content. The driver holds counts only (bounded memory whatever the corpus)."""
    import shutil

    in_dir, m_in = upstream(cfg, "ingest")
    pos, neg = _quality_classes(cfg)
    t = cfg.quality.train
    by_src = m_in["counts"]["by_source"]

    def expected(names):  # examples a class can give: documents plus extra chunks of long ones
        return sum(by_src.get(n, {}).get("kept", 0) + by_src.get(n, {}).get("chars_kept", 0) // t.chunk_chars for n in names)

    rates = {1: min(1.0, 1.5 * t.max_docs_per_class / max(1, expected(pos))),
             0: min(1.0, 1.5 * t.max_docs_per_class / max(1, expected(neg)))}
    srcs = shard_sources(m_in)
    samples = os.path.abspath(out_model_dir).rstrip(os.sep) + ".samples"
    shutil.rmtree(samples, ignore_errors=True)
    os.makedirs(samples)
    try:
        tasks = [{"path": os.path.join(in_dir, "data", f), "out": os.path.join(samples, f)}
                 for f, s in sorted(srcs.items()) if s in pos or s in neg]
        n = sum(r["n"] for r in map_tasks(_sample_task, tasks, workers=workers or cfg.ray.workers,
                fn_kwargs={"pos": pos, "neg": neg, "rates": rates, "seed": cfg.seed, "chunk_chars": t.chunk_chars}))
        files = sorted(os.path.join(samples, f) for f in os.listdir(samples))
        if n == 0 or not files:
            raise StageError("quality: no training examples (are the positive and negative sources empty?)")
        log(f"quality: training {cfg.quality.scorer} on a balanced sample of {n:,} candidate examples "
            f"(reference: {', '.join(pos)}; crawl: {', '.join(neg)})")
        try:
            (result,) = list(map_tasks(_train_task, [{"files": files, "quality": cfg.quality.model_dump(),
                                                       "seed": cfg.seed, "out": out_model_dir}],
                                       num_cpus=cfg.quality.fasttext.threads))
        except Exception as err:  # a training failure is one line, not a Ray traceback
            cause = getattr(err, "cause", None) or err
            raise StageError(f"quality: training failed: {type(cause).__name__}: {str(cause).splitlines()[0]}") from None
    finally:
        shutil.rmtree(samples, ignore_errors=True)
    ex = result.pop("examples")
    ev = result["heldout"][cfg.quality.scorer]
    log(f"quality: trained on {ex['total']:,} examples ({ex['positive']:,} reference, {ex['total'] - ex['positive']:,} crawl); "
        f"held-out ROC AUC {ev['roc_auc']:.3f}, accuracy {ev['accuracy']:.3f} at 0.5 "
        f"({ev['n']} examples); expected keep rate crawl {ev['expected_keep_rate']['negative']:.3f}, "
        f"reference {ev['expected_keep_rate']['positive']:.3f}")
    return result


class _QualityActor:
    """One per worker: the model is loaded once, then whole shards go through it."""

    def __init__(self, model_dir: str, scorer: str, quality: dict, seed: int, out_dir: str, drop: bool,
                 keep_text: bool, max_bytes: int, threads: int = 1):
        from siftmix.filters.quality import QualityModel

        from .config import QualityConfig

        if scorer in ("embedding", "both"):  # torch costs ~1 s to import: only when used
            import torch

            torch.set_num_threads(max(1, threads))
        self.model = QualityModel(model_dir, scorer) if model_dir else None
        self.cfg = QualityConfig.model_validate({**quality, "model": None})
        self.kw = dict(seed=seed, drop=drop, keep_text=keep_text, max_bytes=max_bytes)
        self.out_dir = out_dir

    def process(self, task: dict) -> dict:
        from siftmix.filters.quality import filter_shard

        try:
            return filter_shard(task["path"], self.out_dir, self.model, self.cfg, filtered=task["filtered"], **self.kw)
        except Exception as err:
            return {"fatal": f"{task['path']}: {type(err).__name__}: {err}", "file": os.path.basename(task["path"]),
                    "source": task["source"]}

    def device(self) -> str:
        return self.model.device if self.model is not None else "cpu"


def run_quality(cfg: RunConfig, *, force: bool = False, workers: int | None = None, console=None,
                log: Callable[[str], None] = print, progress: bool = True, drop: bool = True,
                out_dir: str | None = None) -> dict:
    """The quality stage: train (or reuse) the model, score the filtered sources through an
    actor pool, keep by the GPT-3 Pareto rule; other sources pass through."""
    import shutil

    import numpy as np

    name = "quality" if drop else "quality_score"
    out_dir = out_dir or stage_dir(cfg, "quality") + ("" if drop else "_scored")
    in_dir, m_in = upstream(cfg, "ingest")
    chash, fp = quality_config_hash(cfg, drop), m_in["output_fingerprint"]
    if m := finished(name, out_dir, chash, fp, force, log):
        return m
    q = cfg.quality
    filtered = {s.name for s in cfg.sources if s.filter}
    srcs = shard_sources(m_in)
    with stage_output(out_dir) as out:
        model_dir = out.path("model")
        if not filtered:
            model_dir = None
            log(f"{name}: no source has filter: true; every document passes through")
        elif q.model:
            shutil.copytree(q.model, model_dir)
            log(f"{name}: using the trained model in {q.model}")
        else:
            train_quality(cfg, model_dir, workers=workers, log=log)
        if model_dir and os.path.exists(os.path.join(model_dir, "eval.json")):
            shutil.copy(os.path.join(model_dir, "eval.json"), out.path("eval.json"))
        tasks = [{"path": os.path.join(in_dir, "data", f), "source": s, "filtered": s in filtered}
                 for f, s in sorted(srcs.items())]
        uses_embedding = q.scorer in ("embedding", "both")
        num_gpus = q.embedding.num_gpus if uses_embedding else 0
        actor_kw = dict(model_dir=model_dir, scorer=q.scorer, quality=q.model_dump(), seed=cfg.seed,
                        out_dir=out.tmp, drop=drop, keep_text=cfg.ingest.keep_rejected_text,
                        max_bytes=cfg.ingest.shard_max_bytes)
        bar = Progress(name, len(tasks), sum(os.path.getsize(t["path"]) for t in tasks), unit="shards",
                       console=console, enabled=progress, docs_total=m_in["counts"]["kept"])
        results, fatal = [], []
        size = {t["path"]: os.path.getsize(t["path"]) for t in tasks}
        try:
            order = sorted(tasks, key=lambda t: (not t["filtered"], -size[t["path"]]))
            for r in map_actors(_QualityActor, actor_kw, order, workers=workers or cfg.ray.workers, num_gpus=num_gpus):
                results.append(r)
                if r.get("fatal"):
                    fatal.append(r["fatal"])
                bar.advance(1, size.get(os.path.join(in_dir, "data", r["file"]), 0), docs=r.get("docs_in", 0))
        finally:
            bar.close()
        if fatal:
            raise StageError(f"{name} failed: {sorted(fatal)[0]}" + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""))
        results.sort(key=lambda r: r["file"])
        counts = summarize(results)
        if counts["in"] != counts["kept"] + counts["rejected"] or counts["in"] != m_in["counts"]["kept"]:
            raise StageError(f"{name}: counts do not add up ({m_in['counts']['kept']} from ingest, {counts['in']} in, "
                             f"{counts['kept']} kept, {counts['rejected']} rejected)")
        hist = {}
        for r in results:
            if r["source"] in filtered:
                h = hist.setdefault(r["source"], {"kept": np.zeros(20, int), "rejected": np.zeros(20, int)})
                h["kept"] += np.asarray(r["hist_kept"])
                h["rejected"] += np.asarray(r["hist_rejected"])
        ev = None
        if os.path.exists(out.path("eval.json")):
            with open(out.path("eval.json"), encoding="utf-8") as fh:
                ev = json.load(fh)
        manifest = out.commit({
            "stage": name, "config_hash": chash, "input_fingerprint": fp,
            "config": {"quality": q.model_dump(), "seed": cfg.seed, "filtered_sources": sorted(filtered)},
            "counts": counts,
            "score_histograms": {"edges": np.linspace(0, 1, 21).round(2).tolist(),
                                 **{s: {k: v.tolist() for k, v in h.items()} for s, h in sorted(hist.items())}},
            "eval": ev and {k: {m: v[m] for m in ("roc_auc", "accuracy", "precision", "recall", "expected_keep_rate")}
                            for k, v in ev["heldout"].items()},
            "model": {"scorer": q.scorer, "reused_from": q.model, "num_gpus_per_actor": num_gpus},
            "files": [{k: v for k, v in r.items() if not k.startswith("hist_")} for r in results],
        })
    rates = ", ".join(f"{s} {c['kept']}/{c['in']}" for s, c in counts["by_source"].items() if s in filtered)
    log(f"{name}: {counts['in']} documents -> {counts['kept']} kept, {counts['rejected']} rejected "
        f"({', '.join(f'{k} {v}' for k, v in counts['rejected_by_reason'].items()) or 'none'}); "
        f"filtered sources kept: {rates or 'none'}; {manifest['timings']['wall_s']:.1f}s")
    return manifest


# --------------------------------------------------------------------------- decontam

def _scan_task(task: dict, index, cfg: dict) -> dict:
    from siftmix.contamination.shard import scan_shard

    from .config import DecontamConfig

    return scan_shard(task["path"], index, DecontamConfig.model_construct(**cfg))


def _excise_task(task: dict, index, ignored, cfg: dict, out_dir: str, keep_text: bool, max_bytes: int) -> dict:
    from siftmix.contamination.shard import excise_shard

    from .config import DecontamConfig

    return excise_shard(task["path"], out_dir, index, ignored, DecontamConfig.model_construct(**cfg), keep_text, max_bytes)


def decontam_config_hash(cfg: RunConfig, audit_only: bool) -> str:
    from siftmix.contamination.benchmarks import benchmark_files

    d = cfg.decontam
    return stable_hash({"stage": "decontam", "audit_only": audit_only, "decontam": d.model_dump(),
                        "benchmarks": files_fingerprint(benchmark_files(d.benchmarks)),
                        "keep_rejected_text": cfg.ingest.keep_rejected_text})


def run_decontam(cfg: RunConfig, *, force: bool = False, workers: int | None = None, console=None,
                 log: Callable[[str], None] = print, progress: bool = True, audit_only: bool = False) -> dict:
    """GPT-3 appendix C. Pass 1 counts, per benchmark 13-gram, the training documents holding it
    and finds the dirty benchmark examples; pass 2 (not for an audit) cuts the collisions out.
    Writes audit.json / audit.md / audit.html beside the data."""
    import time

    from siftmix.contamination.appendix_c import NgramIndex
    from siftmix.contamination.benchmarks import BenchmarkError, load_benchmarks
    from siftmix.contamination.report import build_audit, write_reports

    name = "audit" if audit_only else "decontam"
    prev, in_dir, m_in = stage_input(cfg, "decontam")
    out_dir = os.path.join(cfg.run_dir, "30_audit") if audit_only else stage_dir(cfg, "decontam")
    chash, fp = decontam_config_hash(cfg, audit_only), m_in["output_fingerprint"]
    if m := finished(name, out_dir, chash, fp, force, log):
        return m
    d = cfg.decontam
    try:
        benches = load_benchmarks(d.benchmarks, d.fields)
    except (BenchmarkError, UnicodeDecodeError, OSError) as err:
        raise StageError(f"{name}: {err}") from None
    if not benches:
        raise StageError(f"{name}: no benchmark files found in {', '.join(d.benchmarks)}")
    t0 = time.time()
    index = NgramIndex.build(benches, d.min_n)
    index_s = time.time() - t0
    index_bytes = sum(a.nbytes for t in index.tables.values() for a in t)
    log(f"{name}: {len(benches)} benchmarks, {sum(len(b.texts) for b in benches):,} examples, "
        f"{len(index.tables[13][0]):,} 13-grams indexed in {index_s:.1f}s ({index_bytes / 2**20:.1f} MiB)")
    workers = workers or cfg.ray.workers
    shards = [os.path.join(in_dir, "data", f) for f in sorted(shard_sources(m_in))]
    dcfg = d.model_dump()
    with stage_output(out_dir) as out:
        bar = Progress(f"{name}: scan", len(shards), console=console, enabled=progress, unit="shards")
        all_h, all_c, dirty = [], [], {}
        for r in map_tasks(_scan_task, [{"path": f} for f in shards], workers=workers, fn_kwargs={"index": index, "cfg": dcfg}):
            all_h.append(np.frombuffer(r["hashes"], np.uint64))
            all_c.append(np.frombuffer(r["counts"], np.int64))
            for k, v in r["dirty"].items():
                if k not in dirty or v["doc"] < dirty[k]["doc"]:
                    dirty[k] = v
            bar.advance()
        bar.close()
        h = np.concatenate(all_h) if all_h else np.zeros(0, np.uint64)
        c = np.concatenate(all_c) if all_c else np.zeros(0, np.int64)
        uh, inv = np.unique(h, return_inverse=True)
        docs_per_gram = np.bincount(inv, weights=c).astype(np.int64) if len(h) else np.zeros(0, np.int64)
        ignored = uh[docs_per_gram > d.max_docs]
        training = {"documents_in": m_in["counts"]["kept"], "colliding_13grams": int(len(uh)),
                    "ngrams_ignored_as_boilerplate": int(len(ignored))}
        results = []
        if not audit_only:
            bar = Progress(f"{name}: excise", len(shards), console=console, enabled=progress, unit="shards",
                           docs_total=m_in["counts"]["kept"])
            for r in map_tasks(_excise_task, [{"path": f} for f in shards], workers=workers,
                               fn_kwargs={"index": index, "ignored": ignored, "cfg": dcfg, "out_dir": out.tmp,
                                          "keep_text": cfg.ingest.keep_rejected_text, "max_bytes": cfg.ingest.shard_max_bytes}):
                results.append(r)
                bar.advance(docs=r["docs_in"])
            bar.close()
            results.sort(key=lambda r: r["file"])
            chars_in = sum(r["chars_in"] for r in results)
            chars_kept = sum(r["chars_kept"] for r in results)
            chars_rej = sum(r["chars_rejected"] for r in results)
            if chars_in != chars_kept + chars_rej:
                raise StageError(f"decontam: characters do not add up ({chars_in} in, {chars_kept} kept, {chars_rej} rejected)")
            training.update({"documents_cut": sum(r["documents_cut"] for r in results),
                             "documents_dropped": sum(sum(r["rejected"].values()) for r in results),
                             "collisions": sum(r["collisions"] for r in results),
                             "collisions_ignored": sum(r["ignored"] for r in results),
                             "chars_in": chars_in, "chars_kept": chars_kept, "chars_removed": chars_rej})
        audit = build_audit(benches, index, dirty, training, {k: v for k, v in dcfg.items() if k != "batch_rows"})
        write_reports(audit, out.tmp)
        counts = summarize(results) if results else {"in": m_in["counts"]["kept"], "kept": m_in["counts"]["kept"], "rejected": 0}
        if results and counts["in"] != counts["kept"] + counts["rejected"]:
            raise StageError(f"decontam: counts do not add up ({counts})")
        manifest = out.commit({
            "stage": name, "config_hash": chash, "input_fingerprint": fp, "input_stage": prev,
            "config": {"decontam": dcfg}, "counts": counts, "training_side": training,
            "benchmarks": [{k: v for k, v in b.items() if k != "dirty_examples"} for b in audit["benchmarks"]],
            "index": {"build_s": round(index_s, 3), "bytes": int(index_bytes), "ngrams_13": int(len(index.tables[13][0]))},
            "files": results,
        })
    dirty_total = sum(b["dirty"] for b in audit["benchmarks"])
    log(f"{name}: {dirty_total} dirty benchmark examples across {len(benches)} benchmarks"
        + ("" if audit_only else f"; {training['documents_cut']} training documents cut, "
           f"{training['documents_dropped']} dropped, {training['ngrams_ignored_as_boilerplate']} boilerplate 13-grams ignored")
        + f"; report: {os.path.join(out_dir, 'audit.html')}")
    return manifest


# --------------------------------------------------------------------------- mix

def previous_stage(cfg: RunConfig, stage: str) -> str:
    """The configured stage that feeds ``stage``: the last one before it in pipeline order."""
    before = [s for s in STAGE_ORDER[: STAGE_ORDER.index(stage)] if s in cfg.stages]
    if not before:
        raise StageError(f"stage {stage!r} needs an earlier stage in `stages` (at least ingest)")
    return before[-1]


def mix_config_hash(cfg: RunConfig) -> str:
    return stable_hash({"stage": "mix", "seed": cfg.seed, "mix": cfg.mix.model_dump()})


def _mix_pieces_task(task: dict, mix: dict, seed: int, out_dir: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.mixing.mix import bucket_token_sums, make_pieces
    from siftmix.mixing.tokenizer import get_tokenizer

    from .config import MixConfig

    m = MixConfig.model_validate(mix)
    tok = get_tokenizer(m.tokenizer)
    pf = pq.ParquetFile(task["path"])
    dest = os.path.join(out_dir, "pieces", os.path.basename(task["path"]))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    writer, sums, tokens, docs = None, {}, Counter(), Counter()
    for batch in pf.iter_batches(batch_size=512, columns=["id", "source", "text"]):
        pieces = make_pieces(pa.Table.from_batches([batch]), tok, seed, m.split_chars, m.tokenized)
        if writer is None:
            writer = pq.ParquetWriter(dest, pieces.schema, compression="zstd")
        writer.write_table(pieces)
        for src, arr in bucket_token_sums(pieces).items():
            sums[src] = sums.get(src, 0) + arr
        for src, n in zip(pieces["source"].to_pylist(), pieces["n_tokens"].to_pylist()):
            tokens[src] += n
            docs[src] += 1
    if writer is not None:
        writer.close()
    return {"file": dest if writer is not None else None, "tokens": dict(tokens), "pieces": dict(docs),
            "bucket_sums": {k: v.astype(np.int64).tobytes() for k, v in sums.items()}}


def _mix_candidates_task(task: dict, buckets: dict) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from siftmix.mixing.mix import N_BUCKETS

    t = pq.read_table(task["path"], columns=["id", "source", "h", "n_tokens"])
    out = []
    for src, b in buckets.items():
        m = pc.and_(pc.equal(t["source"], src), pc.and_(pc.greater_equal(t["h"], b / N_BUCKETS),
                                                         pc.less(t["h"], (b + 1) / N_BUCKETS)))
        out.append(t.filter(m))
    return {"rows": _ipc(pa.concat_tables(out)) if out else None}


def _mix_assign_task(task: dict, copies: dict, tau: dict, seed: int, n_partitions: int, out_dir: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.mixing.mix import assign

    pf = pq.ParquetFile(task["path"])
    name = os.path.basename(task["path"]).removesuffix(".parquet")
    writers = {}
    for batch in pf.iter_batches(batch_size=2048):
        t = assign(pa.Table.from_batches([batch]), copies, tau, seed, n_partitions)
        part = t["partition"].to_numpy()
        for p in np.unique(part):
            sub = t.filter(pa.array(part == p)).drop_columns(["partition", "h"])
            if p not in writers:
                d = os.path.join(out_dir, "parts", f"p{int(p):05d}")
                os.makedirs(d, exist_ok=True)
                writers[p] = pq.ParquetWriter(os.path.join(d, f"{name}.parquet"), sub.schema, compression="zstd")
            writers[p].write_table(sub)
    for w in writers.values():
        w.close()
    return {"partitions": sorted(int(p) for p in writers)}


def _mix_shard_task(task: dict, mix: dict, out_dir: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.mixing.mix import MIX_SCHEMA, shard_boundaries, sort_partition, token_stream
    from siftmix.mixing.tokenizer import get_tokenizer

    from .config import MixConfig
    from .shards import PARQUET_OPTIONS

    m = MixConfig.model_validate(mix)
    files = sorted(os.listdir(task["dir"]))
    t = sort_partition(pa.concat_tables([pq.read_table(os.path.join(task["dir"], f)) for f in files]))
    shards_dir = os.path.join(out_dir, "shards")
    os.makedirs(shards_dir, exist_ok=True)
    tok = get_tokenizer(m.tokenizer) if m.tokenized else None
    out, tokens, docs = [], Counter(), Counter()
    for k, (a, b) in enumerate(shard_boundaries(t["n_tokens"].to_numpy(), m.shard_tokens)):
        part = t.slice(a, b - a)
        name = f"shard-{task['partition']:05d}-{k:05d}"
        pq.write_table(part.select(MIX_SCHEMA.names).cast(MIX_SCHEMA), os.path.join(shards_dir, name + ".parquet"),
                       **{**PARQUET_OPTIONS, "use_dictionary": ["source"]})
        if tok is not None:
            ids, offsets = token_stream(part["tokens"], tok.eot, tok.dtype)
            ids.tofile(os.path.join(shards_dir, name + ".bin"))
            np.save(os.path.join(shards_dir, name + ".idx.npy"), offsets)
        n = part["n_tokens"].to_numpy()
        for src, c in zip(part["source"].to_pylist(), n):
            tokens[src] += int(c)
            docs[src] += 1
        out.append({"file": name + ".parquet", "rows": part.num_rows, "tokens": int(n.sum())})
    return {"partition": task["partition"], "shards": out, "tokens": dict(tokens), "documents": dict(docs)}


def run_mix(cfg: RunConfig, *, force: bool = False, workers: int | None = None, console=None,
            log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """The mix stage: count tokens, plan epochs per source, sample deterministically, shuffle by
    hash across sources, write Parquet (and token) shards. Three passes through Ray."""
    import math
    import shutil

    import numpy as np
    import pyarrow as pa
    from siftmix.mixing.mix import (
        PlanError,
        find_threshold,
        plan_mixture,
        refine_threshold,
        table_2_2,
    )

    prev, in_dir, m_in = stage_input(cfg, "mix")
    out_dir = stage_dir(cfg, "mix")
    chash, fp = mix_config_hash(cfg), m_in["output_fingerprint"]
    if m := finished("mix", out_dir, chash, fp, force, log):
        return m
    mx = cfg.mix
    workers = workers or cfg.ray.workers
    srcs = shard_sources(m_in)
    shard_files = [os.path.join(in_dir, "data", f) for f in sorted(srcs)]
    with stage_output(out_dir) as out:
        # pass 1: pieces, token counts, hash-bucket token sums
        bar = Progress("mix: count", len(shard_files), console=console, enabled=progress, unit="shards")
        counted = []
        available, pieces_n, sums = Counter(), Counter(), {}
        for r in map_tasks(_mix_pieces_task, [{"path": f} for f in shard_files], workers=workers,
                           fn_kwargs={"mix": mx.model_dump(), "seed": cfg.seed, "out_dir": out.tmp}):
            # fold each result in as it arrives: the driver keeps one bucket array per source
            for s, arr in r.pop("bucket_sums").items():
                sums[s] = sums.get(s, 0) + np.frombuffer(arr, dtype=np.int64)
            available.update(r["tokens"])
            pieces_n.update(r["pieces"])
            counted.append(r)
            bar.advance()
        bar.close()
        caps = {s: mx.epoch_cap(s) for s in set(available) | set(mx.weights)}
        try:
            total, plans = plan_mixture(dict(available), mx.weights, mx.total_tokens, caps)
        except PlanError as err:
            raise StageError(f"mix: {err}") from None
        plan_doc = {"total_tokens": total, "sources": [p.__dict__ for p in plans], "tokenizer": mx.tokenizer}
        with open(out.path("plan.json"), "w", encoding="utf-8") as fh:
            json.dump(plan_doc, fh, indent=2)
        log("mix: plan (written before any data moves):\n" + "\n".join(
            f"  {p.source:<16} {p.available_tokens:>14,} tokens  weight {p.weight:>6.1%}  epochs {p.epochs:6.3f}"
            for p in plans) + f"\n  total {total:,} tokens")
        # thresholds: pieces with h < tau[s] are taken once more than floor(epochs)
        copies = {p.source: p.full_copies for p in plans}
        tau, buckets, before = {}, {}, {}
        for p in plans:
            if p.weight == 0 or p.available_tokens == 0:
                tau[p.source] = 0.0
                copies[p.source] = 0
                continue
            b, bef = find_threshold(sums[p.source], p.fraction_tokens)
            buckets[p.source], before[p.source] = b, bef
        piece_files = [r["file"] for r in counted if r["file"]]
        if buckets:
            cands = [_from_ipc(r["rows"]) for r in map_tasks(_mix_candidates_task, [{"path": f} for f in piece_files],
                                                             workers=workers, fn_kwargs={"buckets": buckets}) if r["rows"]]
            cand = pa.concat_tables(cands) if cands else None
            for s, b in buckets.items():
                rows = cand.filter(pa.compute.equal(cand["source"], s)) if cand is not None else pa.table(
                    {"id": pa.array([], pa.string()), "h": pa.array([], pa.float64()), "n_tokens": pa.array([], pa.int64())})
                target = next(p.fraction_tokens for p in plans if p.source == s)
                tau[s] = refine_threshold(rows, b, before[s], target)
        for s in available:
            copies.setdefault(s, 0)
            tau.setdefault(s, 0.0)
        # pass 2: repeats, shuffle keys, key-range partitions
        est_bytes = sum(p.epochs * m_in["counts"]["by_source"].get(p.source, {}).get("bytes_kept", 0) for p in plans)
        n_parts = max(1, math.ceil(est_bytes / mx.partition_bytes))
        parts = set()
        for r in map_tasks(_mix_assign_task, [{"path": f} for f in piece_files], workers=workers,
                           fn_kwargs={"copies": copies, "tau": tau, "seed": cfg.seed, "n_partitions": n_parts,
                                      "out_dir": out.tmp}):
            parts.update(r["partitions"])
        # pass 3: sort each partition by key, cut shards
        bar = Progress("mix: shards", len(parts), console=console, enabled=progress, unit="partitions")
        written = []
        for r in map_tasks(_mix_shard_task, [{"partition": p, "dir": os.path.join(out.tmp, "parts", f"p{p:05d}")}
                                             for p in sorted(parts)], workers=workers,
                           fn_kwargs={"mix": mx.model_dump(), "out_dir": out.tmp}):
            written.append(r)
            bar.advance()
        bar.close()
        shutil.rmtree(out.path("pieces"), ignore_errors=True)
        shutil.rmtree(out.path("parts"), ignore_errors=True)
        written.sort(key=lambda r: r["partition"])
        tokens, docs = Counter(), Counter()
        for r in written:
            tokens.update(r["tokens"])
            docs.update(r["documents"])
        total_out = sum(tokens.values()) or 1
        realized = {s: {"tokens": int(tokens.get(s, 0)), "documents": int(docs.get(s, 0)),
                        "share": tokens.get(s, 0) / total_out,
                        "epochs": tokens.get(s, 0) / available[s] if available.get(s) else 0.0}
                    for s in sorted(set(available) | set(mx.weights))}
        table = table_2_2(plans, realized)
        manifest = out.commit({
            "stage": "mix", "config_hash": chash, "input_fingerprint": fp, "input_stage": prev,
            "config": {"mix": mx.model_dump(), "seed": cfg.seed},
            "plan": plan_doc,
            "counts": {"in": sum(pieces_n.values()), "tokens_available": int(sum(available.values())),
                       "tokens": int(sum(tokens.values())), "rows": int(sum(docs.values())),
                       "by_source": {s: {"pieces_in": int(pieces_n.get(s, 0)), "tokens_available": int(available.get(s, 0)),
                                         **realized[s], "target_weight": mx.weights.get(s, 0.0),
                                         "planned_epochs": next((p.epochs for p in plans if p.source == s), 0.0),
                                         "threshold": tau.get(s), "full_copies": copies.get(s)}
                                     for s in sorted(realized)}},
            "table_2_2": table,
            "tokenized": {"enabled": mx.tokenized, "tokenizer": mx.tokenizer,
                          "dtype": "uint16" if not mx.tokenized or get_tok_dtype(mx.tokenizer) == "uint16" else "uint32",
                          "eot_after_each_document": True},
            "shards": [sh for r in written for sh in r["shards"]],
            "partitions": n_parts,
        })
    log("mix: " + f"{manifest['counts']['tokens']:,} tokens in {len(manifest['shards'])} shards\n" + table)
    return manifest


def get_tok_dtype(name: str) -> str:
    from siftmix.mixing.tokenizer import get_tokenizer

    return "uint16" if get_tokenizer(name).dtype == np.uint16 else "uint32"


# --------------------------------------------------------------------------- whole run

def run_dedup(cfg: RunConfig, **kw) -> dict:
    from .dedup_stage import run_dedup as run

    return run(cfg, **kw)


STAGE_RUNNERS = {"ingest": run_ingest, "quality": run_quality, "dedup": run_dedup, "decontam": run_decontam, "mix": run_mix}


def run_pipeline(cfg: RunConfig, *, force: bool = False, address: str | None = None, workers: int | None = None,
                 until: str | None = None, console=None, log: Callable[[str], None] = print) -> dict:
    """Run the configured stages in order; finished stages are skipped (resume)."""
    from .stage import check_writable

    check_writable(cfg.run_dir)  # an unwritable run dir fails at once, not after Ray has started
    import time

    from .report import build_report

    manifests = {}
    stages = [s for s in STAGE_ORDER if s in cfg.stages]
    if until in stages:
        stages = stages[: stages.index(until) + 1]
    t0 = time.time()
    with ray_session(cfg.ray, address=address, log=log):
        for i, stage in enumerate(stages, 1):
            log(f"[{i}/{len(stages)}] {stage} ({time.time() - t0:.0f}s into the run)")
            manifests[stage] = STAGE_RUNNERS[stage](cfg, force=force, workers=workers, console=console, log=log)
    log(f"report: {build_report(cfg.run_dir)}")
    return manifests
