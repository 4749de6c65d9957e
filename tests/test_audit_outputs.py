"""What the audit writes besides the dirty list: clean subsets that load back with the benchmark
loaders, warnings where the audit cannot see (0 examples, examples shorter than N, N below 13),
escaping of Markdown, HTML and control characters, the manifest's counts of contaminated
documents, and (through a real local Ray) a decontam run with scores: Table C.1 in audit.json
against the brute force, audit.html with Figure 4.2 in headless Chromium."""

import gzip
import json
import re
from html.parser import HTMLParser

import browser
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import committed, demo_sources
from siftmix.contamination.appendix_c import (
    Benchmark,
    NgramIndex,
    benchmark_matches,
    dirty_examples,
)
from siftmix.contamination.benchmarks import _rows, load_benchmark, load_benchmarks, write_subsets
from siftmix.contamination.report import audit_warnings, to_html, to_markdown
from siftmix.contamination.scores import read_scores, table_c1
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.text import normalized_words, words
from siftmix.pipeline.runner import run_stage
from test_audit_scores import _close, brute_force_row

EVIL = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "\x00\x1b[31m\x07"]
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# --------------------------------------------------------------------------- clean subsets


def _formats(tmp_path) -> dict:
    rows = [{"id": f"e{i}", "question": f"question {i} of the set", "choices": ["a", f"b{i}"], "answer": "a",
             "extra": {"k": i}} for i in range(7)]
    (tmp_path / "b").mkdir()
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "b" / "plain.jsonl").write_text(lines)
    (tmp_path / "b" / "packed.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "b" / "packed2.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    (tmp_path / "b" / "wrapped.json").write_text(json.dumps({"version": 3, "data": rows}))
    (tmp_path / "b" / "listed.json.gz").write_bytes(gzip.compress(json.dumps(rows).encode()))
    (tmp_path / "b" / "table.csv").write_text("id,sentence,label\n" + "".join(
        f'c{i},"a sentence, with comma {i}\nand a line break",{i % 2}\n' for i in range(7)))
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(7)], "text": [f"parquet text {i}" for i in range(7)],
                             "score": pa.array(np.arange(7), pa.int16())}), tmp_path / "b" / "tab.parquet")
    return {b.name: b for b in load_benchmarks([str(tmp_path / "b")])}


def test_clean_subsets_load_back_in_every_format(tmp_path):
    benches = _formats(tmp_path)
    assert len(benches) == 7
    out = tmp_path / "out"
    dirty_of = {}
    for k, (name, b) in enumerate(sorted(benches.items())):
        dirty = dirty_of[name] = {k % 7, (k + 3) % 7}
        files = write_subsets(b, dirty, str(out))
        clean = out / files["clean"]
        assert clean.name == b.path.rsplit("/", 1)[1]  # clean/<benchmark>.<ext>: the input's own format
        back = load_benchmark(str(clean), name=name)
        keep = [i for i in range(len(b.ids)) if i not in dirty]
        assert back.ids == [b.ids[i] for i in keep] and back.texts == [b.texts[i] for i in keep]
        assert _rows(str(clean)) == [_rows(b.path)[i] for i in keep]  # the same fields, all of them
        assert (out / files["clean_ids"]).read_text().split("\n")[:-1] == [b.ids[i] for i in keep]
        assert (out / files["dirty_ids"]).read_text().split("\n")[:-1] == [b.ids[i] for i in sorted(dirty)]
    assert json.loads((out / "clean" / "wrapped.json").read_text())["version"] == 3  # other keys kept
    assert pq.read_schema(out / "clean" / "tab.parquet") == pq.read_schema(tmp_path / "b" / "tab.parquet")
    lines = (tmp_path / "b" / "plain.jsonl").read_text().splitlines()
    assert (out / "clean" / "plain.jsonl").read_text().splitlines() == [lines[i] for i in range(7) if i not in dirty_of["plain"]]


# --------------------------------------------------------------------------- short examples, warnings


