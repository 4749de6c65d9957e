"""Config of the dedup stage (GPT-3 appendix A)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from siftmix.pipeline.core.config import Strict, existing_paths


class DedupConfig(Strict):
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
    max_component: int = Field(1000, ge=2, description="keeper verification: in components up to this many members each "
                               "member is compared with every kept member; above it (templated pages) with max_compare")
    max_compare: int = Field(64, ge=1, description="keeper verification in components over max_component: each member is "
                             "compared with at most this many kept members (the first in keeper order); counted as capped")
    sample_clusters: int = Field(20, ge=0, description="precision report: a seeded sample of this many clusters whose "
                                 "every pair is checked exactly")
    partitions: int | None = Field(None, gt=0, description="shuffle partitions (default: from the document count, never from the CPUs, so the output does not depend on them)")
    single_task_max_edges: int = Field(5_000_000, ge=0, description="connected components in one Ray task up to this many edges "
                                       "(16 bytes each), distributed large-star/small-star rounds above")
    batch_rows: int = Field(2048, gt=0)
    index: bool = Field(True, description="persist the run's index under 20_dedup/<attempt>/index/ (band keys, exact hashes, "
                        "metadata of the kept documents), so that a later dump can be deduplicated against it")
    against: list[str] = Field(default_factory=list, description="run dirs (or their 20_dedup folders) whose indexes the "
                               "input is deduplicated against, with the indexes they extend; indexed documents always win "
                               "and are never removed or rewritten")
    update_index: bool = Field(False, description="this run's index extends the indexes of `against` (the next dump "
                               "deduplicated against this run is checked against all of them); `siftmix dedup --update-index`")

    @field_validator("against")
    @classmethod
    def _against_paths(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return existing_paths(v, info)

    @field_validator("partitions")
    @classmethod
    def _power_of_two(cls, v: int | None) -> int | None:
        if v is not None and v & (v - 1):
            raise ValueError(f"dedup.partitions must be a power of two (indexes of runs with other counts nest), not {v}")
        return v

    @model_validator(mode="after")
    def _bands_rows(self) -> DedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("dedup.bands and dedup.rows: give both or neither")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ValueError(f"dedup: {self.bands} bands x {self.rows} rows need more than num_perm={self.num_perm} permutations")
        if self.update_index and not (self.against and self.index):
            raise ValueError("dedup.update_index extends the indexes of dedup.against: it needs against and index: true")
        if not (self.exact or self.fuzzy):
            raise ValueError("dedup: exact and fuzzy are both off (remove dedup from stages instead)")
        return self

    def lsh_params(self) -> tuple[int, int]:
        if self.bands:
            return self.bands, self.rows
        from siftmix.dedup.lsh import optimal_params

        return optimal_params(self.threshold, self.num_perm, self.fp_weight, 1 - self.fp_weight)


