"""Incremental dedup through a real local Ray: a first dump indexed by its dedup run, a second
dump deduplicated against that index, a third against the second with the index chain
(``update_index``), against brute-force exact Jaccards; indexed documents are never removed or
rewritten; settings that do not match and paths that are not indexes are one-line errors."""

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import committed, parquet_bytes, run_cli
from siftmix.dedup.minhash import shingle_strings
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.errors import ConfigError
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _quiet(*a, **k):
    pass


VOCAB = [f"w{i}" for i in range(20000)]


def _doc(rng) -> str:
    return " ".join(rng.choice(VOCAB, rng.integers(120, 300)))


def _edit(rng, text: str, rate: float) -> str:
    w = np.array(text.split(), dtype=object)
    e = rng.random(len(w)) < rate
    w[e] = rng.choice(VOCAB, int(e.sum()))
    return " ".join(w)


def _write(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    with gzip.open(folder / "part.jsonl.gz", "wt") as fh:
        for i, t in docs.items():
            fh.write(json.dumps({"id": i, "text": t}) + "\n")
    return folder


def _cfg(tmp: Path, name: str, corpus: Path, **dedup):
    return config_from_dict({"run_dir": str(tmp / name), "stages": ["ingest", "dedup"], "ingest": {"min_chars": 1},
                             "sources": [{"name": "web", "paths": [str(corpus)]}], "dedup": dedup})


def _run(cfg) -> dict:
    run_stage("ingest", cfg, log=_quiet, progress=False)
    return run_stage("dedup", cfg, log=_quiet, progress=False)


def _outcome(run: Path) -> tuple[dict[str, str], dict[str, tuple[str, float]]]:
    st = committed(run / "20_dedup")
    data, rej = read_shards(str(st / "data")), read_shards(str(st / "rejected"))
    kept = dict(zip(data["id"].to_pylist(), data["text"].to_pylist()))
    removed = {} if rej is None else {i: (r, s) for i, r, s in zip(rej["id"].to_pylist(), rej["reason"].to_pylist(),
                                                                    rej["score"].to_pylist())}
    return kept, removed


def _jac(a: str, b: str) -> float:
    x, y = set(shingle_strings(a)), set(shingle_strings(b))
    return len(x & y) / len(x | y)


@pytest.fixture(scope="module")
def dumps(ray_local, tmp_path_factory):
    """Three dumps: A; B = new documents, near and exact copies of A's, copies within B; C = new
    documents and copies of A's and B's."""
    tmp = tmp_path_factory.mktemp("incremental")
    rng = np.random.default_rng(11)
    a = {f"a{i:04d}": _doc(rng) for i in range(150)}
    for i in range(10):  # duplicates inside A
        a[f"a-copy{i}"] = _edit(rng, a[f"a{i:04d}"], 0.004)
    b = {f"b{i:04d}": _doc(rng) for i in range(60)}
    near_a = {f"b-near-a{i}": _edit(rng, a[f"a{20 + i:04d}"], 0.004) for i in range(25)}
    exact_a = {f"b-exact-a{i}": a[f"a{60 + i:04d}"].upper() for i in range(10)}  # normalised text equal
    within_b = {f"b-copy{i}": _edit(rng, b[f"b{i:04d}"], 0.004) for i in range(8)}
    b.update(near_a | exact_a | within_b)
    c = {f"c{i:04d}": _doc(rng) for i in range(30)}
    c.update({f"c-near-a{i}": _edit(rng, a[f"a{100 + i:04d}"], 0.004) for i in range(6)})
    c.update({f"c-near-b{i}": _edit(rng, b[f"b{20 + i:04d}"], 0.004) for i in range(6)})
    return tmp, {n: (_write(tmp / f"in-{n}", d), d) for n, d in (("a", a), ("b", b), ("c", c))}


def test_against_an_index_removes_only_new_documents(dumps):
    tmp, d = dumps
    ma = _run(_cfg(tmp, "run-a", d["a"][0]))
    assert ma["index"]["documents"] == ma["counts"]["kept"] and ma["index"]["band_rows"] > 0
    before = parquet_bytes(tmp / "run-a" / "20_dedup")
    mb = _run(_cfg(tmp, "run-b", d["b"][0], against=[str(tmp / "run-a")]))
    assert parquet_bytes(tmp / "run-a" / "20_dedup") == before  # the indexed run is not rewritten
    kept_a, _ = _outcome(tmp / "run-a")
    kept_b, removed_b = _outcome(tmp / "run-b")
    b = d["b"][1]
    assert len(kept_b) + len(removed_b) == len(b) == mb["counts"]["in"]
    for i, (reason, score) in removed_b.items():  # every removal names a kept partner >= 0.8, exactly
        kind, partner = reason.split(":", 1)
        text = kept_a.get(partner, kept_b.get(partner))
        assert text is not None, reason
        j = _jac(b[i], text)
        assert j >= 0.8 and score == pytest.approx(j, abs=1e-6), (i, reason, j)
        if i.startswith("b-exact-a"):
            assert kind == "exact_duplicate_of" and partner in kept_a
    # every planted copy is found: of A's documents (the indexed one wins) and within B
    for i in b:
        if i.startswith(("b-near-a", "b-exact-a")):
            assert removed_b[i][0].split(":", 1)[1] in kept_a, i
        if i.startswith("b-copy"):
            assert i in removed_b or f"b{int(i[6:]):04d}" in removed_b
    assert mb["clusters"]["precision"]["removed_against_index"] == 35
    # no kept document of B is a near-duplicate (>= 0.9) of another kept one of A or B: brute force
    sets = {i: set(shingle_strings(t)) for i, t in (kept_a | kept_b).items()}
    for x, y in itertools.product(kept_b, sets):
        if x != y:
            assert len(sets[x] & sets[y]) / len(sets[x] | sets[y]) < 0.9, (x, y)
    # the work followed the new data: only index rows whose key B has were read
    assert 0 < mb["edges"]["index_rows_read"] < ma["index"]["band_rows"] // 4


def test_index_chain_and_resume(dumps):
    tmp, d = dumps
    if not (tmp / "run-b" / "20_dedup" / "_manifest.json").exists():
        pytest.skip("needs test_against_an_index_removes_only_new_documents first")
    cfg_b2 = _cfg(tmp, "run-b", d["b"][0], against=[str(tmp / "run-a")], update_index=True)
    mb = run_stage("dedup", cfg_b2, log=_quiet, progress=False)
    assert mb["index"]["parts"] == [str(tmp / "run-a" / "20_dedup")]
    mc = _run(_cfg(tmp, "run-c", d["c"][0], against=[str(tmp / "run-b")]))
    assert [x["stage_dir"] for x in mc["against"]] == [str(tmp / "run-b" / "20_dedup"), str(tmp / "run-a" / "20_dedup")]
    kept_a, _ = _outcome(tmp / "run-a")
    kept_b, _ = _outcome(tmp / "run-b")
    _, removed_c = _outcome(tmp / "run-c")
    for i in d["c"][1]:
        if i.startswith("c-near-a"):
            assert removed_c[i][0].split(":", 1)[1] in kept_a, i  # through the chain: B's index extends A's
        if i.startswith("c-near-b"):
            assert removed_c[i][0].split(":", 1)[1] in kept_b, i
    assert not any(i.startswith("c0") for i in removed_c)
    # unchanged indexes (a forced rerun of B gives the same files): skipped
    run_stage("dedup", cfg_b2, force=True, log=_quiet, progress=False)
    logs = []
    run_stage("dedup", _cfg(tmp, "run-c", d["c"][0], against=[str(tmp / "run-b")]), log=logs.append, progress=False)
    assert any("finished earlier" in x for x in logs), logs
    # B's index no longer extends A's: C reruns, and A's copies in C are no longer seen
    run_stage("dedup", _cfg(tmp, "run-b", d["b"][0], against=[str(tmp / "run-a")]), log=_quiet, progress=False)
    logs = []
    mc = run_stage("dedup", _cfg(tmp, "run-c", d["c"][0], against=[str(tmp / "run-b")]), log=logs.append, progress=False)
    assert not any("finished earlier" in x for x in logs), logs
    _, removed_c = _outcome(tmp / "run-c")
    assert not any(i.startswith("c-near-a") for i in removed_c) and len(mc["against"]) == 1


def test_against_errors_are_one_line(dumps):
    tmp, d = dumps
    if not (tmp / "run-a" / "20_dedup" / "_manifest.json").exists():
        pytest.skip("needs test_against_an_index_removes_only_new_documents first")
    with pytest.raises(ConfigError, match="other LSH settings .*num_perm: 128 there, 64 here"):
        _run(_cfg(tmp, "run-x", d["b"][0], against=[str(tmp / "run-a")], num_perm=64))
    with pytest.raises(ConfigError, match="not a run dir or dedup folder"):
        _run(_cfg(tmp, "run-y", d["b"][0], against=[str(d["b"][0])]))
    p = tmp / "bad.yaml"
    p.write_text(json.dumps({"run_dir": str(tmp / "run-z"), "sources": [{"name": "web", "paths": [str(d["b"][0])]}],
                             "stages": ["ingest", "dedup"], "dedup": {"against": [str(tmp / "nowhere")]}}))
    r = run_cli("dedup", p)
    assert r.returncode == 2 and "dedup.against" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    p.write_text(json.dumps({"run_dir": str(tmp / "run-z"), "sources": [{"name": "web", "paths": [str(d["b"][0])]}],
                             "stages": ["ingest", "dedup"], "dedup": {"update_index": True}}))
    r = run_cli("validate", p)
    assert r.returncode == 2 and "update_index" in r.stderr, r.stderr


def test_cli_against_and_update_index(dumps):
    tmp, d = dumps
    if not (tmp / "run-b" / "20_dedup" / "_manifest.json").exists():
        pytest.skip("needs test_against_an_index_removes_only_new_documents first")
    p = tmp / "d.yaml"
    p.write_text(json.dumps({"run_dir": str(tmp / "run-d"), "sources": [{"name": "web", "paths": [str(d["c"][0])]}],
                             "stages": ["ingest", "dedup"], "ingest": {"min_chars": 1}}))
    r = run_cli("dedup", p, "--against", tmp / "run-b", "--update-index")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp / "run-d" / "20_dedup" / "_manifest.json").read_text())
    assert m["index"]["parts"] == [str(tmp / "run-b" / "20_dedup")] and m["against"][0]["documents"] > 0
    assert r.stdout.strip().endswith("20_dedup")


