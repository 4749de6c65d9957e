"""Building blocks of the run configuration that every stage's config model uses.

Each stage's config model lives in its own package and derives from :class:`Strict`;
``siftmix.pipeline.config.RunConfig`` composes them. Paths in a config are relative to the
config file's folder (``base_dir`` in the validation context).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from siftmix.pipeline.core import storage
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo


class Strict(BaseModel):
    """A config section: unknown keys are errors (with a did-you-mean hint), assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def resolve_path(path: str, info: ValidationInfo) -> str:
    """An absolute path: relative ones are relative to the config file's folder."""
    path = os.path.expanduser(path)
    base = Path((info.context or {}).get("base_dir", "."))
    return os.path.abspath(path if os.path.isabs(path) else str(base / path))


def existing_paths(paths: list[str], info: ValidationInfo) -> list[str]:
    """Absolute paths that exist (a glob must match at least one file)."""
    out = []
    for p in paths:
        full = resolve_path(p, info)
        if glob.has_magic(full):
            if not storage.glob(full):
                raise ValueError(f"no file matches {p!r}")
        elif not os.path.exists(full):
            raise ValueError(f"path does not exist: {p!r}")
        out.append(full)
    return out


class RayConfig(Strict):
    address: str | None = Field(None, description="existing cluster (also RAY_ADDRESS); None starts a local Ray")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the embedded local Ray (default: all)")
    workers: int | None = Field(None, gt=0, description="at most this many concurrent tasks per stage")
    object_store_memory: int | None = Field(None, gt=0)
    dashboard: bool = Field(False, description="start the Ray dashboard and print its URL")
