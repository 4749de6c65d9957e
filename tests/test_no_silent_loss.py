"""Each hole of the "no silent loss" issue, reproduced as it was found: every input record ends
kept or rejected, and damage is named by one rejected row (or one error line)."""

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import zstandard
from conftest import SIFTMIX, committed
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import ConfigError
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.ingest.config import IngestConfig, SourceConfig
from siftmix.pipeline.ingest.normalize import IngestTask
from siftmix.pipeline.ingest.readers import expand_paths, read_jsonl, read_txt, read_warc, read_wet
from siftmix.pipeline.ingest.stage import ingest_file

PROSE = "The river crossed the valley near the old mill and the village grew around it. " * 3
SRC = SourceConfig.model_construct(name="web", paths=["x"], format="auto", text_field="text", id_field="id",
                                   url_field="url", filter=False)


def _jsonl(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps({"id": f"d{i}", "text": f"{PROSE} {i}"}).encode() + b"\n" for i in range(start, start + n))


def _ingest(path: Path, tmp_path: Path, cfg: IngestConfig | None = None, fmt: str = "jsonl"):
    """(result, kept table, rejected table) of one file through the ingest worker (no Ray)."""
    out = tmp_path / f"out-{path.name}"
    r = ingest_file(IngestTask(str(path), path.name, fmt, "web", 0), SRC, cfg or IngestConfig(), str(out))
    assert r.docs_in == r.kept + sum(r.rejected.values())
    return r, read_shards(str(out / "data")), read_shards(str(out / "rejected"))


def _reasons(rej) -> list[str]:
    return [] if rej is None else rej["reason"].to_pylist()


def _meta(rej, reason: str) -> dict:
    return json.loads(rej.filter(pc.equal(rej["reason"], reason))["meta"][0].as_py())


# 1. a truncated .jsonl.zst ------------------------------------------------------------------

@pytest.mark.parametrize("n,keep", [(50, 2 / 3), (1000, 0.6)])
def test_truncated_zstd_keeps_complete_lines_and_names_the_cut(tmp_path, n, keep):
    blob = zstandard.ZstdCompressor().compress(_jsonl(n))
    p = tmp_path / "cut.jsonl.zst"
    p.write_bytes(blob[: int(len(blob) * keep)])
    # the oracle: what a zstd decoder gives from the bytes that are there, complete lines only
    readable = zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
    complete = readable.count(b"\n")
    r, docs, rej = _ingest(p, tmp_path)
    assert r.kept == complete and (docs is None or docs["id"].to_pylist() == [f"d{i}" for i in range(complete)])
    assert _reasons(rej) == ["truncated_file"], "the cut is one rejected row, the partial line no bad_json"
    m = _meta(rej, "truncated_file")
    assert m["after"] == f"line {complete}" and m["offset"] == p.stat().st_size and "zstd frame" in m["error"]


def test_zero_byte_compressed_files_are_rejected_rows(tmp_path):
    for name in ("empty.jsonl.gz", "empty.jsonl.zst", "empty.txt.gz"):
        (tmp_path / name).write_bytes(b"")
        r, docs, rej = _ingest(tmp_path / name, tmp_path, fmt="txt" if ".txt" in name else "jsonl")
        assert docs is None and _reasons(rej) == ["truncated_file"] and "empty" in _meta(rej, "truncated_file")["error"]
    (tmp_path / "empty.jsonl").write_bytes(b"")  # an empty plain file is a valid file with no records
    r, docs, rej = _ingest(tmp_path / "empty.jsonl", tmp_path)
    assert r.docs_in == 0 and rej is None


def test_corrupt_gzip_member_keeps_every_line_before_it(tmp_path):
    members = [gzip.compress(_jsonl(10, 10 * k), mtime=0) for k in range(4)]
    bad = bytearray(members[2])
    bad[12] ^= 0xFF  # inside the deflate data of the third member
    p = tmp_path / "bad.jsonl.gz"
    p.write_bytes(members[0] + members[1] + bytes(bad) + members[3])
    r, docs, rej = _ingest(p, tmp_path)
    ids = docs["id"].to_pylist()
    assert ids[:20] == [f"d{i}" for i in range(20)], "the two good members before the damage are kept"
    m = _meta(rej, "corrupt_file")
    assert m["offset"] >= len(members[0]) + len(members[1]) and m["after"] == f"line {len(ids)}"