def _new_docs_outcome(run: Path, prefix: str) -> dict[str, tuple]:
    """id -> ("kept", dup_cluster) or ("rejected", reason, score) for the documents whose id
    starts with ``prefix`` (one dump's)."""
    st = committed(run / "20_dedup")
    data, rej = read_shards(str(st / "data")), read_shards(str(st / "rejected"))
    out = {i: ("kept", c) for i, c in zip(data["id"].to_pylist(), data["dup_cluster"].to_pylist()) if i.startswith(prefix)}
    if rej is not None:
        out.update({i: ("rejected", r, s) for i, r, s in zip(rej["id"].to_pylist(), rej["reason"].to_pylist(),
                                                             rej["score"].to_pylist()) if i.startswith(prefix)})
    return out


def test_incremental_equals_deduplicating_the_union(dumps):
    """A new batch deduplicated against an index gets what deduplicating the union gives it
    (the indexed dump's documents first in keeper order: their ids sort first), with 1 and 2
    workers, and for two batches in a row (the second against the first's extended index)."""
    tmp, d = dumps
    if not (tmp / "run-a" / "20_dedup" / "_manifest.json").exists():
        _run(_cfg(tmp, "run-a", d["a"][0]))

    def union(name: str, dumps: str) -> dict:
        return _run(config_from_dict({"run_dir": str(tmp / name), "stages": ["ingest", "dedup"], "ingest": {"min_chars": 1},
                                      "sources": [{"name": "web", "paths": [str(d[x][0]) for x in dumps]}]}))

    union("union-ab", "ab")
    m = union("union-abc", "abc")
    assert m["counts"]["in"] == sum(len(x[1]) for x in d.values())
    want_b = _new_docs_outcome(tmp / "union-ab", "b")
    assert sum(v[0] == "rejected" for v in want_b.values()) >= 40
    for workers in (1, 2):
        c = _cfg(tmp, f"inc-b-w{workers}", d["b"][0], against=[str(tmp / "run-a")], update_index=True)
        run_stage("ingest", c, log=_quiet, progress=False)
        run_stage("dedup", c, workers=workers, log=_quiet, progress=False)
        assert _new_docs_outcome(tmp / f"inc-b-w{workers}", "b") == want_b, workers
    assert parquet_bytes(tmp / "inc-b-w1" / "20_dedup") == parquet_bytes(tmp / "inc-b-w2" / "20_dedup")
    # the second batch, against the first batch's index (which extends A's): the union of all three
    _run(_cfg(tmp, "inc-c", d["c"][0], against=[str(tmp / "inc-b-w2")]))
    want_c = _new_docs_outcome(tmp / "union-abc", "c")
    assert _new_docs_outcome(tmp / "inc-c", "c") == want_c
    assert sum(v[0] == "rejected" for v in want_c.values()) == 12


