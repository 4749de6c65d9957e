import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SIFTMIX_SHARED_DATA", REPO.parent / "shared" / "data"))
SIFTMIX = [sys.executable, "-m", "siftmix"]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (ray.init costs 6-8 s)."""
    import ray
    from siftmix.pipeline.config import RayConfig
    from siftmix.pipeline.core.ray_runner import ray_session

    with ray_session(RayConfig(num_cpus=2, object_store_memory=400 * 2**20)):
        yield ray


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    from siftmix.pipeline.demo import generate

    out = tmp_path_factory.mktemp("demo") / "corpus"
    generate(str(out), 2_000_000, seed=7)
    return out


def demo_sources(corpus: Path) -> list[dict]:
    """The five GPT-3 sources of a corpus written by `siftmix demo-data`."""
    return [
        {"name": "common_crawl", "paths": [str(corpus / "cc")], "filter": True},
        {"name": "webtext2", "paths": [str(corpus / "webtext2")]},
        {"name": "books1", "paths": [str(corpus / "books1")], "format": "txt"},
        {"name": "books2", "paths": [str(corpus / "books2")]},
        {"name": "wikipedia", "paths": [str(corpus / "wikipedia")]},
    ]


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([*SIFTMIX, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def committed(stage_dir) -> Path:
    """The attempt folder a finished stage's manifest committed (where its files are)."""
    stage_dir = Path(stage_dir)
    m = json.loads((stage_dir / "_manifest.json").read_text())
    return stage_dir / m["attempt"]


