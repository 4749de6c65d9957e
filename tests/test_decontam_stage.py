"""The decontamination stage and the audit through a real local Ray: planted passages, boilerplate,
determinism, characters that add up, the reports (in headless Chromium), the CLI."""

import gzip
import json

import browser
import numpy as np
import pytest
from conftest import committed, demo_sources, parquet_bytes, run_cli
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.core.text import normalized_words
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _quiet(*a, **k):
    pass


def _cfg(run_dir, sources, benchmarks, **decontam):
    return config_from_dict({"run_dir": str(run_dir), "stages": ["ingest", "decontam"], "sources": sources,
                             "ingest": {"min_chars": 200}, "decontam": {"benchmarks": benchmarks, **decontam}})


def test_demo_planted_passages_found_and_cut_deterministically(ray_local, demo_corpus, tmp_path):
    truth = json.loads((demo_corpus / "truth.json").read_text())["contamination"]
    planted = {(t["benchmark"], t["example"]) for t in truth}
    outs = []
    for i, workers in enumerate((1, 2, 2)):
        cfg = _cfg(tmp_path / f"r{i}", demo_sources(demo_corpus), [str(demo_corpus / "benchmarks")])
        run_stage("ingest", cfg, log=_quiet)
        m = run_stage("decontam", cfg, workers=workers, log=_quiet, progress=False)
        stage = tmp_path / f"r{i}" / "30_decontam"
        outs.append({**parquet_bytes(stage), "audit.json": (committed(stage) / "audit.json").read_bytes()})
    assert outs[0] == outs[1] == outs[2]
    audit = json.loads(outs[0]["audit.json"])
    found = {(b["name"], e["id"]) for b in audit["benchmarks"] for e in b["dirty_examples"]}
    assert found == planted  # all planted examples, nothing else (the demo text is random)
    t = m["training_side"]
    assert t["chars_in"] == t["chars_kept"] + t["chars_removed"] and t["documents_cut"] >= len({x["doc"] for x in truth}) - 5
    c = m["counts"]
    assert c["in"] == c["kept"] + c["rejected"]
    docs = read_shards(str(committed(tmp_path / "r0" / "30_decontam") / "data"))
    rej = read_shards(str(committed(tmp_path / "r0" / "30_decontam") / "rejected"))
    assert any("#" in i for i in docs["id"].to_pylist())
    assert set(rej["reason"].to_pylist()) <= {f"contaminated:{b}" for b in ("demo_qa", "demo_cloze", "demo_facts")}
    bench_texts = {}
    for f in (demo_corpus / "benchmarks").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            bench_texts[r["id"]] = r["text"]
    kept = "\n".join(docs["text"].to_pylist())
    for _, ex in planted:
        assert bench_texts[ex] not in kept  # every planted passage is gone from the data
    # the audit alone reports the same and writes no data
    audit_m = run_stage("audit", cfg, log=_quiet, progress=False)
    a2 = json.loads((committed(tmp_path / "r2" / "30_audit") / "audit.json").read_text())
    assert [b["dirty"] for b in a2["benchmarks"]] == [b["dirty"] for b in audit["benchmarks"]]
    assert not (committed(tmp_path / "r2" / "30_audit") / "data").exists() and audit_m["stage"] == "audit"


