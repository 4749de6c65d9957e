"""`siftmix audit -i RUN_DIR/40_mix`: the audit of the training mix itself (its shards, pieces and
repeats), each dirty example counted once per epoch in which it is seen, against a brute force
over the mix shards."""

import json

import numpy as np
import pytest
from conftest import committed, run_cli
from siftmix.contamination.benchmarks import load_benchmarks
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.core.text import normalized_words
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _quiet(*a, **k):
    pass


def test_audit_of_the_training_mix_counts_epochs_seen(ray_local, tmp_path):
    rng = np.random.default_rng(3)
    vocab = [f"t{k}" for k in range(2000)]
    bench = [{"id": f"q{i}", "text": " ".join(rng.choice(vocab, 18, replace=False))} for i in range(12)]
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench))

    def filler(n):
        return " ".join(rng.choice(["lorem", "ipsum", "dolor", "sit", "amet", "consectetur"], n))

    # wiki: small, repeated about 3 times; web: large, seen about a third; q0-q2 in wiki, q3-q8 in web
    wiki = [{"id": f"w{i}", "text": f"{filler(150)} {bench[i]['text'] if i < 3 else ''} {filler(150)}"} for i in range(8)]
    web = [{"id": f"c{i}", "text": f"{filler(200)} {bench[3 + i % 6]['text'] if i < 18 else ''} {filler(200)}"}
           for i in range(120)]
    for name, docs in (("wiki", wiki), ("web", web)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "seed": 4, "stages": ["ingest", "mix"],
                            "sources": [{"name": "wiki", "paths": [str(tmp_path / "wiki")]},
                                        {"name": "web", "paths": [str(tmp_path / "web")]}],
                            "ingest": {"min_chars": 1},
                            "mix": {"weights": {"wiki": 0.5, "web": 0.5}, "total_tokens": 30_000, "max_epochs": 5,
                                    "shard_tokens": 4_000, "partition_bytes": 40_000, "tokenized": False}})
    run_stage("ingest", cfg, log=_quiet)
    run_stage("mix", cfg, log=_quiet, progress=False)
    mix_dir = tmp_path / "run" / "40_mix"
    r = run_cli("audit", "-i", mix_dir, "-b", tmp_path / "bench", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    out = committed(tmp_path / "out" / "30_audit")
    assert r.stdout.strip() == str(out / "audit.html")
    assert not (tmp_path / "out" / "00_ingest").exists()  # read where it is, not ingested
    audit = json.loads((out / "audit.json").read_text())
    m = json.loads((tmp_path / "out" / "30_audit" / "_manifest.json").read_text())
    # brute force over the mix shards: the repeats of the rows holding one of an example's N-grams
    rows = read_shards(str(committed(mix_dir) / "shards"))
    assert m["counts"]["in"] == rows.num_rows == m["training_side"]["documents_in"]
    n = audit["benchmarks"][0]["n"]
    row_words = [normalized_words(t) for t in rows["text"].to_pylist()]
    grams = [{tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)} for ws in row_words]
    want = {}
    for b in load_benchmarks([str(tmp_path / "bench")])[0:1]:
        for x, t in zip(b.ids, b.texts):
            ws = normalized_words(t)
            mine = {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}
            epochs = {rep for g, rep in zip(grams, rows["repeat"].to_pylist()) if g & mine}
            if epochs:
                want[x] = len(epochs)
    got = {e["id"]: e["epochs_seen"] for e in audit["benchmarks"][0]["dirty_examples"]}
    assert got == want
    assert max(want.values()) >= 2 and audit["benchmarks"][0]["dirty_seen"] == sum(want.values())
    assert "seen in" in (out / "audit.html").read_text()
