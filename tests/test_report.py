"""The run report (report.html): hand-made manifests of every stage and of a subset, escaping, the
CLI, and the report of a real demo run in headless Chromium (numbers in the DOM equal the
manifests, no console errors, a screenshot in test-artifacts/report.png)."""

import json
from html.parser import HTMLParser
from pathlib import Path

import browser
import pytest
from conftest import demo_sources, run_cli
from siftmix.pipeline import registry
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.shards import ShardResult, summarize
from siftmix.pipeline.report import ReportError, build_report, stage_folders
from siftmix.pipeline.runner import run_pipeline


class _Numbers(HTMLParser):
    def __init__(self):
        super().__init__()
        self.out, self.key = {}, None

    def handle_starttag(self, tag, attrs):
        self.key = dict(attrs).get("data-k")
        if self.key is not None:
            self.out[self.key] = ""

    def handle_data(self, data):
        if self.key is not None:
            self.out[self.key] += data

    def handle_endtag(self, tag):
        self.key = None


def numbers(page: str) -> dict[str, str]:
    """{data-k: text}: the numbers the page names."""
    p = _Numbers()
    p.feed(page)
    return p.out


def _file(source, docs_in, kept, rejected, bytes_in, bytes_kept):
    return ShardResult(file=f"{source}.jsonl", source=source, docs_in=docs_in, kept=kept, rejected=rejected,
                       bytes_in=bytes_in, chars_kept=bytes_kept, bytes_kept=bytes_kept)


def _write(run: Path, folder: str, stage: str, wall: float, **m) -> dict:
    m = {"stage": stage, "config_hash": f"{stage}-hash-" + "0123456789abcdef" * 3, "input_fingerprint": "fp",
         "timings": {"started": 1.7e9, "finished": 1.7e9 + wall, "wall_s": wall},
         "versions": {"python": "3.11", "siftmix": "0.1.0"}, "manifest_version": 2, "attempt": "attempt-test",
         "outputs": [], **m}
    (run / folder).mkdir(parents=True)
    (run / folder / "_manifest.json").write_text(json.dumps(m))
    return m


INGEST = summarize([_file("common_crawl", 1000, 900, {"too_short": 80, "bad_encoding": 20}, 5_000_000, 4_000_000),
                    _file("wikipedia", 50, 50, {}, 200_000, 190_000)])
BENCHMARKS = [{"name": "qa<&>", "n": 13, "examples": 200, "dirty": 3, "clean": 197, "pct_dirty": 1.5},
              {"name": "cloze", "n": 8, "examples": 40, "dirty": 0, "clean": 40, "pct_dirty": 0.0}]
MIX = {"in": 160, "tokens_available": 400_000, "tokens": 150_000, "rows": 300, "by_source": {
    "common_crawl": {"pieces_in": 120, "tokens_available": 38_000, "tokens": 90_180, "documents": 260, "share": 0.6012,
                     "epochs": 2.3732, "target_weight": 0.6, "planned_epochs": 2.3684},
    "wikipedia": {"pieces_in": 40, "tokens_available": 362_000, "tokens": 59_820, "documents": 40, "share": 0.3988,
                  "epochs": 0.1652, "target_weight": 0.4, "planned_epochs": 0.1657}}}


def _ingest(run):
    return _write(run, "00_ingest", "ingest", 2.0, counts=INGEST)


def _mix(run, input_stage):
    return _write(run, "40_mix", "mix", 0.5, counts=MIX, input_stage=input_stage, shards=[{"file": "a"}] * 3,
                  table_2_2="Dataset  Tokens available\ncommon_crawl  38,000  60.0%  60.12%")


@pytest.fixture
def full_run(tmp_path) -> Path:
    run = tmp_path / "run"
    _ingest(run)
    hist = {"edges": [round(i / 20, 2) for i in range(21)],
            "common_crawl": {"kept": [0] * 18 + [30, 60], "rejected": [400, 410] + [0] * 18}}
    _write(run, "10_quality", "quality", 3.0, score_histograms=hist,
           counts=summarize([_file("common_crawl", 900, 90, {"quality": 810}, 4_000_000, 400_000),
                             _file("wikipedia", 50, 50, {}, 190_000, 190_000)]),
           eval={"fasttext": {"roc_auc": 0.951, "accuracy": 0.9}})
    _write(run, "20_dedup", "dedup", 1.5, input_stage="quality",
           counts=summarize([_file("common_crawl", 90, 75, {"duplicate": 15}, 400_000, 330_000),
                             _file("wikipedia", 50, 50, {}, 190_000, 190_000)]),
           clusters={"n_clusters": 6, "documents_in_clusters": 21, "exact_clusters": 3,
                     "size_histogram": {"10": 1, "2": 4, "3": 1}})
    _write(run, "30_decontam", "decontam", 4.0, input_stage="dedup", benchmarks=BENCHMARKS,
           counts=summarize([_file("common_crawl", 75, 74, {"contaminated:qa<&>": 1}, 330_000, 329_000),
                             _file("wikipedia", 50, 50, {}, 190_000, 190_000)]),
           training_side={"documents_in": 125, "documents_cut": 2, "chars_removed": 1234})
    (run / "30_decontam" / "attempt-test").mkdir()
    (run / "30_decontam" / "attempt-test" / "audit.html").write_text("<html></html>")
    _mix(run, "decontam")
    return run


