"""The registry: the ordered list of stages.

The CLI commands, the validation of ``stages:``, the run config's sections, the stage folders
and the run report all come from here. Adding a stage is one package (its config model and its
:class:`~siftmix.pipeline.core.stage.Stage`) plus one line in :data:`STAGES`
(docs/ARCHITECTURE.md, "Adding a stage").
"""

from __future__ import annotations

from siftmix.contamination.stage import AUDIT, DECONTAM
from siftmix.dedup.stage import DEDUP
from siftmix.filters.langid import LANGID
from siftmix.filters.stage import QUALITY, QUALITY_SCORE
from siftmix.mixing.stage import MIX

from .core.stage import Stage
from .ingest.stage import INGEST

#: The pipeline, in order: each stage reads the output of the last configured stage before it.
STAGES: list[Stage] = [
    INGEST,
    LANGID,
    QUALITY,
    DEDUP,
    DECONTAM,
    MIX,
]

#: Stages that run in another stage's place by their own command (``input_of``), never in `siftmix run`.
VARIANTS: list[Stage] = [QUALITY_SCORE, AUDIT]

_listeners: list = []


def names() -> list[str]:
    return [s.name for s in STAGES]


def get(name: str) -> Stage:
    for s in STAGES + VARIANTS:
        if s.name == name:
            return s
    raise KeyError(f"no stage named {name!r} (stages: {', '.join(names())})")


def stage_before(stage: str, among) -> str | None:
    """The last pipeline stage before ``stage`` (a variant: before the stage it stands for) that is
    in ``among`` (the configured stages, or the stages present in a run folder); None if none."""
    pos = get(stage).input_of or stage
    order = names()
    before = [s for s in order[: order.index(pos)] if s in among] if pos in order else []
    return before[-1] if before else None


def all_stages() -> list[Stage]:
    """Pipeline stages and variants, in folder order (the run report's order)."""
    return sorted(STAGES + VARIANTS, key=lambda s: (s.folder, s.input_of is not None))


def register(stage: Stage, after: str | None = None) -> None:
    """Add a stage (after ``after``, default last); the run config model is rebuilt. For plugins
    and tests: built-in stages are listed in :data:`STAGES`."""
    if stage.name in names() or any(v.name == stage.name for v in VARIANTS):
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    STAGES.insert(names().index(after) + 1 if after else len(STAGES), stage)
    for fn in _listeners:
        fn()


def unregister(name: str) -> None:
    STAGES[:] = [s for s in STAGES if s.name != name]
    for fn in _listeners:
        fn()


def on_change(fn) -> None:
    _listeners.append(fn)
