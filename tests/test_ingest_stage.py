"""The ingest stage through a real local Ray: real crawl files, broken inputs, determinism."""

import gzip
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from badinput import EXPECTED_REJECTS, expected_kept, make_bad_inputs
from conftest import committed, demo_sources, parquet_bytes, run_cli
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _cfg(tmp_path, sources, **ingest):
    return config_from_dict({"run_dir": str(tmp_path / "run"), "stages": ["ingest"], "sources": sources, "ingest": ingest},
                            base_dir=tmp_path)


def _quiet(*a, **k):
    pass


def test_real_common_crawl_files(ray_local, shared_data, tmp_path):
    """Real CC-MAIN-2020-34 WARC and CC-MAIN-2024-22 WARC/WET: counts equal an independent reader's."""
    from warcio.archiveiterator import ArchiveIterator

    raw = shared_data / "cc" / "raw"
    warcs = [raw / "resiliparse_tests_warcfile.CC-MAIN-2020-34.warc.gz", raw / "whirlwind.CC-MAIN-2024-22.warc.gz"]
    wet = raw / "whirlwind.CC-MAIN-2024-22.warc.wet.gz"

    def count(path, rtype):
        with open(path, "rb") as fh:
            return sum(1 for r in ArchiveIterator(fh) if r.rec_type == rtype)

    n_resp = sum(count(p, "response") for p in warcs)
    n_conv = count(wet, "conversion")
    assert n_resp > 10 and n_conv == 1
    cfg = _cfg(tmp_path, [{"name": "cc_warc", "paths": [str(p) for p in warcs], "format": "warc"},
                          {"name": "cc_wet", "paths": [str(wet)], "format": "wet"}], min_chars=1)
    runs = []
    for _attempt in range(2):
        m = run_stage("ingest", cfg, force=True, log=_quiet)
        c = m["counts"]
        assert c["by_source"]["cc_warc"]["in"] == n_resp
        assert c["by_source"]["cc_wet"]["in"] == n_conv
        assert c["in"] == c["kept"] + c["rejected"]
        docs = read_shards(str(committed(Path(cfg.run_dir) / "00_ingest") / "data"))
        rej = read_shards(str(committed(Path(cfg.run_dir) / "00_ingest") / "rejected"))
        ids = docs["id"].to_pylist() + (rej["id"].to_pylist() if rej is not None else [])
        assert len(ids) == len(set(ids)) == n_resp + n_conv
        assert all(i.startswith("urn:uuid:") for i in ids)  # WARC-Record-IDs
        assert pc.min(pc.utf8_length(docs["text"])).as_py() > 0
        assert docs.num_rows >= 10  # the pages with HTML text
        runs.append(ids)
    assert runs[0] == runs[1]  # stable across runs
    wet_doc = docs.filter(pc.equal(docs["source"], "cc_wet"))
    assert "Escopete" in wet_doc["text"][0].as_py()
    assert json.loads(wet_doc["meta"][0].as_py())["warc_date"].startswith("2024")


def test_real_jsonl_reference_files(ray_local, shared_data, tmp_path):
    files = [shared_data / "reference" / "news_lee_abc.jsonl.gz", shared_data / "reference" / "wikipedia_enwiki_dump_excerpt.jsonl.gz"]
    lines = sum(sum(1 for _ in gzip.open(f)) for f in files)
    cfg = _cfg(tmp_path, [{"name": "ref", "paths": [str(f) for f in files]}], min_chars=1)
    c = run_stage("ingest", cfg, log=_quiet)["counts"]
    assert c["in"] == lines and c["kept"] == lines and c["rejected"] == 0


def test_bad_input_folder_through_ray(ray_local, tmp_path):
    folder = make_bad_inputs(tmp_path / "bad")
    cfg = _cfg(tmp_path, [{"name": "web", "paths": [str(folder)]}])
    m = run_stage("ingest", cfg, log=_quiet)
    c = m["counts"]
    assert c["rejected_by_reason"] == EXPECTED_REJECTS
    assert c["kept"] == expected_kept(folder)
    assert c["in"] == c["kept"] + c["rejected"]
    stage = committed(Path(cfg.run_dir) / "00_ingest")
    assert read_shards(str(stage / "data")).num_rows == c["kept"]
    assert read_shards(str(stage / "rejected")).num_rows == c["rejected"]
    big = read_shards(str(stage / "rejected")).filter(pc.equal(pc.field("reason"), "too_long"))
    assert big["id"].to_pylist() == ["big"] and len(big["text"][0].as_py()) > 50_000_000 - 10
    files = {f["file"]: f for f in m["files"]}
    assert files["empty.jsonl"]["docs_in"] == 0


def test_unreadable_file_stops_with_one_line(ray_local, tmp_path):
    import pyarrow as pa

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "in" / "no_text.parquet")
    cfg = _cfg(tmp_path, [{"name": "p", "paths": [str(tmp_path / "in")]}])
    with pytest.raises(StageError) as e:
        run_stage("ingest", cfg, log=_quiet)
    assert "no_text.parquet" in str(e.value) and "no column 'text'" in str(e.value) and "\n" not in str(e.value)
    assert not (Path(cfg.run_dir) / "00_ingest").exists()  # nothing that looks finished


def test_deterministic_with_1_and_2_workers(ray_local, demo_corpus, tmp_path):
    outs = []
    for workers in (1, 2, 2):
        cfg = config_from_dict(
            {"run_dir": str(tmp_path / f"run{len(outs)}"), "stages": ["ingest"], "sources": demo_sources(demo_corpus),
             "ingest": {"batch_rows": 64, "shard_max_bytes": 300_000}})
        m = run_stage("ingest", cfg, workers=workers, log=_quiet)
        assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
        outs.append(parquet_bytes(Path(cfg.run_dir) / "00_ingest"))
    assert len(outs[0]) > 10  # several shards, several row groups
    assert outs[0] == outs[1] == outs[2]


def test_cli_ingest_direct_mode(tmp_path):
    """`siftmix ingest -i ... -o ...` in a fresh process with its own local Ray."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps({"text": "word " * 50}) + "\n" for _ in range(5)) + "{broken\n")
    r = run_cli("ingest", "-i", tmp_path / "in", "--source", "web", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "out")
    m = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert m["counts"]["kept"] == 5 and m["counts"]["rejected_by_reason"] == {"bad_json": 1}
    assert "5 documents kept, 1 rejected" in r.stderr
