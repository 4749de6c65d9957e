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


def parquet_bytes(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every Parquet file under a folder."""
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
    rejected, models, audit reports, mix shards, and any leftover temporary folder), manifests
    excepted (they hold timings). Files at the top of RUN_DIR (report.html, with wall times)
    count by name only."""
    return {str(p.relative_to(run_dir)): b"" if p.parent == run_dir else p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "_manifest.json"}


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
