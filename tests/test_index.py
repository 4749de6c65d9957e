"""The persisted n-gram index (contamination/index.py) and the audit against it.

Unit: the map and reduce tasks over small Parquet shards give exactly the brute-force oracle's
(n-gram, document, offset) postings, sorted and partitioned by hash prefix. Integration: an index
of the demo run's dedup stage; the audit against it equals the scan-based audit of that stage;
rebuilding against the unchanged stage is skipped; the CLI builds the mix's index and audits it.
"""

import contextlib
import json
import os
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import committed, committed_s3_files, run_cli
from siftmix.contamination.index import (
    RUN_DTYPE,
    IndexConfig,
    _map_shard,
    _reduce_part,
    partition_of,
    prefix_bounds,
)
from siftmix.pipeline.core.shards import ShardRef
from siftmix.pipeline.core.text import ngram_hashes, normalized_words, words
from test_appendix_c import oracle_words

VOCAB = ["the", "cat", "Sat", "on", "a", "mat,", "dog", "ran", "--", "far", "away.", "Ünïcode", "x"]


def _docs(rng: random.Random, n: int) -> list[str]:
    docs = []
    for _ in range(n):
        words = [rng.choice(VOCAB) for _ in range(rng.randrange(0, 40))]
        docs.append(" ".join(words) + ("  \n" if rng.random() < 0.3 else ""))
    return docs


def _oracle(shards: list[list[str]], size: int) -> Counter:
    """(word tuple, global document, char offset) of every n-gram, brute force."""
    out, base = Counter(), 0
    for docs in shards:
        for d, text in enumerate(docs):
            ws = oracle_words(text)
            for i in range(len(ws) - size + 1):
                out[(tuple(w for w, _, _ in ws[i:i + size]), base + d, ws[i][1])] += 1
        base += len(docs)
    return out


def test_map_reduce_equals_oracle(tmp_path):
    rng = random.Random(3)
    shards = [_docs(rng, 30), _docs(rng, 1), _docs(rng, 45)]
    refs = []
    for i, docs in enumerate(shards):
        p = tmp_path / f"s{i}.parquet"
        pq.write_table(pa.table({"id": [f"{i}-{d}" for d in range(len(docs))], "text": docs}), p, row_group_size=8)
        refs.append(ShardRef(path=str(p), name=f"s{i}", source="t", index=i, size=p.stat().st_size))
    conf = IndexConfig(sizes=[3, 13], partitions=4, batch_rows=7)
    out = str(tmp_path / "idx")
    res = [_map_shard(r, out, conf.sizes, conf.partitions, conf.batch_rows) for r in refs]
    base = np.cumsum([0] + [r["docs"] for r in res])
    assert [r["docs"] for r in res] == [len(s) for s in shards]
    texts = [t for docs in shards for t in docs]
    for size in conf.sizes:
        got, seen_hash = Counter(), {}
        for k in range(conf.partitions):
            runs = [(f"{out}/runs/{r['index']:05d}-n{size}.bin", r["bounds"][size][k], r["bounds"][size][k + 1], int(base[i]))
                    for i, r in enumerate(res)]
            info = _reduce_part((size, k, runs), out)
            h = np.load(f"{out}/n{size}/p{k:04d}.hash.npy", mmap_mode="r")
            ref = np.load(f"{out}/n{size}/p{k:04d}.ref.npy", mmap_mode="r")
            assert info["ngrams"] == len(h) == len(ref)
            assert np.all(np.diff(h.astype(np.float64)) >= 0) and np.all(partition_of(np.asarray(h), conf.partitions) == k)
            for hv, d, o in zip(h.tolist(), ref["d"].tolist(), ref["o"].tolist()):
                ws = oracle_words(texts[d])
                i = [w[1] for w in ws].index(o)
                gram = tuple(w for w, _, _ in ws[i:i + size])
                assert seen_hash.setdefault(hv, gram) == gram  # one hash, one n-gram
                got[(gram, d, o)] += 1
        assert got == _oracle(shards, size)
        assert sum(got.values()) > 0


def test_prefix_bounds():
    rng = np.random.default_rng(0)
    h = np.sort(rng.integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(2))
    for parts in (1, 2, 16):
        b = prefix_bounds(h, parts)
        assert b[0] == 0 and b[-1] == len(h) and len(b) == parts + 1
        for k in range(parts):
            assert np.all(partition_of(h[b[k]:b[k + 1]], parts) == k)
    assert len(prefix_bounds(np.zeros(0, np.uint64), 4)) == 5 and RUN_DTYPE.itemsize == 16


def test_index_config_rejects_bad_partitions():
    with pytest.raises(ValueError):
        IndexConfig(partitions=12)
    assert IndexConfig(sizes=[9]).sizes == [9, 13]


