"""The mix stage through a real local Ray: shares on the demo corpus and on real data,
determinism with 1 and 2 workers, Megatron-format token shards that megatron-core reads back as
the tokens of their Parquet shards."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import committed, demo_sources, run_cli
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _quiet(*a, **k):
    pass


def _files(stage: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((committed(stage) / "shards").iterdir())}


def _demo(run_dir, corpus, stages, **mix):
    return config_from_dict({
        "run_dir": str(run_dir), "seed": 11, "stages": stages,
        "sources": demo_sources(corpus),
        "ingest": {"min_chars": 200},
        "mix": {"shard_tokens": 40_000, "partition_bytes": 300_000, **mix}})


def _check_shares(m, tol_pp=0.5):
    for s, c in m["counts"]["by_source"].items():
        assert abs(c["share"] - c["target_weight"]) * 100 <= tol_pp, (s, c)


def test_full_demo_pipeline_shares_and_tokenized_shards(ray_local, demo_corpus, tmp_path):
    cfg = _demo(tmp_path / "run", demo_corpus, ["ingest", "quality", "mix"])
    run_stage("ingest", cfg, log=_quiet)
    run_stage("quality", cfg, log=_quiet, progress=False)
    m = run_stage("mix", cfg, log=_quiet, progress=False)
    assert m["input_stage"] == "quality"
    _check_shares(m)
    assert m["partitions"] > 1 and len(m["shards"]) > 2
    assert "Realized weight" in m["table_2_2"] and (committed(tmp_path / "run" / "40_mix") / "plan.json").exists()
    stage = committed(tmp_path / "run" / "40_mix") / "shards"
    assert m["tokenized"]["format"] == "megatron" and m["tokenized"]["dtype"] == "uint16"
    from megatron.core.datasets.indexed_dataset import IndexedDataset  # megatron-core's own reader
    from siftmix.mixing.tokenizer import get_tokenizer

    tok = get_tokenizer("gpt2")
    total = 0
    for sh in m["shards"]:
        t = pq.read_table(stage / sh["file"])
        assert t.column_names == ["id", "source", "repeat", "text", "n_tokens"]
        ds = IndexedDataset(str(stage / sh["file"].removesuffix(".parquet")), mmap=True)
        assert len(ds) == t.num_rows and ds.index.dtype == np.uint16
        assert list(ds.document_indices) == list(range(t.num_rows + 1))
        for i, (text, n) in enumerate(zip(t["text"].to_pylist(), t["n_tokens"].to_pylist())):
            seg = ds[i]  # every document, read by Megatron
            assert seg[-1] == 50256 and len(seg) == n + 1
            assert seg[:-1].tolist() == tok.encode([text])[0]  # the tokens of its Parquet row
        total += int(t["n_tokens"].to_numpy().sum())
    assert total == m["counts"]["tokens"]
    # repeats are distinct rows: (id, repeat) unique over all shards
    keys = [(i, r) for sh in m["shards"] for i, r in zip(*pq.read_table(stage / sh["file"], columns=["id", "repeat"]).to_pydict().values())]
    assert len(keys) == len(set(keys))


def test_mix_deterministic_with_1_and_2_workers(ray_local, demo_corpus, tmp_path):
    outs = []
    for i, workers in enumerate((1, 2, 2)):
        cfg = _demo(tmp_path / f"r{i}", demo_corpus, ["ingest", "mix"], token_format="npy")
        run_stage("ingest", cfg, log=_quiet)
        m = run_stage("mix", cfg, workers=workers, log=_quiet, progress=False)
        _check_shares(m)
        outs.append(_files(tmp_path / f"r{i}" / "40_mix"))
    assert len(outs[0]) >= 6 and outs[0] == outs[1] == outs[2]
    # the npy token format: .bin + .idx.npy offsets that cut the .bin into the Parquet rows
    stage = committed(tmp_path / "r0" / "40_mix") / "shards"
    for sh in m["shards"]:
        base = sh["file"].removesuffix(".parquet")
        offsets = np.load(stage / (base + ".idx.npy"))
        assert not (stage / (base + ".idx")).exists() and len(offsets) == sh["rows"] + 1
        assert offsets[-1] == (stage / (base + ".bin")).stat().st_size // 2 == sh["tokens"] + sh["rows"]


def test_plan_error_is_one_line(ray_local, demo_corpus, tmp_path):
    cfg = _demo(tmp_path / "e", demo_corpus, ["ingest", "mix"], total_tokens=10**9, max_epochs=2)
    run_stage("ingest", cfg, log=_quiet)
    with pytest.raises(StageError) as e:
        run_stage("mix", cfg, log=_quiet, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "short by" in msg and "common_crawl needs" in msg
    assert not (tmp_path / "e" / "40_mix").exists()


def test_real_data_shares(ray_local, shared_data, tmp_path):
    ref = shared_data / "reference"
    cfg = config_from_dict({
        "run_dir": str(tmp_path / "real"), "seed": 2, "stages": ["ingest", "mix"],
        "sources": [
            {"name": "common_crawl", "paths": [str(p) for p in (shared_data / "cc").glob("*.jsonl.gz") if "dclm" not in p.name], "filter": True},
            {"name": "webtext2", "paths": [str(ref / "news_bbc_2004_2005.jsonl.gz"), str(ref / "news_reuters21578_test.jsonl.gz")]},
            {"name": "books1", "paths": [str(ref / "books_gutenberg.jsonl.gz")]},
            {"name": "wikipedia", "paths": [str(ref / "wikipedia_enwiki_dump_excerpt.jsonl.gz")]}],
        "ingest": {"min_chars": 200},
        "mix": {"weights": {"common_crawl": 0.6, "webtext2": 0.22, "books1": 0.16, "wikipedia": 0.02},
                "max_epochs": {"common_crawl": 1, "default": 4}, "tokenized": False, "shard_tokens": 500_000}})
    run_stage("ingest", cfg, log=_quiet)
    m = run_stage("mix", cfg, log=_quiet, progress=False)
    _check_shares(m)
    assert m["counts"]["by_source"]["common_crawl"]["epochs"] <= 1.0 + 1e-9


def test_cli_mix(tmp_path, demo_corpus):
    p = tmp_path / "m.yaml"
    p.write_text(f"""run_dir: {tmp_path / 'run'}
stages: [ingest, mix]
sources:
  - {{name: common_crawl, paths: {demo_corpus / 'cc'}, filter: true}}
  - {{name: books2, paths: {demo_corpus / 'books2'}}}
mix:
  weights: {{common_crawl: 0.7, books2: 0.3}}
  shard_tokens: 100000
""")
    r = run_cli("mix", p)
    assert r.returncode == 0, r.stderr
    assert "Realized weight" in r.stderr and "plan (written before any data moves)" in r.stderr
    m = json.loads((tmp_path / "run" / "40_mix" / "_manifest.json").read_text())
    assert abs(m["counts"]["by_source"]["books2"]["share"] - 0.3) < 0.005
