"""The command line: help with examples, exit codes, demo data, the whole demo run."""

import json
from pathlib import Path

import pytest
from conftest import run_cli
from siftmix.pipeline.demo import generate, parse_size


@pytest.mark.parametrize("cmd", ["run", "ingest", "demo-data", "validate"])
def test_help_with_examples(cmd):
    r = run_cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout
    if cmd != "validate":
        assert "Examples" in r.stdout and "siftmix " + cmd.split()[0] in r.stdout


def test_top_level_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("run", "ingest", "demo-data", "validate"):
        assert cmd in r.stdout


def test_usage_errors_exit_2(tmp_path):
    assert run_cli("run").returncode == 2  # missing CONFIG
    assert run_cli("run", "x.yaml", "--no-such-option").returncode == 2
    r = run_cli("demo-data", tmp_path / "d", "--size", "lots")
    assert r.returncode == 2 and "cannot read 'lots'" in r.stderr
    r = run_cli("ingest")
    assert r.returncode == 2 and "either a CONFIG file or --input" in r.stderr


def test_parse_size():
    assert parse_size("10MB") == 10_000_000 and parse_size("1GB") == 10**9 and parse_size("512KiB") == 512 * 1024
    with pytest.raises(ValueError):
        parse_size("10 parsecs")


def test_demo_corpus_is_deterministic_and_complete(tmp_path):
    a = generate(str(tmp_path / "a"), 1_000_000, seed=3)
    b = generate(str(tmp_path / "b"), 1_000_000, seed=3)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for f in files_a:
        if f.name != "demo.yaml":
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    kinds = {Path(f).parts[0] for f in files_a}
    assert kinds >= {"cc", "webtext2", "books1", "books2", "wikipedia", "benchmarks"}
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert truth["near_duplicates"] and truth["exact_duplicates"] and truth["contamination"] and truth["webtext_in_cc"]
    assert set(truth["cc_kinds"].values()) >= {"prose", "spam", "boilerplate", "junk"}
    assert a["truth"] == b["truth"]


@pytest.mark.integration
def test_demo_data_and_run_end_to_end(tmp_path):
    r = run_cli("demo-data", tmp_path / "corpus", "--size", "2MB")
    assert r.returncode == 0, r.stderr
    r = run_cli("run", tmp_path / "corpus" / "demo.yaml")
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    m = json.loads((run_dir / "00_ingest" / "_manifest.json").read_text())
    assert set(m["counts"]["by_source"]) == {"common_crawl", "webtext2", "books1", "books2", "wikipedia"}
    assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
    truth = json.loads((tmp_path / "corpus" / "truth.json").read_text())
    assert m["counts"]["by_source"]["common_crawl"]["in"] == len(truth["cc_kinds"])
    assert "ingest:" in r.stderr