@pytest.mark.integration
def test_index_audit_equals_scan_audit(ray_local, demo_reference, tmp_path):
    from siftmix.contamination.index import Index, IndexAuditStage, IndexStage
    from siftmix.contamination.stage import FolderAuditStage
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.runner import run_stage

    quiet = lambda *_: None  # noqa: E731
    stage_dir = str(demo_reference / "20_dedup")
    bench = str(json.loads((demo_reference / "30_decontam" / "_manifest.json").read_text())["config"]["decontam"]["benchmarks"][0])

    def cfg(run_dir):
        return config_from_dict({"run_dir": str(run_dir), "stages": ["ingest", "decontam"],
                                 "sources": [{"name": "x", "paths": [stage_dir]}], "decontam": {"benchmarks": [bench]}})

    idx_dir = str(tmp_path / "index")
    m = run_stage(IndexStage(stage_dir), cfg(tmp_path), log=quiet, progress=False, out_dir=idx_dir)
    again = run_stage(IndexStage(stage_dir), cfg(tmp_path), log=quiet, progress=False, out_dir=idx_dir)
    assert again["attempt"] == m["attempt"]  # unchanged stage: skipped
    # counts add up: one 13-gram per window of 13 words of each document (brute force over the stage)
    texts = [t for p in sorted((committed(stage_dir) / "data").glob("*.parquet")) for t in pq.read_table(p)["text"].to_pylist()]
    assert m["index"]["documents"] == len(texts)
    assert m["index"]["ngrams"]["13"] == sum(max(0, len(oracle_words(t)) - 12) for t in texts)
    assert m["source_stage"]["output_fingerprint"] == json.loads((demo_reference / "20_dedup" / "_manifest.json").read_text())["output_fingerprint"]

    scan = run_stage(FolderAuditStage(stage_dir), cfg(tmp_path / "scan"), log=quiet, progress=False)
    by_index = run_stage(IndexAuditStage(idx_dir), cfg(tmp_path / "byindex"), log=quiet, progress=False)
    a = json.loads((committed(tmp_path / "scan" / "30_audit") / "audit.json").read_text())
    b = json.loads((committed(tmp_path / "byindex" / "30_audit") / "audit.json").read_text())
    assert sum(x["dirty"] for x in a["benchmarks"]) > 0 and a["training_side"]["colliding_13grams"] > 0
    assert a == b
    for f in ("audit.md", "audit.html"):
        assert (committed(tmp_path / "scan" / "30_audit") / f).read_bytes() == (committed(tmp_path / "byindex" / "30_audit") / f).read_bytes()
    assert scan["benchmarks"] == by_index["benchmarks"]
    # postings of one dirty example's n-gram name the document the audit shows
    idx = Index(idx_dir)
    for e in (e for x in b["benchmarks"] for e in x["dirty_examples"]):
        w = words([e["ngram"]])
        h, _ = ngram_hashes(w, len(w.hash))
        _, docs, offs = idx.postings(len(w.hash), h)
        assert e["train_doc"] in {idx.docs()["id"][d] for d in docs}
        assert normalized_words(e["train_snippet"][e["train_span"][0]:e["train_span"][1]]) == normalized_words(e["ngram"])


def _cli(*args):
    """A siftmix command in this process (on the session's Ray: no Ray start per command)."""
    from siftmix.pipeline.cli import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.integration
def test_cli_index_build_and_audit(ray_local, demo_reference, tmp_path):
    bench = json.loads((demo_reference / "30_decontam" / "_manifest.json").read_text())["config"]["decontam"]["benchmarks"][0]
    r = _cli("index", "build", demo_reference, "-o", tmp_path / "idx", "--sizes", "8-13", "--partitions", "4")
    assert r.exit_code == 0, r.stderr
    m = json.loads((tmp_path / "idx" / "_manifest.json").read_text())
    assert m["stage"] == "index" and m["source_stage"]["stage"] == "mix" and 16 <= m["index"]["bytes_per_ngram"] < 17
    repeats = [r for p in sorted((committed(demo_reference / "40_mix") / "shards").glob("*.parquet"))
               for r in pq.read_table(p, columns=["repeat"])["repeat"].to_pylist()]
    assert m["index"]["documents"] == repeats.count(0) > 0 and len(repeats) > repeats.count(0)  # each piece once
    r = _cli("audit", "-b", bench, "--index", tmp_path / "idx", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    got = json.loads((committed(tmp_path / "out" / "30_audit") / "audit.json").read_text())
    r = _cli("audit", "-i", demo_reference / "40_mix", "-b", bench, "-o", tmp_path / "scan")
    assert r.exit_code == 0, r.stderr
    want = json.loads((committed(tmp_path / "scan" / "30_audit") / "audit.json").read_text())
    # the mix: the same dirty examples (the index counts each document once, the scan every repeat)
    assert [{e["id"] for e in x["dirty_examples"]} for x in got["benchmarks"]] == \
        [{e["id"] for e in x["dirty_examples"]} for x in want["benchmarks"]]
    r = _cli("audit", "-b", bench, "--index", demo_reference / "20_dedup", "-o", tmp_path / "out2")
    assert r.exit_code == 1 and [ln for ln in r.stderr.splitlines() if ln.startswith("error")] == \
        [f"error: audit: {demo_reference / '20_dedup'} is not a finished index (run `siftmix index build` first)"]
    r = _cli("audit", "-b", bench, "--index", tmp_path / "nothing", "-o", tmp_path / "out2")
    assert r.exit_code == 2 and "does not exist" in r.stderr


@contextlib.contextmanager
def _s3_env(s3_server):
    """This process's storage calls go to the S3 server, for the block."""
    from siftmix.pipeline.core import objstore

    old = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)
    objstore._backends.clear()
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        objstore._backends.clear()


