"""Building blocks of the run configuration that every stage's config model uses.

Each stage's config model lives in its own package and derives from :class:`Strict`;
``siftmix.pipeline.config.RunConfig`` composes them. Paths in a config are relative to the
config file's folder (``base_dir`` in the validation context); every path key also takes a URL
(``s3://``, ``gs://``, ``https://`` for inputs, ``file://``), checked by :func:`check_url`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from siftmix.pipeline.core import storage


class Strict(BaseModel):
    """A config section: unknown keys are errors (with a did-you-mean hint), assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


URL_SCHEMES = ("s3", "gs", "https", "http", "file")


def check_url(url: str, writable: bool = False) -> str:
    """A URL a path key may hold, as storage takes it (``file://`` becomes a local path), or
    ValueError: an unsupported scheme, credentials in the URL, https for a folder siftmix writes."""
    from urllib.parse import unquote, urlsplit

    u = urlsplit(url)
    scheme = u.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValueError(f"unsupported URL scheme {u.scheme + '://'!r} in {url.split('@')[-1]!r}: use a local path, "
                         "file://, s3://, gs:// or (to read) https://")
    if "@" in u.netloc:
        raise ValueError("a URL must not hold credentials (user:secret@): give them in the environment "
                         "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)")
    if scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"a file:// URL names a local path (file:///abs/path), not a host: {url!r}")
        return unquote(u.path)
    if not u.netloc:
        raise ValueError(f"{url!r} names no bucket or host")
    if writable and scheme in ("https", "http"):
        raise ValueError(f"{scheme}:// is read-only: siftmix writes here, so use a local path, s3:// or gs:// ({url!r})")
    return f"{scheme}://{u.netloc}{u.path}" + (f"?{u.query}" if u.query else "")


def resolve_path(path: str, info: ValidationInfo | None = None, writable: bool = False) -> str:
    """An absolute path or a URL: relative paths are relative to the config file's folder."""
    if "://" in path:
        path = check_url(path, writable)
        if "://" in path:
            return path
    path = os.path.expanduser(path)
    base = Path(((info.context if info else None) or {}).get("base_dir", "."))
    return os.path.abspath(path if os.path.isabs(path) else str(base / path))


def existing_paths(paths: list[str], info: ValidationInfo) -> list[str]:
    """Absolute paths or URLs that exist (a glob must match at least one file); a store that
    cannot be reached or refuses access is a one-line error naming the URL."""
    out = []
    for p in paths:
        full = resolve_path(p, info)
        try:
            if storage.has_magic(full.split("://", 1)[-1]):
                if not storage.glob(full):
                    raise ValueError(f"no file matches {p!r}")
            elif not storage.exists(full):
                raise ValueError(f"path does not exist: {p!r}")
        except OSError as err:
            raise ValueError(f"cannot read {p!r}: {err}") from None
        out.append(full)
    return out


class StorageConfig(Strict):
    """How to reach object storage; credentials come from the standard environment only."""

    endpoint: str | None = Field(None, description="S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, else AWS)")
    region: str | None = Field(None, description="default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1")
    anonymous: bool = Field(False, description="unsigned requests, for public buckets such as s3://commoncrawl")
    retries: int = Field(8, ge=1, le=50, description="attempts of each storage call on transient errors (5xx, throttling, "
                         "refused or reset connections), with exponential backoff")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and ("@" in v.split("://", 1)[-1].split("/", 1)[0] or not v.startswith(("http://", "https://"))):
            raise ValueError(f"endpoint must be an http:// or https:// URL without credentials: {v.split('@')[-1]!r}")
        return v


class RayConfig(Strict):
    address: str | None = Field(None, description="existing cluster (also RAY_ADDRESS); None starts a local Ray")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the embedded local Ray (default: all)")
    workers: int | None = Field(None, gt=0, description="at most this many concurrent tasks per stage")
    object_store_memory: int | None = Field(None, gt=0)
    dashboard: bool = Field(False, description="start the Ray dashboard and print its URL")