def test_real_crawl_with_planted_benchmarks_and_boilerplate(ray_local, shared_data, tmp_path):
    bench_dir = shared_data / "benchmarks"
    pages = [json.loads(x) for x in gzip.open(shared_data / "cc" / "web_pages_dragnet.jsonl.gz")][:400]
    rng = np.random.default_rng(1)
    gsm = [json.loads(x) for x in gzip.open(bench_dir / "gsm8k_test.jsonl.gz")]
    arc = [json.loads(x) for x in gzip.open(bench_dir / "arc_easy_test.jsonl.gz")]
    planted = {}
    for k, d in enumerate(rng.choice(len(pages), 30, replace=False)):
        ex = gsm[k] if k % 2 == 0 else arc[k]
        p = pages[d]["text"]
        pages[d]["text"] = p[: len(p) // 2] + "\n" + ex["text"] + "\n" + p[len(p) // 2:]
        planted[pages[d]["id"]] = ex
    boiler = gsm[500]["text"]  # in 12 documents: boilerplate, ignored on the training side
    boiler_docs = [pages[int(d)]["id"] for d in rng.choice(len(pages), 12, replace=False) if pages[int(d)]["id"] not in planted]
    for p in pages:
        if p["id"] in boiler_docs:
            p["text"] += "\n" + boiler
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pages))
    cfg = _cfg(tmp_path / "run", [{"name": "common_crawl", "paths": [str(tmp_path / "crawl")]}], [str(bench_dir)])
    run_stage("ingest", cfg, log=_quiet)
    m = run_stage("decontam", cfg, log=_quiet, progress=False)
    docs = read_shards(str(committed(tmp_path / "run" / "30_decontam") / "data"))
    text_of = {}
    for i, t in zip(docs["id"].to_pylist(), docs["text"].to_pylist()):
        text_of.setdefault(i.split("#")[0], []).append(t)
    for doc, ex in planted.items():
        if len(normalized_words(ex["text"])) >= 13:  # shorter examples have no 13-gram to cut
            assert all(ex["text"] not in t for t in text_of.get(doc, []))  # found and excised
    for doc in boiler_docs:
        assert len(text_of[doc]) == 1 and boiler in text_of[doc][0] and doc in text_of  # ignored: untouched
    assert m["training_side"]["ngrams_ignored_as_boilerplate"] > 0
    audit = json.loads((committed(tmp_path / "run" / "30_decontam") / "audit.json").read_text())
    assert len(audit["benchmarks"]) == 14
    dirty = {e["id"] for b in audit["benchmarks"] for e in b["dirty_examples"]}
    n_of = {b["name"]: b["n"] for b in audit["benchmarks"]}
    findable = {ex["id"] for ex in planted.values()
                if len(normalized_words(ex["text"])) >= n_of[ex["id"].split(":")[0].replace("-", "_")]}
    assert len(findable) >= 25 and findable <= dirty and gsm[500]["id"] in dirty
    for b in audit["benchmarks"]:  # every other dirty example is a real match, shown with its snippet
        for e in b["dirty_examples"]:
            s, t = e["train_span"]
            assert normalized_words(e["train_snippet"][s:t]) == normalized_words(e["ngram"]) and len(normalized_words(e["ngram"])) == b["n"]


def test_audit_html_in_headless_chromium(ray_local, demo_corpus, tmp_path):
    browser.chromium()
    cfg = _cfg(tmp_path / "h", demo_sources(demo_corpus), [str(demo_corpus / "benchmarks")])
    run_stage("ingest", cfg, log=_quiet)
    run_stage("decontam", cfg, log=_quiet, progress=False)
    page = committed(tmp_path / "h" / "30_decontam") / "audit.html"
    assert browser.outside_resources(page.read_text()) == []  # self-contained
    dom, console = browser.load(page, tmp_path / "chrome")
    assert console == []
    assert dom.count('class="bench-row"') == 3 and "<mark>" in dom
    browser.screenshot(page, "audit.png", tmp_path / "chrome")