@pytest.mark.integration
def test_index_on_s3(ray_local, s3_server, demo_reference, tmp_path):
    """RUN_DIR and INDEX on object storage (the real command, in one process: one Ray start for
    both commands): the same index audit as on disk (in this process); the service's lookups
    and snippets from the index on S3 equal the disk's."""
    from siftmix.contamination.index import Index
    from siftmix.contamination.serve import contains, make_app
    from siftmix.pipeline.core import storage

    bench = json.loads((demo_reference / "30_decontam" / "_manifest.json").read_text())["config"]["decontam"]["benchmarks"][0]
    run = s3_server.bucket("index-bucket") + "/run"
    with _s3_env(s3_server):
        storage.copy(str(demo_reference / "20_dedup"), run + "/20_dedup")
    commands = [["index", "build", run, "--stage", "dedup", "-o", run + "-index", "--partitions", "2"],
                ["audit", "-b", bench, "--index", run + "-index", "-o", run + "-audit"]]
    script = ("import json, sys\nfrom siftmix.pipeline.cli import app\nfrom siftmix.pipeline.config import RayConfig\n"
              "from siftmix.pipeline.core.ray_runner import ray_session\n"
              "with ray_session(RayConfig(num_cpus=2)):\n    for args in json.loads(sys.argv[1]):\n"
              "        code = app(args, standalone_mode=False)\n        if code:\n            sys.exit(code)\n")
    r = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, **s3_server.env})
    assert r.returncode == 0, r.stderr
    r = _cli("index", "build", demo_reference, "--stage", "dedup", "-o", tmp_path / "idx", "--partitions", "2")
    assert r.exit_code == 0, r.stderr
    r = _cli("audit", "-b", bench, "--index", tmp_path / "idx", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    files = committed_s3_files(s3_server, run + "-audit")
    got = json.loads(files["30_audit/audit.json"])
    want = json.loads((committed(tmp_path / "out" / "30_audit") / "audit.json").read_text())
    assert sum(b["dirty"] for b in got["benchmarks"]) > 0 and got == want
    assert json.loads(s3_server.objects("index-bucket", "run-index/_manifest.json")["run-index/_manifest.json"])["index"]["documents"] > 0
    text = next(t for p in sorted((committed(demo_reference / "20_dedup") / "data").glob("*.parquet"))
                for t in pq.read_table(p, columns=["text"])["text"].to_pylist() if len(t.split()) > 60)
    passage = "clean words first " + " ".join(text.split()[10:40])
    want = contains(Index(str(tmp_path / "idx")), passage, snippets=True)
    with _s3_env(s3_server):
        app = make_app(run + "-index")  # every partition read from S3 at start-up
        got = contains(app.state.index, passage, snippets=True)
    assert got["matched_ngrams"] == 30 - 12 and got == want


def test_cli_index_usage_errors(tmp_path):
    r = run_cli("index", "build", "--help")
    assert r.returncode == 0 and "Examples" in r.stdout and "siftmix index build" in r.stdout
    r = run_cli("index", "build", tmp_path, "-o", tmp_path / "i", "--partitions", "12")
    assert r.returncode == 2 and "power of two" in r.stderr
    r = run_cli("index", "build", tmp_path, "-o", tmp_path / "i", "--stage", "nope")
    assert r.returncode == 2 and "--stage" in r.stderr
    r = run_cli("audit", "-b", tmp_path, "--index", tmp_path)
    assert r.returncode == 2 and "--index needs" in r.stderr


def test_offset_limit_and_batch_rows_are_checked(tmp_path, monkeypatch):
    """A document longer than the u32 character offsets, and an index built with another scan
    batch than decontam.batch_rows: one clear error each (the limit lowered to test it)."""
    from types import SimpleNamespace

    from siftmix.contamination import index as index_mod
    from siftmix.contamination.config import DecontamConfig
    from siftmix.pipeline.core.errors import StageError

    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["short text", "a much longer text " * 10]}), p)
    ref = ShardRef(path=str(p), name="s", source="t", index=0, size=p.stat().st_size)
    monkeypatch.setattr(index_mod, "MAX_OFFSET", 100)
    with pytest.raises(StageError, match=r"document 'b' in .*s\.parquet has 190 characters; the index.s character offsets are u32 \(at most 100\)"):
        _map_shard(ref, str(tmp_path / "idx"), [13], 1, 2048)
    monkeypatch.setattr(index_mod, "MAX_OFFSET", 2**32 - 1)
    assert _map_shard(ref, str(tmp_path / "idx"), [13], 1, 2048)["docs"] == 2
    idx = SimpleNamespace(batch_rows=1024, dir="INDEX")
    with pytest.raises(StageError, match="decontam.batch_rows is 2048 but the index at INDEX was built with batch_rows 1024"):
        index_mod.lookup(idx, {}, DecontamConfig())
