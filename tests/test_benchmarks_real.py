"""Benchmark loaders on the 14 real sets, and appendix C on real crawl text with planted passages."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from siftmix.contamination.appendix_c import (
    NgramIndex,
    decontaminate_batch,
    doc_counts,
    training_collisions,
)
from siftmix.contamination.benchmarks import BenchmarkError, load_benchmark, load_benchmarks
from siftmix.pipeline.core.text import words


def test_loaders_formats_and_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x", "question": "Q?", "choices": ["a", "b"], "answer": "a"}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"text": "hello there"}]}))
    (tmp_path / "c.csv").write_text("id,sentence\n1,some words here\n")
    pq.write_table(pa.table({"text": ["parquet text"]}), tmp_path / "d.parquet")
    got = {b.name: b.texts for b in load_benchmarks([str(tmp_path)])}
    assert got == {"a": ["Q? a b a"], "b": ["hello there"], "c": ["some words here"], "d": ["parquet text"]}
    assert load_benchmark(str(tmp_path / "a.jsonl"), fields=["question"]).texts == ["Q?"]
    assert [b.name for b in load_benchmarks([str(tmp_path / "[ab].json*")])] == ["a", "b"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(BenchmarkError, match=r"bad.jsonl: line 2: invalid JSON"):
        load_benchmark(str(tmp_path / "bad.jsonl"))


def test_the_14_real_sets_load_and_index(shared_data):
    benches = load_benchmarks([str(shared_data / "benchmarks")])
    assert len(benches) == 14
    sizes = {b.name: len(b.texts) for b in benches}
    assert sizes["gsm8k_test"] == 1319 and sizes["lambada_openai_test"] == 5153
    idx = NgramIndex.build(benches)
    assert all(8 <= n <= 13 for n in idx.n.values())
    assert len(idx.tables[13][0]) > 100_000


def test_planted_passages_in_real_crawl_are_excised(shared_data):
    benches = load_benchmarks([str(shared_data / "benchmarks")])
    idx = NgramIndex.build(benches)
    pages = [json.loads(x)["text"] for x in gzip.open(shared_data / "cc" / "web_pages_dragnet.jsonl.gz")][:300]
    rng = np.random.default_rng(0)
    planted = {}
    for d in rng.choice(len(pages), 40, replace=False):
        b = benches[rng.integers(len(benches))]
        ex = next(t for t in (b.texts[i] for i in rng.permutation(len(b.texts))) if len(t.split()) >= 20)
        cut = len(pages[d]) // 2
        pages[d] = pages[d][:cut] + " " + ex + " " + pages[d][cut:]
        planted[int(d)] = ex
    table = pa.table({"id": [str(i) for i in range(len(pages))], "text": pa.array(pages, pa.large_string())})
    dd, _, h, _ = training_collisions(words(table["text"]), idx)
    hashes, counts = doc_counts(dd, h)
    exc, _ = decontaminate_batch(table, idx, hashes[counts > 10])
    found = {d: e for d, e in exc}
    assert set(planted) <= set(found)  # every planted passage is found
    for d, ex in planted.items():
        kept = "".join(found[d].pieces)
        assert ex not in kept  # and excised