def test_short_examples_whole_against_brute_force():
    long = [" ".join(f"w{i}x{j}" for j in range(20)) for i in range(67)]  # 3 short of 70: N stays 13
    short = ["the old mill", "alpha beta gamma delta", "lonely"]
    b = Benchmark("mixed", [str(i) for i in range(70)], long + short)
    docs = ["intro text The OLD mill, and more", "nothing here alpha beta gamma", "x " + long[2] + " y", "lonely"]
    doc_words = [normalized_words(d) for d in docs]

    def occurs(ws):
        return any(dw[i:i + len(ws)] == ws for dw in doc_words for i in range(len(dw) - len(ws) + 1))

    for mode in ("ignore", "whole"):
        idx = NgramIndex.build([b], short=mode)
        assert idx.n["mixed"] == 13 and idx.short == {"mixed": 3}
        w = words(docs)
        matched = {s: set(int(x) for x in u) for s, (u, _, _) in benchmark_matches(w, idx).items()}
        got = set(dirty_examples(idx, matched)["mixed"])
        want = {2} | ({67 + k for k, t in enumerate(short) if occurs(normalized_words(t))} if mode == "whole" else set())
        assert got == want
    assert want == {2, 67, 69}  # "alpha beta gamma delta" is not whole in any document
    msgs = [w["message"] for w in audit_warnings([b], NgramIndex.build([b]), "ignore")]
    assert msgs == ["mixed: 3 of 70 examples are shorter than N = 13 words and cannot be dirty by the paper's rule; "
                    "set decontam.short_examples: whole to report them when their whole word sequence occurs in the "
                    "training data"]


def test_warnings_empty_short_and_low_n():
    benches = [Benchmark("empty", [], []), Benchmark("shortish", ["0", "1"], ["one two three", "a b c d e f g h i j"]),
               Benchmark("fine", ["0"], [" ".join(f"w{i}" for i in range(30))])]
    idx = NgramIndex.build(benches)
    got = {(w["kind"], w["benchmark"]): w for w in audit_warnings(benches, idx, "whole")}
    assert set(got) == {("no_examples", "empty"), ("short_examples", "shortish"), ("n_below_13", "shortish")}
    assert got[("short_examples", "shortish")]["count"] == 1 and "(decontam.short_examples: whole)" in \
        got[("short_examples", "shortish")]["message"]
    assert got[("n_below_13", "shortish")]["count"] == 8 and "0 examples" in got[("no_examples", "empty")]["message"]


# --------------------------------------------------------------------------- escaping


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _check_escaped_html(page: str) -> None:
    p = _Tags()
    p.feed(page)
    assert [t for t, _ in p.tags].count("script") == 1  # the page's own table-sorting script
    assert "img" not in [t for t, _ in p.tags] and not any("onerror" in a for _, a in p.tags)
    assert not CONTROL.search(page) and "\\u0000" in page and "\\u001b" in page and "\\u0007" in page
    assert "&lt;script&gt;" in page and "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def _check_escaped_md(text: str) -> None:
    assert "<script" not in text and "<img" not in text and not CONTROL.search(text)
    assert "&lt;script&gt;" in text and "\\u0000" in text and "\\u001b" in text
    assert re.search(r"&quot;|\"&gt;&lt;img src=x onerror=alert\\\(1\\\)&gt;", text)


