"""Config of the mix stage (GPT-3 Table 2.2)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.config import Strict, resolve_path

GPT3_WEIGHTS = {"common_crawl": 0.60, "webtext2": 0.22, "books1": 0.08, "books2": 0.08, "wikipedia": 0.02}


class MixConfig(Strict):
    """Token-weighted mixture (GPT-3 Table 2.2; weights are shares of training tokens)."""

    weights: dict[str, float] = Field(default_factory=lambda: dict(GPT3_WEIGHTS))
    total_tokens: int | None = Field(None, gt=0, description="tokens in the mix; default: the most that no source's epoch cap forbids")
    max_epochs: float | dict[str, float] = Field(10.0, description="cap on epochs per source (one number, or per source)")
    tokenizer: str = Field("gpt2", description="gpt2 (offline GPT-2 BPE, as GPT-3) or a tokenizer.json file")
    split_chars: int = Field(8192, gt=100, description="documents longer than this are mixed in pieces (cut at whitespace)")
    shard_tokens: int = Field(50_000_000, gt=0, description="tokens per output shard (a shard ends at a document boundary)")
    tokenized: bool = Field(True, description="also write the token ids of each shard (see token_format)")
    token_format: Literal["megatron", "npy"] = Field(
        "megatron", description="megatron: .bin + .idx (Megatron-LM/NeMo indexed dataset, MMIDIDX); "
                                "npy: .bin (uint16/uint32) + .idx.npy (int64 document offsets)")
    partition_bytes: int = Field(256 * 2**20, gt=0, description="bytes of text per shuffle partition (held in one task)")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        for name, w in v.items():
            if not math.isfinite(w):
                raise ValueError(f"the weight of {name!r} is {w}: give a number from 0 to 1")
            if w < 0:
                raise ValueError(f"the weight of {name!r} is negative ({w:g})")
        total = math.fsum(v.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the weights must sum to 1 (they sum to {total:.6g}): they are shares of the "
                             "training tokens")
        return v

    @field_validator("max_epochs")
    @classmethod
    def _epochs(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        for name, e in (v.items() if isinstance(v, dict) else [("", v)]):
            if not math.isfinite(e) or e <= 0:
                raise ValueError(f"{'the cap of ' + repr(name) if name else 'the cap'} must be a positive number "
                                 f"of epochs (got {e})")
        return v

    @field_validator("tokenizer")
    @classmethod
    def _tok(cls, v: str, info: ValidationInfo) -> str:
        if v == "gpt2":
            return v
        full = resolve_path(v, info)
        try:
            found = storage.isfile(full)
        except OSError as err:
            raise ValueError(f"cannot read the tokenizer file {v!r}: {err}") from None
        if not found:
            raise ValueError(f"not 'gpt2' and no such tokenizer file: {v!r}")
        return full

    def epoch_cap(self, source: str) -> float:
        if isinstance(self.max_epochs, dict):
            return float(self.max_epochs.get(source, self.max_epochs.get("default", 10.0)))
        return float(self.max_epochs)


