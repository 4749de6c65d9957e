"""A toy stage, the worked example of docs/ARCHITECTURE.md "Adding a stage": it rejects
documents with fewer than ``toy.min_words`` words (reason ``toy_short``) and passes the rest
through unchanged. One config model, one ShardWorker, one ShardStage: nothing else."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from siftmix.pipeline.core.config import Strict
from siftmix.pipeline.core.shards import Processed, ShardWorker, rejected_rows
from siftmix.pipeline.core.stage import ShardStage, StageContext


class ToyConfig(Strict):
    min_words: int = Field(50, ge=0, description="documents with fewer words are rejected as toy_short")


class ToyWorker(ShardWorker):
    def __init__(self, min_words: int, keep_text: bool):
        self.min_words, self.keep_text = min_words, keep_text

    def process(self, batch: pa.Table, state) -> Processed:
        n_words = pc.list_value_length(pc.utf8_split_whitespace(batch["text"]))
        short = pc.less(n_words, self.min_words)
        kept = batch.filter(pc.invert(short))
        rejected = rejected_rows(batch, pa.array(["toy_short"] * batch.num_rows, pa.string()),
                                 keep_text=self.keep_text, mask=short)
        return Processed(kept, rejected)


class ToyStage(ShardStage):
    name = "toy"
    folder = "25_toy"
    config_key = "toy"
    config_model = ToyConfig
    help = "Reject documents with fewer than toy.min_words words (the worked example of a stage)."

    def worker(self, ctx: StageContext, prepared: dict) -> ToyWorker:
        return ToyWorker(ctx.cfg.toy.min_words, ctx.cfg.ingest.keep_rejected_text)

    def report(self, run_dir: str, folder: str, manifest: dict) -> str:
        return f"<p id=\"toy-note\">min_words {manifest['config']['toy']['min_words']}</p>"

    def finish(self, ctx: StageContext, results, prepared: dict) -> dict:
        return {**super().finish(ctx, results, prepared), "config": {"toy": ctx.cfg.toy.model_dump()}}


TOY = ToyStage()
