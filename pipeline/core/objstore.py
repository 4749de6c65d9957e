"""Object-storage backends of :mod:`.storage`: ``s3://``, ``gs://`` and ``https://`` (read-only).

:mod:`.storage` is the only user of this module: it sends a path here when it is a URL and
keeps its own code for local paths. Every backend offers the same few operations (stat, list
under a prefix, open for reading, put a whole object, delete, and for the run-dir lease a
conditional put); :func:`retrying` gives each call bounded retries with backoff on transient
errors (5xx, throttling, refused or reset connections) and, after the last one, one error line
naming the object.

- S3 (and S3-compatible stores) through boto3: ETags come with every listing and stat, and
  ``IfNoneMatch``/``IfMatch`` make the lease of the run-dir lock atomic. Credentials come from
  the standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles),
  the endpoint from ``AWS_ENDPOINT_URL`` or the ``storage:`` section.
- GCS through pyarrow's ``GcsFileSystem`` (``GOOGLE_APPLICATION_CREDENTIALS``): pyarrow gives no
  generation number, so a GCS fingerprint is size plus update time, and the lease is
  written and read back (no conditional put).
- HTTPS through fsspec's HTTP filesystem, for inputs and listings; never written.

Settings (endpoint, region, anonymous, retries) come from :func:`configure`, or in a Ray worker
from the ``SIFTMIX_STORAGE`` environment variable that the driver sets in the runtime env;
they never hold a secret.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

ENV = "SIFTMIX_STORAGE"
SCHEMES = ("s3", "gs", "https", "http")
WRITABLE = ("s3", "gs")


class StorageError(OSError):
    """An object-storage call failed for good: one line naming the object."""


class PreconditionFailed(StorageError):
    """A conditional put lost: the object exists already (or changed)."""


@dataclass
class Settings:
    endpoint: str | None = None     # S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)
    region: str | None = None       # default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    anonymous: bool = False         # unsigned requests (public buckets such as s3://commoncrawl)
    retries: int = 8                # attempts of each call before it fails
    backoff_s: float = 0.25         # first wait; doubles, capped at max_backoff_s, with jitter
    max_backoff_s: float = 8.0


_settings: Settings | None = None
_backends: dict[tuple, object] = {}


def configure(settings: dict | None) -> None:
    """Use these settings in this process, and (through the environment) in its Ray workers."""
    global _settings
    _settings = Settings(**{k: v for k, v in (settings or {}).items() if v is not None})
    os.environ[ENV] = json.dumps(_settings.__dict__)
    _backends.clear()


def settings() -> Settings:
    global _settings
    if _settings is None:
        raw = os.environ.get(ENV)
        _settings = Settings(**json.loads(raw)) if raw else Settings()
    return _settings


def scheme_of(path: str) -> str | None:
    """``s3``/``gs``/``https``/``http`` for a URL this layer serves, None for a local path."""
    if "://" not in path:
        return None
    return urlsplit(path).scheme.lower()


def split(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or host, key) of a URL."""
    u = urlsplit(url)
    return u.scheme.lower(), u.netloc, u.path.lstrip("/")


def public_url(url: str) -> str:
    """The URL without any ``user:password@`` part (never logged, never written)."""
    u = urlsplit(url)
    if "@" in u.netloc:
        return url.replace(u.netloc, u.netloc.rsplit("@", 1)[1], 1)
    return url


# --------------------------------------------------------------------------- retries

_TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "Throttling",
                    "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "TooManyRequests", "429"}
_PERMANENT_HINTS = ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
                    "403", "401", "404", "NoSuchKey", "InvalidBucketName", "PreconditionFailed")
_TRANSIENT_HINTS = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Connection refused", "Connection reset",
                    "connection was closed", "Connection aborted", "Remote end closed", "timed out", "Timeout",
                    "SLOW_DOWN", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "Throttl", "Broken pipe",
                    "IncompleteRead", "Server disconnected", "Cannot connect to host")


def _code(err: BaseException) -> str | None:
    resp = getattr(err, "response", None)
    if isinstance(resp, dict):
        e = resp.get("Error", {})
        return str(e.get("Code") or resp.get("ResponseMetadata", {}).get("HTTPStatusCode") or "") or None
    return None