def test_report_of_every_stage(full_run):
    page = Path(build_report(full_run))
    assert page == full_run / "report.html"
    text = page.read_text()
    n = numbers(text)
    assert (n["ingest.in"], n["ingest.kept"], n["ingest.rejected"]) == ("1,050", "950", "100")
    assert (n["ingest.reason.too_short"], n["ingest.reason.bad_encoding"], n["ingest.kept.common_crawl"]) == ("80", "20", "900")
    assert (n["quality.kept"], n["quality.reason.quality"], n["dedup.kept"]) == ("140", "810", "125")
    assert (n["dedup.n_clusters"], n["dedup.documents_in_clusters"], n["dedup.exact_clusters"]) == ("6", "21", "3")
    assert (n["decontam.dirty.qa<&>"], n["decontam.pct_dirty.qa<&>"], n["decontam.dirty.cloze"]) == ("3", "1.50", "0")
    assert (n["mix.share.common_crawl"], n["mix.target.common_crawl"], n["mix.epochs.common_crawl"]) == ("60.12%", "60.0%", "2.37")
    assert (n["mix.share.wikipedia"], n["mix.tokens.wikipedia"], n["mix.tokens"]) == ("39.88%", "59,820", "150,000")
    assert n["total_wall_time"].startswith("11.0 s") and n["siftmix_version"].startswith("0.1.0")
    assert "2.60 MB/s" in text  # ingest: 5.2 MB in 2 s
    assert "1.04 MB/s" in text  # mix reads what decontam kept: 0.519 MB in 0.5 s
    for folder, stage in stage_folders():
        # the pipeline's stages in this run (not the audit or score-only variants, not the optional langid)
        if stage in registry.names() and (full_run / folder).is_dir():
            assert f'href="{folder}/_manifest.json"' in text and f'id="{folder}"' in text
            assert f"{stage}-hash-0123" in text
    assert 'href="30_decontam/attempt-test/audit.html"' in text and 'id="30_audit"' not in text
    assert "held-out fasttext: ROC AUC 0.951" in text
    assert "input: the configured sources" in text and "input: ingest" in text and "input: dedup" in text
    # plots: score histogram (counts in the tooltips), cluster sizes in numeric order, % dirty, shares
    assert "kept 0.95–1.00: 60 documents (66.7% of kept)" in text and 'id="quality-hist-common_crawl"' in text
    sizes = text[text.index('id="dedup-sizes"'):]
    assert sizes.index("4 clusters of 2 documents") < sizes.index("1 clusters of 3 documents") < sizes.index("1 clusters of 10 documents")
    assert "qa&lt;&amp;&gt;: 1.50% dirty" in text and 'id="mix-shares"' in text
    assert browser.outside_resources(text) == []


def test_report_of_a_subset(tmp_path):
    run = tmp_path / "run"
    _ingest(run)
    _write(run, "30_audit", "audit", 1.0, input_stage="ingest", benchmarks=BENCHMARKS[:1],
           counts={"in": 950, "kept": 950, "rejected": 0})
    _mix(run, "ingest")
    text = Path(build_report(run)).read_text()
    n = numbers(text)
    assert (n["ingest.kept"], n["audit.in"], n["audit.dirty.qa<&>"], n["mix.share.wikipedia"]) == ("950", "950", "3", "39.88%")
    assert "4.19 MB/s" in text and "8.38 MB/s" in text  # audit and mix read what ingest kept (4.19 MB)
    for folder in ("10_quality", "20_dedup", "30_decontam"):
        assert folder not in text
    assert "audit.html" not in text  # not in the folder: no link
    assert n["stages"] == "ingest, audit, mix" and n["total_wall_time"].startswith("3.5 s")


