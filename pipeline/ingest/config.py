"""Config of the ingest stage: the sources and how their files are read."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from siftmix.pipeline.core.config import Strict, existing_paths, resolve_path

FORMATS = ("auto", "wet", "warc", "jsonl", "parquet", "txt")
Format = Literal["auto", "wet", "warc", "jsonl", "parquet", "txt"]


class ListingSample(Strict):
    n: int = Field(gt=0, description="files to take")
    seed: int = 0


class SourceConfig(Strict):
    """One input source: a name, where its files are, and how to read them."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$",
                      description="source name, e.g. common_crawl, wikipedia: letters, digits, _ . - "
                      "(starting with a letter or digit: it names files and folders)")
    paths: list[str] = Field(min_length=1, description="files, folders or globs (relative to the config file), local "
                             "or URLs (s3://, gs://, https://); a file ending in .paths or .paths.gz is a Common Crawl "
                             "listing: one file per line, relative to `base`")
    format: Format = Field("auto", description="auto detects from the file name")
    filter: bool = Field(False, description="apply the quality filter to this source (GPT-3: Common Crawl only)")
    text_field: str = "text"
    id_field: str | None = Field("id", description="field holding a stable id; None derives one from file+record")
    url_field: str | None = "url"
    base: str = Field("s3://commoncrawl/", description="what the lines of a listing (.paths[.gz]) are relative to: "
                      "s3://commoncrawl/, https://data.commoncrawl.org/, or a local folder holding a copy")
    limit: int | None = Field(None, gt=0, description="a listing: take its first N files")
    sample: ListingSample | None = Field(None, description="a listing: a seeded sample of n files (after `limit`), in listing order")
    on_missing: Literal["fail", "reject"] = Field(
        "fail", description="a listed file that does not exist: stop the run with one line (fail), or count it as one "
        "rejected row, reason missing_file (reject)")

    @field_validator("name", mode="before")
    @classmethod
    def _safe_name(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", v):
            raise ValueError(f"source name {v!r} is not allowed: it names files and folders, so it must start "
                             "with a letter or digit and hold only letters, digits, '_', '.' and '-' (at most 100)")
        return v

    @field_validator("paths", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("paths")
    @classmethod
    def _resolve(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return existing_paths(v, info)

    @field_validator("base")
    @classmethod
    def _base(cls, v: str, info: ValidationInfo) -> str:
        return resolve_path(v, info)

    def is_listing(self, path: str) -> bool:
        return path.lower().endswith((".paths", ".paths.gz"))


class IngestConfig(Strict):
    min_chars: int = Field(100, ge=0, description="documents shorter than this (after normalising) are rejected as too_short")
    max_chars: int = Field(10_000_000, gt=0, description="documents longer than this are rejected as too_long")
    on_bad_encoding: Literal["repair", "reject"] = Field(
        "repair", description="invalid UTF-8: repair with U+FFFD (meta.repaired_encoding) or reject as bad_encoding"
    )
    control_chars: Literal["strip", "keep", "reject"] = Field(
        "strip", description="C0 control characters other than tab and newline (NUL, BEL, ESC, VT, FF, ...): "
        "strip them from the text, keep them, or reject the document as control_chars")
    html_extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    main_content: bool = Field(True, description="WARC HTML: keep the main content only (drop navigation, footers)")
    keep_rejected_text: bool = Field(True, description="store the text of rejected documents in rejected/")
    shard_max_bytes: int = Field(64 * 2**20, gt=0, description="roll over to a new output shard past this many text bytes "
                                 "(the later stages run a task per shard: smaller shards use more cores on few big files)")
    batch_rows: int = Field(4096, gt=0, description="documents per Arrow batch inside a task")


