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
    from siftmix.pipeline.ray_runner import ray_session

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


# Property tests: the same examples on every run (CI must not be a lottery); `-p hypothesis
# --hypothesis-seed` explores further by hand.
from hypothesis import settings as _hsettings  # noqa: E402

_hsettings.register_profile("siftmix", derandomize=True, deadline=None, print_blob=True)
_hsettings.load_profile("siftmix")