def test_index_band_lookup_reads_only_the_groups_holding_new_keys(tmp_path):
    """A small batch reads a little of a big index: of a band file sorted by key (row groups
    with key statistics, as the index writes them), only the groups whose key range holds a new
    key are read, and the rows found equal those of a whole read. The top bit set tests the
    statistics' unsigned order; an index without statistics (written before them) is read whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from siftmix.dedup.index import BAND_GROUP_ROWS, IndexPart, index_rows, read_key_groups

    rng = np.random.default_rng(3)
    n = 20 * BAND_GROUP_ROWS + 17
    key = np.sort(rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True))
    t = pa.table({"key": key, "band": np.zeros(n, np.int16), "doc": np.arange(n, dtype=np.int64), "exact": key})
    root = tmp_path / "idx"
    (root / "index" / "bands").mkdir(parents=True)
    path = root / "index" / "bands" / "p00000.parquet"
    pq.write_table(t, path, row_group_size=BAND_GROUP_ROWS, write_statistics=["key"], compression="none")
    new = np.unique(np.r_[key[[5, 6, 9 * BAND_GROUP_ROWS + 1, n - 1]], rng.integers(0, 2**64 - 1, 3, dtype=np.uint64)])
    got, read, there = read_key_groups(str(path), new)
    assert there == 21 and read <= 3 + 3 and set(new[np.isin(new, key)].tolist()) <= set(got["key"].to_pylist())
    part = IndexPart(str(root), str(root), 1, (), 0, "", n)
    rows, read, there = index_rows([part], 0, 1, new)
    want = t.filter(pa.array(np.isin(key, new)))
    assert rows.sort_by("doc").equals(want.sort_by("doc")) and read <= 6 and there == 21
    assert read_key_groups(str(path), key)[1] == 21  # every key: every group
    assert read_key_groups(str(path), np.zeros(0, np.uint64))[0] is None
    pq.write_table(t, path, row_group_size=BAND_GROUP_ROWS, write_statistics=False)  # an older index
    got, read, there = read_key_groups(str(path), new)
    assert read == there == 21 and got.num_rows == n