# 2. ** globs and symlink loops --------------------------------------------------------------

def test_glob_over_symlink_loops_ends_and_reads_each_file_once(tmp_path):
    d = tmp_path / "thatfolder"
    (d / "sub").mkdir(parents=True)
    (d / "a.jsonl").write_bytes(_jsonl(2))
    (d / "sub" / "b.jsonl").write_bytes(_jsonl(2, 2))
    os.symlink(".", d / "self")
    os.symlink("../thatfolder", d / "up")
    os.symlink("../../thatfolder", d / "sub" / "back")
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("glob hangs")))
    signal.alarm(20)
    try:
        found = expand_paths([str(d / "**" / "*.jsonl"), str(d)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert found == [str(d / "a.jsonl"), str(d / "sub" / "b.jsonl")]
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "stages": ["ingest"],
                            "sources": [{"name": "web", "paths": [str(d / "**" / "*.jsonl")]}]})
    assert cfg.sources[0].paths


# 3. mix weights checked at validate ---------------------------------------------------------

@pytest.mark.parametrize("weights,says", [({"web": float("nan")}, "nan"), ({"web": 0.9}, "sum to 1"),
                                          ({"web": 1.5, "b": -0.5}, "negative"), ({"web": float("inf")}, "inf")])
def test_bad_mix_weights_fail_validation(tmp_path, weights, says):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_bytes(_jsonl(1))
    sources = [{"name": n, "paths": [str(tmp_path / "d")]} for n in weights]
    with pytest.raises(ConfigError, match="mix.weights") as e:
        config_from_dict({"run_dir": str(tmp_path / "run"), "sources": sources, "mix": {"weights": weights}})
    assert says in str(e.value)