def parquet_bytes(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every Parquet file under a folder (of a finished stage folder:
    under its committed attempt)."""
    folder = Path(folder)
    if (folder / "_manifest.json").exists():
        folder = committed(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: starts a real 2-node Ray cluster on this machine (ray start)")


#: The stages of the demo runs that resume, fault and cluster tests compare byte for byte.
DEMO_STAGES = ["ingest", "quality", "dedup", "decontam", "mix"]


def write_demo_config(path: Path, corpus: Path, run_dir: Path, stages=DEMO_STAGES) -> Path:
    """A run config for a `siftmix demo-data` corpus with absolute paths only (a `ray job submit`
    driver runs in Ray's copy of the working dir), small mix shards and several partitions."""
    import yaml

    cfg = {"run_dir": str(run_dir), "seed": 5, "stages": list(stages), "sources": demo_sources(corpus),
           "ingest": {"min_chars": 200}, "decontam": {"benchmarks": [str(corpus / "benchmarks")]},
           "mix": {"shard_tokens": 20_000, "partition_bytes": 150_000}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def demo_reference(ray_local, demo_corpus, tmp_path_factory) -> Path:
    """The run dir of an uninterrupted embedded run of the demo config (DEMO_STAGES)."""
    from siftmix.pipeline.config import load_config
    from siftmix.pipeline.runner import run_pipeline

    base = tmp_path_factory.mktemp("reference")
    cfg = load_config(write_demo_config(base / "demo.yaml", demo_corpus, base / "run"))
    run_pipeline(cfg, log=lambda *_: None)
    return base / "run"


def run_outputs(run_dir: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every output file in the stage folders of a run (data,
    rejected, models, audit reports, mix shards, and any leftover attempt folder), manifests
    excepted (they hold timings); a committed attempt's files as ``<stage>/<path>`` (attempt
    names differ from run to run), any other file under its own name. Files at the top of
    RUN_DIR (report.html, with wall times) count by name only."""
    attempts = {m.parent.name: json.loads(m.read_text())["attempt"] for m in run_dir.glob("*/_manifest.json")}
    out = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file() or p.name == "_manifest.json":
            continue
        rel = p.relative_to(run_dir)
        parts = rel.parts
        if len(parts) > 2 and attempts.get(parts[0]) == parts[1]:
            rel = Path(parts[0], *parts[2:])
        out[str(rel)] = b"" if p.parent == run_dir else p.read_bytes()
    return out


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Byte-identical outputs, and manifests that agree on everything but timings and argv."""
    got, want = run_outputs(run_dir), run_outputs(reference)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    stages = sorted(p.parent.name for p in reference.glob("*/_manifest.json"))
    assert stages == sorted(p.parent.name for p in run_dir.glob("*/_manifest.json")) and stages
    for st in stages:
        a, b = (json.loads((d / st / "_manifest.json").read_text()) for d in (run_dir, reference))
        for key in ("counts", "config_hash", "input_fingerprint", "output_fingerprint"):
            assert a[key] == b[key], (st, key)


# Property tests: the same examples on every run (CI must not be a lottery); `-p hypothesis
# --hypothesis-seed` explores further by hand.
from hypothesis import settings as _hsettings  # noqa: E402

_hsettings.register_profile("siftmix", derandomize=True, deadline=None, print_blob=True)
_hsettings.load_profile("siftmix")


# --------------------------------------------------------------------------- a real S3 server on loopback

class S3Server:
    """moto's S3 server (``ThreadedMotoServer``) on a free loopback port, in this process: it
    keeps its buckets across :meth:`stop`/:meth:`start`, so a test can take the server away
    in the middle of a stage and bring it back. ``env``: what a siftmix process needs to use
    it (the standard AWS variables; the secret is a marker that no output may contain)."""

    SECRET = "siftmix-SECRET-never-logged-7f3a"

    def __init__(self):
        import logging
        import socket

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "siftmix-test-key",
                    "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_REGION": "us-east-1"}
        self.server = None

    def start(self) -> "S3Server":
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the listening socket (moto's stop() leaves it open, so
        connections would hang in its backlog instead of being refused)."""
        if self.server is not None:
            self.server.stop()
            self.server._server.server_close()
            self.server = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="siftmix-test-key",
                            aws_secret_access_key=self.SECRET, region_name="us-east-1")

    def bucket(self, name: str) -> str:
        """A new empty bucket; its URL."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """{key: bytes} of every object in the bucket under ``prefix``."""
        c, out = self.client(), {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"]] = c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        return out


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra (make test installs it)")
    srv = S3Server().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server, with this process's environment pointing at it (for in-process storage calls)."""
    from siftmix.pipeline.core import objstore

    if s3_server.server is None:
        s3_server.start()
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SIFTMIX_STORAGE", raising=False)
    objstore._settings = None
    objstore._backends.clear()
    yield s3_server
    os.environ.pop("SIFTMIX_STORAGE", None)  # a test's storage settings stay in that test
    objstore._settings = None
    objstore._backends.clear()


def committed_s3_files(s3_server: S3Server, run_url: str) -> dict[str, bytes]:
    """Like :func:`run_outputs` for a run dir on the S3 server: ``<stage>/<path>`` -> bytes of
    every file its stages' manifests list, plus any object outside a committed attempt."""
    from siftmix.pipeline.core import objstore

    _, bucket, prefix = objstore.split(run_url)
    objs = s3_server.objects(bucket, prefix.rstrip("/") + "/")
    rel = {k[len(prefix.rstrip("/")) + 1:]: v for k, v in objs.items()}
    attempts = {k.split("/")[0]: json.loads(v)["attempt"] for k, v in rel.items()
                if k.count("/") == 1 and k.endswith("/_manifest.json")}
    out = {}
    for k, v in rel.items():
        parts = k.split("/")
        if parts[-1] == "_manifest.json":
            continue
        if len(parts) > 2 and attempts.get(parts[0]) == parts[1]:
            k = "/".join([parts[0], *parts[2:]])
        out[k] = b"" if len(parts) == 1 else v
    return out


@pytest.fixture(scope="session")
def s3_corpus(s3_server, demo_corpus):
    """The demo corpus uploaded to the S3 server (once)."""
    from siftmix.pipeline.core import objstore, storage

    old = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)
    objstore._backends.clear()
    try:
        url = s3_server.bucket("corpus-bucket") + "/corpus"
        storage.copy(str(demo_corpus), url)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        objstore._backends.clear()
    return url
