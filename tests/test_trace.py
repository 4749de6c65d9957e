"""`siftmix trace`: one document's path through a demo run, checked against a brute-force scan of
every output shard of every stage; the same trace over the run copied to S3; the CLI."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import committed, run_cli
from siftmix.pipeline.trace import format_text, trace

pytestmark = pytest.mark.integration

FOLDERS = {"ingest": "00_ingest", "quality": "10_quality", "dedup": "20_dedup", "decontam": "30_decontam"}


def _all_rows(run: Path, folder: str, sub: str):
    """Every row of every shard of a stage: {id: [(shard, row, reason)]} (the oracle)."""
    out = {}
    d = committed(run / folder) / sub
    for p in sorted(d.glob("*.parquet")) if d.is_dir() else []:
        t = pq.read_table(p)
        reasons = t["reason"].to_pylist() if "reason" in t.column_names else [None] * t.num_rows
        for i, (doc, r) in enumerate(zip(t["id"].to_pylist(), reasons)):
            out.setdefault(doc, []).append((p.name, i, r))
    return out


@pytest.fixture(scope="module")
def oracle(demo_reference):
    return {(st, sub): _all_rows(demo_reference, f, sub) for st, f in FOLDERS.items() for sub in ("data", "rejected")}


def _expected(oracle, stage, doc_id):
    rows = set()
    for sub in ("data", "rejected"):
        for k, v in oracle[(stage, sub)].items():
            if k == doc_id or k.startswith(doc_id + "#"):
                rows.update((k, shard, row, reason) for shard, row, reason in v)
    return rows


def _pick(oracle, stage, pred):
    return next(k for k, v in sorted(oracle[(stage, "rejected")].items()) if pred(k, v[0][2]))


def _mix_rows(run: Path):
    out = {}
    d = committed(run / "40_mix") / "shards"
    for p in sorted(d.glob("*.parquet")):
        t = pq.read_table(p, columns=["id", "repeat"])
        for i, (doc, r) in enumerate(zip(t["id"].to_pylist(), t["repeat"].to_pylist())):
            out.setdefault(doc, set()).add((r, p.name, i))
    return out


def test_trace_equals_a_scan_of_every_shard(demo_reference, oracle):
    run = demo_reference
    ids = {
        "quality": _pick(oracle, "quality", lambda k, r: r == "quality"),
        "dedup": _pick(oracle, "dedup", lambda k, r: r.startswith("duplicate_of:")),
        "decontam": _pick(oracle, "decontam", lambda k, r: r.startswith("contaminated:")).split("#")[0],
        "book": next(k for k, v in sorted(oracle[("decontam", "data")].items()) if v[0][0].startswith("books1-")),
        "kept": next(k for k, v in sorted(oracle[("decontam", "data")].items())
                     if v[0][0].startswith(("webtext2-", "wikipedia-", "books2-"))),
    }
    mix = _mix_rows(run)
    bins = {}
    from siftmix.mixing.tokenizer import get_tokenizer

    tok = get_tokenizer("gpt2")
    for what, doc in ids.items():
        t = trace(str(run), doc)
        assert format_text(t).startswith(f"trace {doc}")
        steps = {s["stage"]: s for s in t["stages"]}
        for stage in FOLDERS:
            got = {(r["id"], r["shard"], r["row"], r.get("reason")) for r in steps[stage].get("rows", [])}
            assert got == _expected(oracle, stage, doc), (what, stage)
            if stage != "ingest" and got:
                assert steps[stage]["shards_read"] <= 2  # the document's own data and rejected shard
        if what == "quality":
            assert steps["quality"]["status"] == "rejected" and steps["quality"]["reason"] == "quality"
            assert 0 <= steps["quality"]["score"] <= 1 and steps["dedup"]["status"] == "not reached"
        if what == "dedup":
            keeper = steps["dedup"]["duplicate_of"]
            assert steps["dedup"]["reason"].endswith(":" + keeper) and keeper in oracle[("dedup", "data")]
            cl = steps["dedup"]["cluster"]  # from the stage's cluster files
            assert cl["keeper"] == keeper and {doc, keeper} <= {r["id"] for r in cl["members"]}
            k = {s["stage"]: s for s in trace(str(run), keeper)["stages"]}["dedup"]
            assert k["status"] == "kept" and k["cluster"]["cluster"] == cl["cluster"]
        if what == "decontam":
            s = steps["decontam"]
            assert s["status"] == "cut" and s["pieces"] and all(p.startswith(doc + "#") for p in s["pieces"])
            assert all(r["reason"].startswith("contaminated:") for r in s["removed"])
        # the mix: every appearance of every piece, as a scan of all mix shards finds them
        placed = steps["mix"]["placed"]
        want = {k: v for k, v in mix.items() if k.split("@")[0].split("#")[0] == doc}
        assert {p["piece"]: {(a["repeat"], a["shard"], a["row"]) for a in p["appearances"]}
                for p in placed if p["repeats"]} == want, what
        if what == "book":
            assert len(placed) > 1 and all(p["piece"].startswith(doc + "@") for p in placed)
        for p in placed:
            for a in p["appearances"]:
                assert a["shards_read"] == 1  # the key range names the shard
                shard = committed(run / "40_mix") / "shards" / a["shard"]
                text = pq.read_table(shard, columns=["text"])["text"][a["row"]].as_py()
                b = bins.setdefault(a["bin"], np.fromfile(shard.with_suffix(".bin"), dtype=np.uint16))
                seg = b[a["token_offset"]:a["token_offset"] + a["tokens"]]
                assert seg[-1] == tok.eot and tok.decode(seg[:-1]) == text


def test_trace_on_s3_equals_local(s3, demo_reference):
    from siftmix.pipeline.core import storage

    url = s3.bucket("trace-bucket") + "/run"
    storage.copy(str(demo_reference), url)
    crawl = pq.read_table(next((committed(demo_reference / "30_decontam") / "data").glob("common_crawl-*.parquet")),
                          columns=["id"])["id"][0].as_py().split("#")[0]
    local, remote = trace(str(demo_reference), crawl), trace(url, crawl)
    assert remote["run_dir"] == url and {**remote, "run_dir": None} == {**local, "run_dir": None}
    assert any(p["repeats"] for p in remote["stages"][-1]["placed"])


def test_cli_trace_json_and_unknown_id(demo_reference):
    doc = sorted(_all_rows(demo_reference, "20_dedup", "rejected"))[0]
    r = run_cli("trace", str(demo_reference), doc, "--json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["id"] == doc and [s["stage"] for s in t["stages"]] == ["ingest", "quality", "dedup", "decontam", "mix"]
    assert t["stages"][2]["status"] == "rejected"
    r = run_cli("trace", str(demo_reference), "no-such-document")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "no-such-document" in r.stderr