def test_validate_exits_2_on_nan_weight_and_on_inputs_of_no_known_format(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.md").write_text("not an input")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\nsources:\n  - {{name: web, paths: {tmp_path / 'notes'}}}\n")
    r = subprocess.run([*SIFTMIX, "validate", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no input file of a known format" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "notes" / "a.jsonl").write_bytes(_jsonl(1))
    cfg.write_text(cfg.read_text() + "mix:\n  weights: {web: .nan}\n")
    r = subprocess.run([*SIFTMIX, "validate", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "mix.weights" in r.stderr and str(cfg) in r.stderr


# 4. the run-dir lock ------------------------------------------------------------------------

_HOLD = """
import sys, time
from siftmix.pipeline.core import storage
with storage.run_lock(sys.argv[1], "siftmix run"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_run_dir_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(storage.RunDirLocked) as e:
            with storage.run_lock(str(run)):
                pass
        assert f"pid {holder.pid}" in str(e.value) and "siftmix run" in str(e.value)
        # siftmix run on the locked run dir: one line, before any work
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "a.jsonl").write_bytes(_jsonl(2))
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"run_dir: {run}\nstages: [ingest]\nsources:\n  - {{name: web, paths: {tmp_path / 'd'}}}\n")
        r = subprocess.run([*SIFTMIX, "run", str(cfg)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and f"pid {holder.pid}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "\x1b" not in r.stderr
    finally:
        holder.kill()  # kill -9: the holder dies with the lock held
        holder.wait()
    logs = []
    with storage.run_lock(str(run), "test", logs.append):
        with storage.run_lock(str(run)):  # re-entrant in one process
            assert storage.holds_lock(str(run))
        with storage.stage_output(str(run / "00_x")) as out:
            out.abort()
    assert logs and f"pid {holder.pid}" in logs[0] and "no longer running" in logs[0]
    with pytest.raises(RuntimeError, match="outside run_lock"):
        with storage.stage_output(str(run / "00_x")):
            pass


# 5. WARC Content-Length ---------------------------------------------------------------------

def _response(i: int, cl_extra: int = 0) -> bytes:
    http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>"
            + f"{PROSE} page {i}".encode() + b"</p></body></html>")
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{i:08d}>\r\n"
            f"WARC-Target-URI: http://x/{i}\r\nContent-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http) + cl_extra}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def test_warc_record_shorter_than_its_content_length_is_truncated_file(tmp_path):
    p = tmp_path / "lying.warc"
    p.write_bytes(b"".join(_response(i) for i in range(3)) + _response(3, cl_extra=500))
    recs = list(read_warc(str(p), p.name, SRC))
    assert [r.error for r in recs] == [None, None, None, "truncated_file"] and "500" not in recs[3].meta["error"]
    assert "of" in recs[3].meta["error"]
    p.write_bytes(b"".join(_response(i) for i in range(4))[:-60])  # a plain .warc cut in its last record
    recs = list(read_warc(str(p), p.name, SRC))
    assert [r.error for r in recs] == [None, None, None, "truncated_file"] and recs[3].text is None


def test_one_bad_gzip_member_in_a_warc_keeps_the_records_before_it(tmp_path):
    members = [gzip.compress(_response(i), mtime=0) for i in range(8)]
    bad = bytearray(members[5])
    bad[25] ^= 0xFF
    p = tmp_path / "bad.warc.gz"
    p.write_bytes(b"".join(members[:5]) + bytes(bad) + b"".join(members[5 + 1:]))
    r, docs, rej = _ingest(p, tmp_path, fmt="warc")
    assert docs.num_rows == 5 and _reasons(rej) == ["corrupt_file"]
    m = _meta(rej, "corrupt_file")
    assert m["after"] == "record 5" and m["offset"] >= sum(map(len, members[:5]))


def test_wet_content_length_running_into_the_next_record_is_named(tmp_path):
    def rec(i, extra=0):
        body = f"{PROSE} {i}".encode()
        return (f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Record-ID: <urn:uuid:{i:08d}>\r\n"
                f"Content-Length: {len(body) + extra}\r\n\r\n").encode() + body + b"\r\n\r\n"
    p = tmp_path / "x.wet"
    p.write_bytes(rec(0) + rec(1, extra=40) + rec(2) + rec(3))
    recs = list(read_wet(str(p), p.name, SRC))
    assert recs[0].error is None and recs[1].error == "corrupt_file" and "next record" in recs[1].meta["error"]


# 7. byte-order marks ------------------------------------------------------------------------

def test_utf8_bom_is_stripped_and_utf16_32_files_are_decoded(tmp_path):
    text = _jsonl(3).decode()
    cases = {"bom8.jsonl": b"\xef\xbb\xbf" + text.encode(), "u16le.jsonl": text.encode("utf-16"),
             "u16be.jsonl": b"\xfe\xff" + text.encode("utf-16-be"), "u32.jsonl": text.encode("utf-32")}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        recs = list(read_jsonl(str(tmp_path / name), name, SRC))
        assert [r.error for r in recs] == [None] * 3 and [r.id for r in recs] == ["d0", "d1", "d2"], name
        assert recs[0].text == f"{PROSE} 0"
    assert next(read_jsonl(str(tmp_path / "u16le.jsonl"), "u", SRC)).meta["encoding"] == "utf-16-le"
    (tmp_path / "book.txt").write_bytes(("\ufeff" + PROSE).encode("utf-16-le"))
    (rec,) = read_txt(str(tmp_path / "book.txt"), "book.txt", SRC)
    assert rec.text == PROSE and rec.error is None


# 8. ids unique per source across files ------------------------------------------------------

@pytest.mark.integration
def test_the_same_id_in_two_files_of_a_source_is_rejected_in_the_later_file(ray_local, tmp_path):
    from siftmix.pipeline.runner import run_stage

    d = tmp_path / "d"
    d.mkdir()
    (d / "a.jsonl").write_bytes(_jsonl(4))
    (d / "b.jsonl").write_bytes(_jsonl(2, 3))  # d3 is in both files, d4 is new
    other = tmp_path / "o"
    other.mkdir()
    (other / "c.jsonl").write_bytes(_jsonl(2))  # the same ids in another source are fine
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "stages": ["ingest"],
                            "sources": [{"name": "web", "paths": [str(d)]}, {"name": "books", "paths": [str(other)]}]})
    m = run_stage("ingest", cfg, log=lambda *_: None)
    docs = read_shards(str(committed(tmp_path / "run" / "00_ingest") / "data"))
    web = docs.filter(pc.equal(docs["source"], "web"))
    assert sorted(web["id"].to_pylist()) == ["d0", "d1", "d2", "d3", "d4"]
    rej = read_shards(str(committed(tmp_path / "run" / "00_ingest") / "rejected"))
    (row,) = rej.to_pylist()
    assert row["id"] == "d3" and row["reason"] == "duplicate_id" and "a.jsonl" in json.loads(row["meta"])["error"]
    assert json.loads(row["meta"])["file"] == "b.jsonl"
    c = m["counts"]["by_source"]["web"]
    assert (c["in"], c["kept"], c["rejected"]) == (6, 5, 1)
    files = {f["file"]: f for f in m["files"]}
    assert files["b.jsonl"]["kept"] == 1 and files["b.jsonl"]["rejected"] == {"duplicate_id": 1}


# 9. source names ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "", "-x"])
def test_unsafe_source_names_are_config_errors(tmp_path, name):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(1))
    with pytest.raises(ConfigError, match="name"):
        config_from_dict({"run_dir": str(tmp_path / "run"), "sources": [{"name": name, "paths": [str(tmp_path)]}]})


# 12, 13. control characters, null text ------------------------------------------------------

def test_control_characters_policy(tmp_path):
    p = tmp_path / "ctl.jsonl"
    p.write_text(json.dumps({"id": "c", "text": PROSE + "a\x00b\x1bc\x07d\x0be\x0cf\tg\nh"}) + "\n"
                 + json.dumps({"id": "ok", "text": PROSE}) + "\n")
    _, docs, _ = _ingest(p, tmp_path)  # default: strip
    assert docs["text"][0].as_py().endswith("abcdef\tg\nh")
    _, docs, _ = _ingest(p, tmp_path, IngestConfig(control_chars="keep"))
    assert "\x00" in docs["text"][0].as_py()
    _, docs, rej = _ingest(p, tmp_path, IngestConfig(control_chars="reject"))
    assert docs["id"].to_pylist() == ["ok"] and _reasons(rej) == ["control_chars"]


def test_null_text_is_called_null_and_missing_text_missing(tmp_path):
    p = tmp_path / "n.jsonl"
    p.write_text('{"id": "a", "text": null}\n{"id": "b"}\n')
    recs = list(read_jsonl(str(p), p.name, SRC))
    assert [r.error for r in recs] == ["missing_field:text"] * 2
    assert recs[0].meta["error"] == "field 'text' is null" and recs[1].meta["error"] == "field 'text' is missing"


def test_a_read_failure_names_the_records_read_whole_not_the_batches(tmp_path, monkeypatch):
    """An I/O error of the disk mid-file stops the stage: the line counts records (the issue:
    "after record 0" counted finished batches)."""
    import errno

    from siftmix.pipeline.core.errors import InputError
    from siftmix.pipeline.ingest import readers

    def failing(path, rel, src, **kw):
        for r in read_jsonl(path, rel, src, **kw):
            yield r
            if r.id == "d4":
                raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setitem(readers.READERS, "jsonl", failing)
    p = tmp_path / "a.jsonl"
    p.write_bytes(_jsonl(10))
    with pytest.raises(InputError) as e:
        _ingest(p, tmp_path)
    assert str(e.value) == f"{p}: after record 5: Input/output error"


def test_a_damaged_benchmark_file_is_one_line(tmp_path):
    from siftmix.contamination.benchmarks import BenchmarkError, load_benchmark

    blob = gzip.compress(b'{"text": "a question"}\n' * 50, mtime=0)
    p = tmp_path / "bench.jsonl.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BenchmarkError, match="bench.jsonl.gz: the file ends at byte"):
        load_benchmark(str(p))