def test_cli_audit_and_decontam(tmp_path, demo_corpus):
    (tmp_path / "data").mkdir()
    q = json.loads((demo_corpus / "benchmarks" / "demo_qa.jsonl").read_text().splitlines()[3])
    (tmp_path / "data" / "d.jsonl").write_text(json.dumps({"text": "Some intro text here. " + q["text"] + " and more."}) + "\n")
    qa = [json.loads(x) for x in (demo_corpus / "benchmarks" / "demo_qa.jsonl").read_text().splitlines()]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"benchmark": "demo_qa", "id": x["id"], "score": i % 2})
                                              + "\n" for i, x in enumerate(qa)))
    r = run_cli("audit", "-i", tmp_path / "data", "-b", demo_corpus / "benchmarks", "-o", tmp_path / "out",
                "--scores", "s.jsonl", cwd=tmp_path)  # relative to the current folder
    assert r.returncode == 0, r.stderr
    audit_dir = committed(tmp_path / "out" / "30_audit")
    assert r.stdout.strip() == str(audit_dir / "audit.html")
    a = json.loads((audit_dir / "audit.json").read_text())
    assert {e["id"] for b in a["benchmarks"] for e in b["dirty_examples"]} == {q["id"]}
    (row,) = a["table_c1"]
    assert (row["benchmark"], row["count_all"], row["count_dirty"], row["score_dirty"]) == ("demo_qa", len(qa), 1, 3 % 2)
    assert json.loads((tmp_path / "data" / "d.jsonl").read_text())["text"].count(q["text"]) == 1  # untouched
    p = tmp_path / "c.yaml"
    p.write_text(f"run_dir: {tmp_path / 'run'}\nstages: [ingest]\nsources:\n  - {{name: web, paths: {tmp_path / 'data'}}}\n")
    r = run_cli("decontam", p)
    assert r.returncode == 2 and "decontam.benchmarks" in r.stderr


def test_stage_equals_brute_force_oracle(ray_local, tmp_path):
    """The whole stage through Ray (two passes, shards, ids) against the brute-force oracle."""
    from siftmix.contamination.benchmarks import load_benchmarks
    from test_appendix_c import VOCAB, oracle

    rng = np.random.default_rng(42)
    (tmp_path / "b").mkdir()
    bench_rows = [{"id": f"q{i}", "text": " ".join(rng.choice(VOCAB, rng.integers(14, 30)))} for i in range(30)]
    (tmp_path / "b" / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bench_rows))
    docs = []
    for i in range(300):
        parts = [" ".join(rng.choice(VOCAB, rng.integers(40, 200)))]
        for _ in range(rng.integers(0, 3) if i % 3 == 0 else 0):
            parts += [bench_rows[rng.integers(30)]["text"], " ".join(rng.choice(VOCAB, rng.integers(50, 150)))]
        docs.append(" ".join(parts))
    docs += [" ".join(rng.choice(VOCAB, 100)) + " " + bench_rows[0]["text"] for _ in range(12)]  # boilerplate
    (tmp_path / "in").mkdir()
    for k in range(3):  # several input files, several shards
        (tmp_path / "in" / f"part{k}.jsonl").write_text(
            "".join(json.dumps({"id": f"d{i:04d}", "text": t}) + "\n" for i, t in enumerate(docs) if i % 3 == k))
    cfg = _cfg(tmp_path / "run", [{"name": "web", "paths": [str(tmp_path / "in")]}], [str(tmp_path / "b")])
    cfg.ingest.min_chars = 1
    run_stage("ingest", cfg, log=_quiet)
    run_stage("decontam", cfg, workers=2, log=_quiet, progress=False)
    ingested = read_shards(str(committed(tmp_path / "run" / "00_ingest") / "data"))
    ids, texts = ingested["id"].to_pylist(), ingested["text"].to_pylist()
    want_train, want_dirty = oracle(texts, load_benchmarks([str(tmp_path / "b")]))
    out = read_shards(str(committed(tmp_path / "run" / "30_decontam") / "data"))
    got = {}
    for i, t in zip(out["id"].to_pylist(), out["text"].to_pylist()):
        got.setdefault(i.split("#")[0], []).append(t)
    assert want_train  # the corpus is contaminated
    for d, text in enumerate(texts):
        if d in want_train:
            pieces, _ = want_train[d]
            assert got.get(ids[d], []) == ([] if pieces == "dropped" else pieces), ids[d]
        else:
            assert got[ids[d]] == [text]
    audit = json.loads((committed(tmp_path / "run" / "30_decontam") / "audit.json").read_text())
    assert {int(e["id"][1:]) for e in audit["benchmarks"][0]["dirty_examples"]} == want_dirty["bench"]
