"""Run configuration: one YAML file, validated with pydantic.

:class:`RunConfig` composes the config model of every registered stage (``config_key`` ->
``config_model``, each defined in its stage's package) with the run-wide keys (``run_dir``,
``seed``, ``stages``, ``sources``, ``ray``). Every error a user can make in the file (unknown
key, wrong type, missing input path, bad YAML, a constraint across sections) becomes a
:class:`ConfigError` whose message is one line naming the file and the key.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from . import registry
from .core.config import RayConfig, StorageConfig, Strict, resolve_path
from .core.errors import ConfigError
from .core.hashing import stable_hash
from .ingest.config import FORMATS, SourceConfig

__all__ = ["FORMATS", "ConfigError", "RayConfig", "RunConfig", "config_from_dict", "load_config", "stable_hash"]


class RunBase(Strict):
    """The run-wide keys; the stage sections are added from the registry (:func:`build_run_config`)."""

    run_dir: str = "runs/siftmix"
    seed: int = 0
    stages: list[str] | None = Field(None, description="default: every stage (decontam only when decontam.benchmarks is set)")
    storage: StorageConfig = Field(default_factory=StorageConfig)
    sources: list[SourceConfig] = Field(min_length=1)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="before")
    @classmethod
    def _storage_first(cls, data: Any) -> Any:
        """Set up object storage before any path is checked (sources, benchmarks, models may be URLs)."""
        from .core import objstore

        if isinstance(data, dict):
            raw = data.get("storage")
            try:
                objstore.configure(StorageConfig(**raw).model_dump() if isinstance(raw, dict) else None)
            except ValidationError:
                pass  # reported, with its key, by the field's own validation
        return data

    @field_validator("run_dir")
    @classmethod
    def _run_dir(cls, v: str, info: ValidationInfo) -> str:
        return resolve_path(v, info, writable=True)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str] | None) -> list[str] | None:
        known = registry.names()
        for st in v or []:
            if st not in known:
                close = difflib.get_close_matches(st, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown stage {st!r}{hint}; stages: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _default_stages(self):
        stages = self.stages
        if stages is None:
            stages = [st.name for st in registry.STAGES if st.enabled_by_default(self)]
        # pipeline order; set without re-validating (validate_assignment would recurse)
        object.__setattr__(self, "stages", [st for st in registry.names() if st in stages])
        return self

    @model_validator(mode="after")
    def _checks(self):
        seen = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} appears twice")
            seen.add(s.name)
        for st in registry.STAGES:
            if st.name in self.stages:
                st.check(self)
        return self

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def build_run_config() -> type[RunBase]:
    """The RunConfig model: the run-wide keys plus one section per registered stage."""
    sections = {st.config_key: (st.config_model, Field(default_factory=st.config_model))
                for st in registry.STAGES + registry.VARIANTS if st.config_key and st.config_model}
    return create_model("RunConfig", __base__=RunBase, **sections)


RunConfig = build_run_config()


def _rebuild() -> None:
    global RunConfig
    RunConfig = build_run_config()


registry.on_change(_rebuild)


def _all_models(base: type) -> list[type]:
    out = []
    for m in base.__subclasses__():
        out += [m, *_all_models(m)]
    return out


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
        known = {f for m in _all_models(Strict) for f in m.model_fields}
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
