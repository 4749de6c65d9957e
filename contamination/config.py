"""Config of the decontam stage (GPT-3 appendix C)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from siftmix.pipeline.core.config import Strict, existing_paths


class DecontamConfig(Strict):
    """GPT-3 appendix C: 13-gram decontamination of the training side, N-gram audit of the benchmarks."""

    benchmarks: list[str] = Field(default_factory=list, description="benchmark files or folders (JSONL, JSON, Parquet, CSV)")
    fields: list[str] | None = Field(None, description="fields that make an example's text (default: text, else the usual ones)")
    min_n: int = Field(8, ge=1, le=13, description="benchmark-side N is the 5th percentile of example length, at least this")
    max_docs: int = Field(10, ge=1, description="13-grams in more than this many training documents are ignored (boilerplate)")
    window: int = Field(200, ge=0, description="characters removed on each side of a colliding 13-gram")
    min_piece: int = Field(200, ge=0, description="pieces shorter than this are dropped")
    max_pieces: int = Field(10, ge=1, description="a document split into more pieces is dropped whole")
    snippet_chars: int = Field(200, ge=0, description="training text shown on each side of a match in the reports")
    short_examples: Literal["ignore", "whole"] = Field(
        "ignore", description="examples shorter than N words: 'ignore' (the paper: never dirty; counted and warned) or "
        "'whole' (dirty when their whole word sequence occurs in the training data)")
    scores: list[str] = Field(default_factory=list, description="per-example evaluation results (lm-eval --log_samples "
                              "files, or JSONL of {benchmark, id, score}): files, folders or globs; gives Table C.1")
    batch_rows: int = Field(2048, gt=0)

    @field_validator("benchmarks")
    @classmethod
    def _bench_paths(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return existing_paths(v, info)

    @field_validator("scores")
    @classmethod
    def _score_paths(cls, v: list[str], info: ValidationInfo) -> list[str]:
        """Paths, each optionally ``BENCHMARK=PATH`` (the benchmark its samples are of)."""
        out = []
        for item in v:
            name, path = split_named(item)
            out.append((f"{name}=" if name else "") + existing_paths([path], info)[0])
        return out


def split_named(item: str) -> tuple[str | None, str]:
    """``"arc_easy_test=out/samples_arc_easy.jsonl"`` -> (name, path); a plain path -> (None, path)."""
    head, sep, tail = item.partition("=")
    if sep and head and "/" not in head and "\\" not in head and ":" not in head:
        return head, tail
    return None, item


