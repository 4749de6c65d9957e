"""Unit tests of the pure ingest functions (no Ray)."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from badinput import EXPECTED_REJECTS, expected_kept, make_bad_inputs
from siftmix.pipeline.core.schema import DOC_SCHEMA, REJECTED_SCHEMA
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.ingest.config import IngestConfig, SourceConfig
from siftmix.pipeline.ingest.normalize import IngestTask, normalize_batch, raw_table
from siftmix.pipeline.ingest.readers import (
    Raw,
    derived_id,
    detect_format,
    read_jsonl,
    read_parquet,
    read_txt,
    read_wet,
    source_files,
)
from siftmix.pipeline.ingest.stage import ingest_file

SRC = SourceConfig.model_construct(name="web", paths=[], format="auto", filter=False, text_field="text", id_field="id", url_field="url")


def test_normalize_batch_nfc_newlines_trim_and_reasons():
    cfg = IngestConfig(min_chars=5, max_chars=30)
    recs = [
        Raw("a", "  Cafe\u0301\r\nline two\rthree  ", "http://x", {"k": 1}, None),  # NFD e + accent -> é
        Raw("b", "tiny", None, {}, None),
        Raw("c", "x" * 31, None, {}, None),
        Raw("d", None, None, {}, "bad_json"),
        Raw("e", "long enough text", None, {}, "missing_field:text"),
    ]
    kept, rej = normalize_batch(raw_table(recs, "web"), cfg)
    assert kept.schema == DOC_SCHEMA and rej.schema == REJECTED_SCHEMA
    assert kept["text"].to_pylist() == ["Caf\u00e9\nline two\nthree"]
    assert kept["url"].to_pylist() == ["http://x"] and json.loads(kept["meta"][0].as_py()) == {"k": 1}
    assert dict(zip(rej["id"].to_pylist(), rej["reason"].to_pylist())) == {
        "b": "too_short", "c": "too_long", "d": "bad_json", "e": "missing_field:text"}
    assert kept.num_rows + rej.num_rows == len(recs)


def test_nfc_only_touches_rows_that_need_it():
    from siftmix.pipeline.ingest.normalize import normalize_text

    texts = ["plain ascii\r\nline", "d\u00e9j\u00e0 NFC", "de\u0301ja\u0300 NFD", None, "\u201cquoted\u201d\rx"]
    out = normalize_text(pa.array(texts, pa.large_string())).to_pylist()
    assert out == ["plain ascii\nline", "d\u00e9j\u00e0 NFC", "d\u00e9j\u00e0 NFD", None, "\u201cquoted\u201d\nx"]


def test_keep_rejected_text_off():
    kept, rej = normalize_batch(raw_table([Raw("b", "tiny", None, {}, None)], "web"), IngestConfig(keep_rejected_text=False))
    assert rej["text"].to_pylist() == [None] and rej["reason"].to_pylist() == ["too_short"]


def test_detect_format():
    assert detect_format("x/CC-MAIN-1.warc.wet.gz") == "wet"
    assert detect_format("a.warc.gz") == "warc"
    assert detect_format("a.jsonl.zst") == "jsonl" and detect_format("a.json.gz") == "jsonl"
    assert detect_format("a.parquet") == "parquet" and detect_format("book.txt") == "txt"
    assert detect_format("README.md") is None


def test_jsonl_compressions_and_derived_ids(tmp_path):
    lines = "".join(json.dumps({"text": f"doc {i}", "lang": "en", "big": "x" * 1000}) + "\n" for i in range(3))
    (tmp_path / "a.jsonl").write_text(lines)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst"):
        recs = list(read_jsonl(str(tmp_path / name), name, SRC))
        assert [r.text for r in recs] == ["doc 0", "doc 1", "doc 2"]
        assert [r.id for r in recs] == [derived_id("web", name, i) for i in (1, 2, 3)]
        assert recs[0].meta == {"file": name, "line": 1, "lang": "en"}  # big fields stay out of meta


def test_txt_is_one_document(tmp_path):
    (tmp_path / "book.txt").write_bytes(b"Chapter 1\r\nIt was a dark night.\n")
    (r,) = read_txt(str(tmp_path / "book.txt"), "book.txt", SRC)
    assert r.text.startswith("Chapter 1") and r.meta["title"] == "book" and r.error is None


def test_parquet_reader(tmp_path):
    pq.write_table(pa.table({"id": ["p1", "p2", "p1"], "text": ["one", None, "three"]}), tmp_path / "x.parquet")
    recs = list(read_parquet(str(tmp_path / "x.parquet"), "x.parquet", SRC))
    assert [r.error for r in recs] == [None, "missing_field:text", "duplicate_id"]


def test_bad_input_folder_pure(tmp_path):
    folder = make_bad_inputs(tmp_path / "bad", big_mb=12)
    src = SourceConfig.model_construct(**{**SRC.__dict__, "paths": [str(folder)]})
    out = tmp_path / "out"
    reasons, kept, n_in = {}, 0, 0
    for i, (path, rel, fmt) in enumerate(source_files(src)):
        st = ingest_file(IngestTask(path, rel, fmt, "web", i), src, IngestConfig(), str(out))
        assert st.docs_in == st.kept + sum(st.rejected.values())
        n_in += st.docs_in
        kept += st.kept
        for k, v in st.rejected.items():
            reasons[k] = reasons.get(k, 0) + v
    assert reasons == EXPECTED_REJECTS
    assert kept == expected_kept(folder)
    docs, rej = read_shards(str(out / "data")), read_shards(str(out / "rejected"))
    assert docs.num_rows == kept and rej.num_rows == sum(EXPECTED_REJECTS.values())
    assert len(set(docs["id"].to_pylist()) | set(rej["id"].to_pylist())) == n_in  # every row has its own id
    metas = {i: json.loads(m) for i, m in zip(docs["id"].to_pylist(), docs["meta"].to_pylist())}
    assert metas["u1"]["repaired_encoding"] is True and metas["s0"]["repaired_encoding"] is True
    trunc = json.loads(rej.filter(pa.compute.equal(rej["reason"], "truncated_file"))["meta"][0].as_py())
    assert trunc["file"] == "truncated.jsonl.gz" and "ends at byte" in trunc["error"] and trunc["offset"] > 0


def test_bad_encoding_reject_mode(tmp_path):
    folder = make_bad_inputs(tmp_path / "bad", big_mb=1)
    src = SourceConfig.model_construct(**{**SRC.__dict__, "paths": [str(folder)]})
    files = {rel: (p, fmt) for p, rel, fmt in source_files(src)}
    cfg = IngestConfig(on_bad_encoding="reject")
    for i, name in enumerate(["bad_utf8.jsonl", "surrogate.jsonl"]):
        st = ingest_file(IngestTask(files[name][0], name, "jsonl", "web", i), src, cfg, str(tmp_path / "o"))
        assert st.rejected == {"bad_encoding": 1}


def test_wet_reader_on_generated_wet(tmp_path):
    from siftmix.pipeline.demo import write_wet

    docs = [{"uuid": f"00000000-0000-4000-8000-00000000000{i}", "url": f"http://e.com/{i}", "date": "2024-05-20T00:00:00Z",
             "text": f"Page {i} caf\u00e9 text"} for i in range(3)]
    write_wet(str(tmp_path / "x.warc.wet.gz"), docs)
    recs = list(read_wet(str(tmp_path / "x.warc.wet.gz"), "x.warc.wet.gz", SRC))
    assert [r.text for r in recs] == [d["text"] for d in docs]
    assert [r.id for r in recs] == [f"urn:uuid:{d['uuid']}" for d in docs]
    assert recs[0].url == "http://e.com/0" and recs[0].meta["warc_date"] == "2024-05-20T00:00:00Z"
    # truncated: the records before the cut survive, the cut is one rejected record
    blob = (tmp_path / "x.warc.wet.gz").read_bytes()
    for cut in (10, 60, len(blob) // 2):
        (tmp_path / "t.warc.wet.gz").write_bytes(blob[: len(blob) - cut])
        recs = list(read_wet(str(tmp_path / "t.warc.wet.gz"), "t.warc.wet.gz", SRC))
        good = [r for r in recs if r.error is None]
        assert recs[-1].error == "truncated_file" and len(recs) == len(good) + 1, recs
        assert [r.text for r in good] == [d["text"] for d in docs[: len(good)]]
        assert "inside a gzip member" in recs[-1].meta["error"]
    # the whole file as a single gzip member (not one member per record), cut at the end
    single = gzip.compress(gzip.decompress(blob), mtime=0)
    (tmp_path / "s.warc.wet.gz").write_bytes(single)
    assert [r.error for r in read_wet(str(tmp_path / "s.warc.wet.gz"), "s", SRC)] == [None, None, None]
    (tmp_path / "s.warc.wet.gz").write_bytes(single[:-6])
    assert [r.error for r in read_wet(str(tmp_path / "s.warc.wet.gz"), "s", SRC)] == [None, None, None, "truncated_file"]


def test_real_warc_truncated(shared_data, tmp_path):
    from siftmix.pipeline.ingest.readers import read_warc

    blob = (shared_data / "cc" / "raw" / "resiliparse_tests_warcfile.CC-MAIN-2020-34.warc.gz").read_bytes()
    (tmp_path / "w.warc.gz").write_bytes(blob)
    full = list(read_warc(str(tmp_path / "w.warc.gz"), "w", SRC))
    assert all(r.error != "truncated_file" for r in full) and len(full) == 16
    (tmp_path / "w.warc.gz").write_bytes(blob[: len(blob) // 2])
    cut = list(read_warc(str(tmp_path / "w.warc.gz"), "w", SRC))
    assert cut[-1].error == "truncated_file" and 1 < len(cut) < len(full) + 1


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
def test_html_to_text(extractor):
    from siftmix.pipeline.ingest.readers import html_to_text

    html = ("<html><head><title>T</title><script>var x=1;</script></head><body><nav>Home | About</nav>"
            "<article><h1>Title</h1>" + "<p>The quiet river crossed the ancient valley near the old mill.</p>" * 8
            + "</article><footer>Copyright</footer></body></html>").encode("latin-1")
    text = html_to_text(html, extractor)
    assert "The quiet river crossed" in text and "var x" not in text