def is_transient(err: BaseException) -> bool:
    """A failure worth retrying: a 5xx, throttling, or a refused/reset/timed-out connection."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, PreconditionFailed)):
        return False
    code = _code(err)
    if code is not None:
        return code in _TRANSIENT_CODES
    status = getattr(err, "status", None)  # aiohttp.ClientResponseError
    if isinstance(status, int):
        return status >= 500 or status == 429
    text = f"{type(err).__name__}: {err}"
    if any(h in text for h in _PERMANENT_HINTS):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    try:
        import botocore.exceptions as bex

        if isinstance(err, (bex.EndpointConnectionError, bex.ConnectionClosedError, bex.ReadTimeoutError,
                            bex.ConnectTimeoutError, bex.ConnectionError)):
            return True
    except ImportError:
        pass
    try:
        import aiohttp

        if isinstance(err, (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError)):
            return True
    except ImportError:
        pass
    return any(h in text for h in _TRANSIENT_HINTS)


def describe(err: BaseException) -> str:
    """The cause of a failure in a few words (no request ids, no secrets)."""
    code = _code(err)
    if code:
        msg = (getattr(err, "response", {}) or {}).get("Error", {}).get("Message") or ""
        return f"{code}{': ' + msg if msg and msg != code else ''}"
    text = str(err).split("(Request ID")[0].strip() or type(err).__name__
    return text.splitlines()[0][:300]


def fail(err: BaseException, what: str, url: str, attempts: int = 1) -> OSError:
    """One line: what failed, on which object, why (and after how many tries)."""
    url = public_url(url)
    code = _code(err) or ""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if code in ("NoSuchBucket",) or "NO_SUCH_BUCKET" in str(err):
        return FileNotFoundError(2, f"the bucket does not exist ({what})", url)
    if code in ("404", "NoSuchKey") or isinstance(err, FileNotFoundError):
        return FileNotFoundError(2, f"no such object ({what})", url)
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "401", "ExpiredToken",
                "InvalidToken") or isinstance(err, PermissionError):
        return PermissionError(13, f"access denied ({what}: {describe(err)}; check the credentials in "
                               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or GOOGLE_APPLICATION_CREDENTIALS)", url)
    if isinstance(err, PreconditionFailed):
        return err
    return StorageError(f"{what} failed{tries}: {describe(err)}: {url}")


def retrying(fn: Callable, what: str, url: str, on_retry: Callable[[], None] | None = None):
    """``fn()`` with bounded retries and backoff on transient errors; then one line naming ``url``."""
    s = settings()
    for attempt in range(1, max(1, s.retries) + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified below
            if isinstance(err, (StorageError,)) and not isinstance(err, PreconditionFailed) and "failed" in str(err):
                raise
            if not is_transient(err) or attempt >= s.retries:
                raise fail(err, what, url, attempt) from None
            delay = min(s.max_backoff_s, s.backoff_s * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random() / 2))
            if on_retry:
                on_retry()
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- what a stat gives

@dataclass(frozen=True)
class Info:
    url: str
    size: int
    version: str   # ETag (S3, HTTPS), update time (GCS), Last-Modified: what changes with the content
    is_dir: bool = False


# --------------------------------------------------------------------------- S3 (boto3)

class S3:
    scheme = "s3"

    def __init__(self):
        import boto3
        import botocore
        from botocore.config import Config

        s = settings()
        self._botocore = botocore
        cfg = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=60,
                     max_pool_connections=32, **({"signature_version": botocore.UNSIGNED} if s.anonymous else {}))
        region = s.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = s.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=cfg)

    def _err(self):
        return self._botocore.exceptions.ClientError

    def stat(self, url: str) -> Info | None:
        """The object's size and ETag; None if there is none; a prefix with objects is a folder."""
        _, bucket, key = split(url)

        def head():
            try:
                r = self.client.head_object(Bucket=bucket, Key=key)
                return Info(url, r["ContentLength"], r.get("ETag", "").strip('"'))
            except self._err() as err:
                if _code(err) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        info = retrying(head, "stat", url) if key else None
        if info is not None:
            return info
        r = retrying(lambda: self.client.list_objects_v2(Bucket=bucket, Prefix=(key.rstrip("/") + "/") if key else "",
                                                          MaxKeys=1), "list", url)
        return Info(url, 0, "", is_dir=True) if r.get("KeyCount", 0) or not key else None

    def list(self, url: str, recursive: bool = True) -> list[Info]:
        """Every object under the prefix ``url/`` (recursive), or its direct children."""
        _, bucket, key = split(url)
        prefix = (key.rstrip("/") + "/") if key else ""
        out, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, **({} if recursive else {"Delimiter": "/"}),
                  **({"ContinuationToken": token} if token else {})}
            r = retrying(lambda kw=kw: self.client.list_objects_v2(**kw), "list", url)
            for o in r.get("Contents", []):
                out.append(Info(f"s3://{bucket}/{o['Key']}", o["Size"], o.get("ETag", "").strip('"')))
            for p in r.get("CommonPrefixes", []):
                out.append(Info(f"s3://{bucket}/{p['Prefix'].rstrip('/')}", 0, "", is_dir=True))
            if not r.get("IsTruncated"):
                return out
            token = r["NextContinuationToken"]

    def open(self, url: str, size: int | None = None):
        return RangeReader(self, url, size)

    def get_range(self, url: str, start: int, end: int | None):
        """A streaming body of bytes ``start`` to ``end`` (inclusive; None: to the end)."""
        _, bucket, key = split(url)
        rng = f"bytes={start}-{'' if end is None else end}"
        try:
            return self.client.get_object(Bucket=bucket, Key=key, Range=rng)["Body"]
        except self._err() as err:
            if _code(err) == "InvalidRange":  # at or past the end of the object
                return io.BytesIO(b"")
            raise

    def put(self, url: str, fh, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Upload the whole of ``fh`` (rewound on every attempt); returns the ETag."""
        _, bucket, key = split(url)

        def go():
            fh.seek(0)
            kw = {"IfNoneMatch": "*"} if if_none_match else {"IfMatch": f'"{if_match}"'} if if_match else {}
            try:
                if kw:
                    return self.client.put_object(Bucket=bucket, Key=key, Body=fh.read(), **kw)["ETag"].strip('"')
                fh.seek(0, 2)
                n = fh.tell()
                fh.seek(0)
                if n <= 64 << 20:
                    return self.client.put_object(Bucket=bucket, Key=key, Body=fh)["ETag"].strip('"')
                from boto3.s3.transfer import TransferConfig

                self.client.upload_fileobj(fh, bucket, key, Config=TransferConfig(multipart_chunksize=64 << 20))
                return ""
            except self._err() as err:
                if _code(err) in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    raise PreconditionFailed(f"the object exists or changed: {url}") from None
                raise

        return retrying(go, "write", url)

    def delete(self, urls: list[str]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for u in urls:
            _, b, k = split(u)
            by_bucket.setdefault(b, []).append(k)
        for b, keys in by_bucket.items():
            for i in range(0, len(keys), 1000):
                objs = [{"Key": k} for k in keys[i:i + 1000]]
                retrying(lambda b=b, objs=objs: self.client.delete_objects(Bucket=b, Delete={"Objects": objs, "Quiet": True}),
                         "delete", f"s3://{b}/{keys[i]}")


class RangeReader(io.RawIOBase):
    """A seekable reader of one object: sequential reads stream one GET from the current
    position; a seek drops it and the next read opens a ranged GET there. A transient failure
    in the middle reopens at the byte it had reached (bounded retries): a stream survives a
    server restart without reading anything twice or skipping anything."""

    def __init__(self, backend, url: str, size: int | None = None):
        self.backend, self.url = backend, url
        self._size = size
        self.pos = 0
        self.body = None
        self.body_pos = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        if self._size is None:
            info = self.backend.stat(self.url)
            if info is None or info.is_dir:
                raise FileNotFoundError(2, "no such object", public_url(self.url))
            self._size = info.size
        return self._size

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.size()
        self.pos = max(0, offset)
        return self.pos

    def _drop(self):
        if self.body is not None:
            try:
                self.body.close()
            except Exception:  # noqa: BLE001
                pass
        self.body, self.body_pos = None, -1

    def readinto(self, b) -> int:
        want = len(b)
        if want == 0:
            return 0
        if self._size is not None and self.pos >= self._size:
            return 0

        def once():
            if self.body is None or self.body_pos != self.pos:
                self._drop()
                self.body = self.backend.get_range(self.url, self.pos, None)
                self.body_pos = self.pos
            data = self.body.read(want)
            return data

        data = retrying(once, "read", self.url, on_retry=self._drop)
        n = len(data)
        b[:n] = data
        self.pos += n
        self.body_pos = self.pos
        return n

    def close(self) -> None:
        self._drop()
        super().close()


# --------------------------------------------------------------------------- GCS (pyarrow)

class GCS:
    scheme = "gs"

    def __init__(self):
        import pyarrow.fs as pafs

        s = settings()
        kw = {"anonymous": True} if s.anonymous else {}
        if s.endpoint:
            u = urlsplit(s.endpoint)
            kw.update(endpoint_override=u.netloc or s.endpoint, scheme=u.scheme or "https")
        self.fs = pafs.GcsFileSystem(**kw)
        self.pafs = pafs

    @staticmethod
    def _p(url: str) -> str:
        _, b, k = split(url)
        return f"{b}/{k}".rstrip("/")

    def _info(self, url: str, fi) -> Info:
        mtime = fi.mtime_ns if fi.mtime_ns is not None else ""
        return Info(url, fi.size or 0, str(mtime), is_dir=fi.type == self.pafs.FileType.Directory)

    def stat(self, url: str) -> Info | None:
        fi = retrying(lambda: self.fs.get_file_info(self._p(url)), "stat", url)
        return None if fi.type == self.pafs.FileType.NotFound else self._info(url, fi)

    def list(self, url: str, recursive: bool = True) -> list[Info]:
        sel = self.pafs.FileSelector(self._p(url), recursive=recursive, allow_not_found=True)
        return [self._info(f"gs://{fi.path}", fi) for fi in retrying(lambda: self.fs.get_file_info(sel), "list", url)
                if recursive is False or fi.type != self.pafs.FileType.Directory]

    def open(self, url: str, size: int | None = None):
        return RangeReader(self, url, size)

    def get_range(self, url: str, start: int, end: int | None):
        f = self.fs.open_input_file(self._p(url))
        f.seek(start)
        return f

    def put(self, url: str, fh, if_none_match: bool = False, if_match: str | None = None) -> str:
        if if_none_match and self.stat(url) is not None:
            raise PreconditionFailed(f"the object exists: {url}")

        def go():
            fh.seek(0)
            with self.fs.open_output_stream(self._p(url)) as out:
                while chunk := fh.read(8 << 20):
                    out.write(chunk)
            return ""

        return retrying(go, "write", url)

    def delete(self, urls: list[str]) -> None:
        for u in urls:
            retrying(lambda u=u: self.fs.delete_file(self._p(u)), "delete", u)


# --------------------------------------------------------------------------- HTTPS (fsspec), read-only

class HTTP:
    scheme = "https"

    def __init__(self):
        import fsspec

        self.fs = fsspec.filesystem("https")

    def stat(self, url: str) -> Info | None:
        def go():
            try:
                i = self.fs.info(url)
            except FileNotFoundError:
                return None
            version = str(i.get("ETag") or i.get("etag") or i.get("Last-Modified") or "")
            return Info(url, int(i.get("size") or 0), version)

        return retrying(go, "stat", url)

    def list(self, url: str, recursive: bool = True) -> list[Info]:
        raise StorageError(f"an https:// folder cannot be listed: give the file URLs or a listing file: {url}")

    def open(self, url: str, size: int | None = None):
        return RangeReader(self, url, size)

    def get_range(self, url: str, start: int, end: int | None):
        f = self.fs.open(url, "rb", block_size=0)  # a plain stream: no Range support needed
        if start:
            try:
                f.close()
                f = self.fs.open(url, "rb", block_size=1 << 20)
                f.seek(start)
            except Exception:  # noqa: BLE001 - a server without Range: skip ahead in a stream
                f = self.fs.open(url, "rb", block_size=0)
                left = start
                while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                    left -= len(chunk)
        return f

    def put(self, url: str, fh, **_kw) -> str:
        raise PermissionError(13, "https:// is read-only (inputs and listings only)", public_url(url))

    def delete(self, urls: list[str]) -> None:
        raise PermissionError(13, "https:// is read-only (inputs and listings only)", public_url(urls[0]))


_CLASSES = {"s3": S3, "gs": GCS, "https": HTTP, "http": HTTP}


def backend(url: str):
    """The backend serving ``url`` (one per scheme and process)."""
    scheme = scheme_of(url)
    if scheme not in _CLASSES:
        raise ValueError(f"unsupported URL scheme {scheme!r} (use s3://, gs://, https:// or a local path): {url}")
    key = (scheme, os.getpid())
    if key not in _backends:
        _backends[key] = _CLASSES[scheme]()
    return _backends[key]