def test_reports_escape_markdown_html_and_control_characters():
    evil = " ".join(EVIL)
    audit = {"benchmarks": [{"name": f"b{EVIL[0]}", "n": 13, "examples": 2, "dirty": 1, "clean": 1, "pct_dirty": 50.0,
                             "dirty_examples": [{"id": f"id{EVIL[1]}", "text": f"before {evil} | *x* after",
                                                 "ngram": evil, "example_span": [7, 7 + len(evil)],
                                                 "train_doc": f"doc{EVIL[2]}", "train_snippet": f"[{evil}](javascript:x)",
                                                 "train_span": [1, 1 + len(evil)]}]}],
             "warnings": [{"kind": "short_examples", "message": f"b{EVIL[0]}: {EVIL[2]}"}],
             "table_c1": [{"benchmark": f"b{EVIL[1]}", "metric": f"acc{EVIL[2]}", "primary": True, "binary": True,
                           "count_all": 2, "score_all": 0.5, "count_dirty": 1, "score_dirty": 1.0, "count_clean": 1,
                           "score_clean": 0.0, "pct_clean": 50.0, "rel_diff_pct": -100.0, "interval": [0.0, 0.79],
                           "interval_method": "wilson", "flagged": False}],
             "training_side": {f"k{EVIL[0]}": EVIL[1]}}
    _check_escaped_html(to_html(audit))
    md = to_markdown(audit)
    _check_escaped_md(md)
    assert "\\<" not in md and "b&lt;script&gt;alert\\(&quot;x&quot;\\)&lt;/script&gt;" not in md  # no double escaping
    assert 'b&lt;script&gt;alert\\("x"\\)&lt;/script&gt;' in md  # the name: HTML and Markdown escaped


# --------------------------------------------------------------------------- a decontam run with scores

SHORT = ["the old mill", "crossed the quiet valley"]