def test_everything_from_the_data_is_escaped(tmp_path):
    run = tmp_path / "run"
    evil = "<img src=x onerror=alert(1)>"
    _write(run, "00_ingest", "ingest", 1.0, counts=summarize([_file(evil, 40, 9, {f"r{i}": 1 for i in range(31)}, 10, 5)]))
    _write(run, "40_mix", "mix", 1.0, input_stage="ingest", table_2_2=f"</pre><script>alert(2)</script>{evil}",
           counts={"in": 9, "tokens": 10, "by_source": {evil: {"tokens": 10, "share": 1.0, "target_weight": 1.0}}})
    text = Path(build_report(run)).read_text()
    assert "<img" not in text and "alert(2)</script>" not in text
    assert text.count("&lt;img src=x onerror=alert(1)&gt;") >= 3  # by source, Table 2.2, the chart
    n = numbers(text)
    assert n[f"ingest.kept.{evil}"] == "9" and n[f"mix.share.{evil}"] == "100.00%"
    assert "11 more reasons" in text and n["ingest.reason.r0"] == "1"  # 20 reasons listed, the rest summed


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ReportError, match="no such run folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "10_quality").mkdir()
    (tmp_path / "10_quality" / "_manifest.json").write_text("{broken")
    with pytest.raises(ReportError, match="no finished stage"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_cli_report(full_run, tmp_path):
    r = run_cli("report", full_run)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(full_run / "report.html") and (full_run / "report.html").exists()
    for bad in (tmp_path / "missing", full_run / "00_ingest"):  # no folder; no stage manifests in it
        r = run_cli("report", bad)
        assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("report", "--help")
    assert r.returncode == 0 and "Examples" in r.stdout and "siftmix report" in r.stdout


def test_tables_sort_numbers_in_chromium(full_run, tmp_path):
    """A click on a header sorts the rows; numbers with thousands separators sort as numbers."""
    browser.chromium()
    page = Path(build_report(full_run))
    click = ('const t=document.getElementById("stages");t.tHead.rows[0].cells[1].click();'  # not sortable
             'const s=[...document.getElementById("00_ingest").querySelectorAll("table.sortable")].pop();'
             's.tHead.rows[0].cells[1].click();s.tHead.rows[0].cells[1].click();'  # "in", descending
             'document.body.dataset.order=[...s.tBodies[0].rows].map(r=>r.cells[1].textContent).join("|");'
             'document.body.dataset.stages=[...t.tBodies[0].rows].map(r=>r.cells[0].textContent).join("|")')
    dom, console = browser.load(page, tmp_path / "chrome", then=click)
    assert console == []
    assert 'data-order="1,000|50"' in dom and 'data-stages="ingest|quality|dedup|decontam|mix"' in dom


@pytest.mark.integration
def test_demo_run_report_in_headless_chromium(ray_local, demo_corpus, tmp_path):
    browser.chromium()
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "seed": 11, "sources": demo_sources(demo_corpus),
                            "ingest": {"min_chars": 200}, "decontam": {"benchmarks": [str(demo_corpus / "benchmarks")]},
                            "mix": {"shard_tokens": 40_000, "partition_bytes": 300_000}})
    run_pipeline(cfg, log=lambda *_: None)
    page = Path(build_report(cfg.run_dir))
    assert browser.outside_resources(page.read_text()) == []
    dom, console = browser.load(page, tmp_path / "chrome")
    assert console == []
    n = numbers(dom)
    ms = {f: json.loads((page.parent / f / "_manifest.json").read_text())
          for f, _ in stage_folders() if (page.parent / f / "_manifest.json").exists()}
    assert {"00_ingest", "10_quality", "30_decontam", "40_mix"} <= set(ms)
    for m in ms.values():
        if m["stage"] != "mix":
            assert n[f"{m['stage']}.in"] == f"{m['counts']['in']:,}" and n[f"{m['stage']}.kept"] == f"{m['counts']['kept']:,}"
    for b in ms["30_decontam"]["benchmarks"]:
        assert n[f"decontam.dirty.{b['name']}"] == str(b["dirty"])
    assert sum(b["dirty"] for b in ms["30_decontam"]["benchmarks"]) > 0  # the demo plants contamination
    if "20_dedup" in ms:
        assert n["dedup.n_clusters"] == f"{ms['20_dedup']['clusters']['n_clusters']:,}"
    printed = {line.split()[0]: line.split() for line in ms["40_mix"]["table_2_2"].splitlines()[2:]}
    for s in ms["40_mix"]["counts"]["by_source"]:  # as the run printed its Table 2.2
        _, available, target, share, epochs, tokens = printed[s]
        assert (n[f"mix.available.{s}"], n[f"mix.target.{s}"], n[f"mix.share.{s}"], n[f"mix.epochs.{s}"],
                n[f"mix.tokens.{s}"]) == (available, target, share, epochs, tokens)
    assert dom.count("<svg") >= 3 and "quality-hist-common_crawl" in dom
    browser.screenshot(page, "report.png", tmp_path / "chrome", size="1200,4200")