@pytest.fixture(scope="module")
def audited(ray_local, demo_corpus, tmp_path_factory):
    """ingest + decontam over the demo corpus plus a source holding planted evil and short
    benchmark text; benchmarks: the demo's three, an evil one, a short one, an empty one;
    scores for every example of the non-empty ones (planted examples right, others at random)."""
    tmp = tmp_path_factory.mktemp("audited")
    rng = np.random.default_rng(5)
    extra = tmp / "bench"
    extra.mkdir()
    vocab = [f"v{k}" for k in range(500)]  # examples that share no n-gram
    evil_rows = [{"id": f"evil-{i}" + {0: EVIL[1], 1: EVIL[2]}.get(i, ""),
                  "text": f"{EVIL[i % 3]} " + " ".join(rng.choice(vocab, 16, replace=False))} for i in range(20)]
    short_rows = [{"id": f"s{i}", "text": " ".join(f"word{i}x{j}" for j in range(16))} for i in range(18)]
    short_rows += [{"id": f"s-short-{k}", "text": t} for k, t in enumerate(SHORT)]
    (extra / f"evil{EVIL[0][:7]}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evil_rows))
    (extra / "shorty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short_rows))
    (extra / "empty.jsonl").write_text("")
    planted = tmp / "planted"
    planted.mkdir()
    filler = " ".join(rng.choice(["lorem", "ipsum", "dolor", "sit", "amet"], 120))
    # training text with the same: ingest keeps control characters here (ingest.control_chars: keep)
    docs = [{"id": f"p{i}" + (EVIL[2] if i == 1 else ""), "text": f"{filler} {EVIL[2]} {r['text']} {EVIL[0]}{EVIL[1]} {filler}"}
            for i, r in enumerate(evil_rows[:6])]
    docs += [{"id": "p-short", "text": f"{filler} so {SHORT[0].upper()}, then {filler}"},
             {"id": "p-long", "text": f"{filler} {short_rows[3]['text']} {filler}"}]
    (planted / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    truth = {(t["benchmark"], t["example"]) for t in json.loads((demo_corpus / "truth.json").read_text())["contamination"]}
    benches = load_benchmarks([str(demo_corpus / "benchmarks"), str(extra)])
    recs = []
    for b in benches:
        for i, x in enumerate(b.ids):
            if b.name.startswith("evil"):  # 6 of 20 planted, and only those right: flagged
                right = i < 6
            else:
                right = (b.name, x) in truth or rng.random() < 0.4
            recs.append({"benchmark": b.name, "id": x, "score": float(right)})
            if b.name == "demo_qa":
                recs.append({"benchmark": b.name, "id": x, "metric": "f1", "score": float(rng.random())})
    (tmp / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = config_from_dict({"run_dir": str(tmp / "run"), "seed": 9, "stages": ["ingest", "decontam"],
                            "sources": demo_sources(demo_corpus) + [{"name": "planted", "paths": [str(planted)]}],
                            "ingest": {"min_chars": 200, "control_chars": "keep"},
                            "decontam": {"benchmarks": [str(demo_corpus / "benchmarks"), str(extra)],
                                         "scores": [str(tmp / "scores.jsonl")], "short_examples": "whole"}})
    log = []
    run_stage("ingest", cfg, log=log.append)
    m = run_stage("decontam", cfg, log=log.append, progress=False)
    folder = committed(tmp / "run" / "30_decontam")
    return {"m": m, "folder": folder, "log": log, "benches": benches, "scores": tmp / "scores.jsonl",
            "audit": json.loads((folder / "audit.json").read_text()), "tmp": tmp}


@pytest.mark.integration
def test_run_table_c1_against_brute_force(audited):
    audit, benches = audited["audit"], audited["benches"]
    dirty = {b["name"]: {e["id"] for e in b["dirty_examples"]} for b in audit["benchmarks"]}
    idx_of = {b.name: {x: i for i, x in enumerate(b.ids)} for b in benches}
    recs = [json.loads(x) for x in audited["scores"].read_text().splitlines()]
    rows = audit["table_c1"]
    assert {(r["benchmark"], r["metric"]) for r in rows} == {(r["benchmark"], r.get("metric", "score")) for r in recs}
    for r in rows:
        per = {idx_of[r["benchmark"]][x["id"]]: x["score"] for x in recs
               if x["benchmark"] == r["benchmark"] and x.get("metric", "score") == r["metric"]}
        d = {idx_of[r["benchmark"]][x] for x in dirty[r["benchmark"]]}
        want = brute_force_row(r["benchmark"], r["metric"], per, d, 9)
        for k, v in want.items():
            assert _close(r[k], v) if k != "flagged" else r[k] == v, (r["benchmark"], r["metric"], k)
    assert any(r["flagged"] for r in rows) and not all(r["flagged"] for r in rows)
    assert audited["m"]["table_c1"] == rows
    assert table_c1(read_scores([str(audited["scores"])], benches), {b: {idx_of[b][x] for x in v} for b, v in dirty.items()},
                    seed=9, order=[b.name for b in benches]) == rows


@pytest.mark.integration
def test_run_clean_subsets_and_counts(audited):
    folder, audit = audited["folder"], audited["audit"]
    for b in audited["benches"]:
        entry = next(x for x in audit["benchmarks"] if x["name"] == b.name)
        dirty_ids = {e["id"] for e in entry["dirty_examples"]}
        clean = load_benchmark(str(folder / entry["files"]["clean"]), name=b.name)
        assert clean.ids == [x for x in b.ids if x not in dirty_ids]  # exactly the examples not listed dirty
        assert clean.texts == [t for x, t in zip(b.ids, b.texts) if x not in dirty_ids]
        listed = (folder / entry["files"]["dirty_ids"]).read_text().split("\n")[:-1]
        assert sorted(listed) == sorted(dirty_ids) and (folder / entry["files"]["clean_ids"]).exists()
    shorty = next(x for x in audit["benchmarks"] if x["name"] == "shorty")
    # a long example, and a short one whose whole word sequence occurs (re-cased, with a comma)
    assert {e["id"]: e["whole"] for e in shorty["dirty_examples"]} == {"s3": False, "s-short-0": True}
    evil = next(x for x in audit["benchmarks"] if x["name"].startswith("evil"))
    evil_rows = [json.loads(x) for x in open(next(b.path for b in audited["benches"] if b.name == evil["name"]))]
    assert {e["id"] for e in evil["dirty_examples"]} == {r["id"] for r in evil_rows[:6]}
    c = audited["m"]["counts"]
    t = audited["m"]["training_side"]
    assert c["in"] == c["kept"] + c["rejected"]
    contaminated = sum(v for k, v in c["rejected_by_reason"].items() if k.startswith("contaminated:"))
    assert c["rejected_in_part"] > 0 and c["rejected_in_part"] + contaminated == t["documents_cut"]
    assert sum(c["rejected_in_part_by_reason"].values()) == c["rejected_in_part"]
    assert sum(s["rejected_in_part"] for s in c["by_source"].values()) == c["rejected_in_part"]
    assert c["by_source"]["planted"]["rejected_in_part_by_reason"]  # the evil passages, by benchmark
    from siftmix.pipeline.report import build_report
    from test_report import numbers

    shown = numbers(open(build_report(audited["tmp"] / "run")).read())  # the run report shows them
    assert {k.split(".", 2)[2]: int(v.replace(",", "")) for k, v in shown.items()
            if k.startswith("decontam.in_part.")} == c["rejected_in_part_by_reason"]


@pytest.mark.integration
def test_run_warnings_in_log_json_and_html(audited):
    kinds = {(w["kind"], w.get("benchmark")) for w in audited["audit"]["warnings"]}
    assert {("no_examples", "empty"), ("short_examples", "shorty"), ("n_below_13", "shorty")} <= kinds
    page = (audited["folder"] / "audit.html").read_text()
    for w in audited["audit"]["warnings"]:
        assert f"decontam: warning: {w['message']}" in audited["log"]
        assert w["message"].replace("'", "&#x27;") in page
    assert audited["m"]["warnings"] == audited["audit"]["warnings"]


@pytest.mark.integration
def test_run_reports_escape_benchmark_and_training_text(audited):
    folder = audited["folder"]
    evil = next(b for b in audited["audit"]["benchmarks"] if b["name"].startswith("evil"))
    snippets = "".join(e["train_snippet"] for e in evil["dirty_examples"])
    assert EVIL[0] in snippets and EVIL[1] in snippets and EVIL[2] in snippets  # training text reached the report
    assert any(EVIL[2] in e["train_doc"] for e in evil["dirty_examples"])
    page = (folder / "audit.html").read_text()
    _check_escaped_html(page)  # benchmark text and training snippets
    assert page.count("&lt;script&gt;") >= 2 and "p1\\u0000\\u001b[31m\\u0007" in page
    md = (folder / "audit.md").read_text()
    assert "<script" not in md and "<img" not in md and not CONTROL.search(md) and "\\u0000" in md
    assert "training document p1\\u0000\\u001b\\[31m\\u0007" in md  # a training document id
    assert "evil&lt;script" in md and 'evil\\-0"&gt;&lt;img src=x onerror=alert\\(1\\)&gt;' in md  # name; id


@pytest.mark.integration
def test_audit_html_figure_4_2_in_headless_chromium(audited, tmp_path):
    browser.chromium()
    page = audited["folder"] / "audit.html"
    assert browser.outside_resources(page.read_text()) == []
    probe = ('document.body.dataset.points=document.querySelectorAll("#figure-4-2 g.c1-point").length;'
             'document.body.dataset.flagged=document.querySelectorAll("#figure-4-2 g.c1-point.flagged").length;'
             'document.body.dataset.names=[...document.querySelectorAll("#figure-4-2 g.c1-point")]'
             '.map(g=>g.dataset.benchmark).join("|");'
             'document.body.dataset.alerted=String(window.__alerted||0)')
    dom, console = browser.load(page, tmp_path / "chrome", then="window.alert=()=>{window.__alerted=1};" + probe)
    assert console == []
    rows = audited["audit"]["table_c1"]
    with_scores = [b.name for b in audited["benches"] if any(r["benchmark"] == b.name for r in rows)]
    assert f'data-points="{len(with_scores)}"' in dom and len(with_scores) == 5  # one point per benchmark
    assert f'data-flagged="{sum(r["flagged"] for r in rows if r["primary"])}"' in dom
    assert 'data-alerted="0"' in dom
    browser.screenshot(page, "audit-figure-4-2.png", tmp_path / "chrome", size="1200,2400")
