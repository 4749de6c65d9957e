"""A corruption fuzzer for ingest: valid WET, WARC, JSONL (plain, .gz, .zst), Parquet and txt
inputs, damaged (truncation, bit flips, inserted garbage, duplicated or dropped gzip/zstd
members, lying Content-Lengths, byte-order marks), then read by the ingest worker.

Every case must either complete with in = kept + rejected, every record that lies whole before
the damage kept (with its text), and any record that went missing accounted for by a rejected
row that names the damage; or stop with one error line naming the file. A silent drop, a hang
or a traceback fails the case.

CI runs a fixed seed (``SIFTMIX_FUZZ_EXAMPLES``, default 300 cases). ``make fuzz`` runs a long
randomized search (``SIFTMIX_FUZZ_SEED``) and prints the seed of a failure.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from siftmix.pipeline.core.errors import SiftmixError
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.ingest.config import IngestConfig, SourceConfig
from siftmix.pipeline.ingest.normalize import IngestTask
from siftmix.pipeline.ingest.stage import ingest_file

EXAMPLES = int(os.environ.get("SIFTMIX_FUZZ_EXAMPLES", "300"))
SEED = int(os.environ.get("SIFTMIX_FUZZ_SEED", "20261202"))
#: reasons that name damage to the file (as opposed to a judgement about a good record)
DAMAGE = {"truncated_file", "corrupt_file", "bad_json", "duplicate_id", "missing_field:text", "bad_encoding"}
SRC = SourceConfig.model_construct(name="web", paths=["x"], format="auto", text_field="text", id_field="id",
                                   url_field="url", filter=False)
CFG = IngestConfig(min_chars=0)
WORDS = "river valley mill village road bridge market harvest winter garden café señor naïve".split()


@dataclass
class Sample:
    """A valid input file and what it holds."""

    fmt: str
    suffix: str
    ids: list[str]
    texts: list[str]
    plain: bytes                      # the uncompressed stream
    ends: list[int]                   # end of each record in the plain stream
    compression: str | None = None
    members: list[bytes] = field(default_factory=list)   # compressed members/frames, in order
    member_records: list[range] = field(default_factory=list)
    exact_text: bool = True           # the reader gives the text back as written (not WARC's HTML)

    @property
    def data(self) -> bytes:
        return b"".join(self.members) if self.compression else self.plain


def _texts(n: int, salt: int) -> list[str]:
    return [" ".join(WORDS[(salt + i * 7 + k * 3) % len(WORDS)] for k in range(20 + (salt + i) % 15)) + f" {i}"
            for i in range(n)]


def _jsonl_records(ids, texts) -> list[bytes]:
    return [json.dumps({"id": i, "text": t}, ensure_ascii=False).encode() + b"\n" for i, t in zip(ids, texts)]


def _wet_records(ids, texts, cl_delta: dict[int, int] | None = None) -> list[bytes]:
    out = []
    for k, (i, t) in enumerate(zip(ids, texts)):
        body = t.encode()
        cl = len(body) + (cl_delta or {}).get(k, 0)
        out.append((f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Record-ID: <urn:uuid:{i}>\r\nWARC-Target-URI: "
                    f"http://example.com/{k}\r\nWARC-Date: 2020-08-01T00:00:00Z\r\nContent-Length: {cl}\r\n\r\n").encode()
                   + body + b"\r\n\r\n")
    return out


def _warc_records(ids, texts, cl_delta: dict[int, int] | None = None) -> list[bytes]:
    out = []
    for k, (i, t) in enumerate(zip(ids, texts)):
        http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><title>t</title></head>"
                b"<body><article><p>" + t.encode() + b"</p></article></body></html>")
        cl = len(http) + (cl_delta or {}).get(k, 0)
        out.append((f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{i}>\r\nWARC-Target-URI: "
                    f"http://example.com/{k}\r\nContent-Type: application/http; msgtype=response\r\n"
                    f"Content-Length: {cl}\r\n\r\n").encode() + http + b"\r\n\r\n")
    return out


FORMATS = ["jsonl", "jsonl.gz", "jsonl.zst", "wet", "wet.gz", "warc", "warc.gz", "parquet", "txt", "txt.gz"]


def make_sample(kind: str, n: int, per_member: int, salt: int, cl_delta: dict[int, int] | None = None) -> Sample:
    fmt = kind.split(".")[0]
    suffix = {"wet": ".warc.wet", "warc": ".warc"}.get(fmt, "." + fmt) + (kind[len(fmt):] if "." in kind else "")
    if fmt == "txt":
        n = 1
    ids = [f"00000000-0000-4000-8000-{salt % 10**6:06d}{i:06d}" for i in range(n)]
    texts = _texts(n, salt)
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": ids, "text": texts}), buf, row_group_size=max(1, per_member))
        return Sample(fmt, suffix, ids, texts, buf.getvalue(), [])
    recs = {"jsonl": _jsonl_records, "wet": _wet_records, "warc": _warc_records}.get(fmt)
    pieces = recs(ids, texts, cl_delta) if fmt in ("wet", "warc") else recs(ids, texts) if recs else [texts[0].encode()]
    ends, pos = [], 0
    for p in pieces:
        pos += len(p)
        ends.append(pos)
    if fmt in ("wet", "warc"):
        ids = [f"urn:uuid:{i}" for i in ids]  # a record's id is its WARC-Record-ID
    s = Sample(fmt, suffix, ids, texts, b"".join(pieces), ends, exact_text=fmt != "warc")
    comp = "gzip" if kind.endswith(".gz") else "zstd" if kind.endswith(".zst") else None
    if comp:
        s.compression = comp
        step = 1 if fmt in ("wet", "warc") else per_member  # Common Crawl: one member per record
        for a in range(0, len(pieces), step):
            chunk = b"".join(pieces[a:a + step])
            s.members.append(gzip.compress(chunk, mtime=0) if comp == "gzip"
                             else zstandard.ZstdCompressor(write_checksum=True).compress(chunk))
            s.member_records.append(range(a, min(a + step, len(pieces))))
    return s


def tolerant_plain_prefix(s: Sample, data: bytes) -> int:
    """How many bytes of the plain stream a forgiving decoder gets out of ``data`` (a prefix of
    the valid file): the oracle for "whole before the damage" in a compressed file."""
    if s.compression is None:
        return len(data)
    if s.fmt in ("wet", "warc"):  # one member per record: a record is whole if its member is
        end, out = 0, 0
        for m, recs in zip(s.members, s.member_records):
            end += len(m)
            if end > len(data):
                break
            out = s.ends[recs[-1]]
        return out
    out = 0
    while data:
        d = zlib.decompressobj(31) if s.compression == "gzip" else zstandard.ZstdDecompressor().decompressobj()
        try:
            for i in range(0, len(data), 256):
                out += len(d.decompress(data[i:i + 256]))
                if d.eof:
                    break
        except (zlib.error, zstandard.ZstdError):
            return out
        if not d.eof:
            return out
        data = d.unused_data + data[i + 256:] if d.unused_data or i + 256 < len(data) else b""
        if s.compression == "gzip" and not data.strip(b"\0"):
            return out
    return out


@dataclass
class Case:
    data: bytes
    at: int                    # first damaged byte of the file (len(data) for none)
    expect: list[int]          # records that must be accounted for (kept, or rejected by a named damage)
    silent_ok: bool = False    # damage no reader can see (a cut at a record boundary, a dropped member)
    all_exact: bool = False    # every record must be kept as written (BOMs)


def damage(s: Sample, op: str, frac: float, garbage: bytes, bit: int, k: int) -> Case:
    data = s.data
    n = len(s.ids)
    every = list(range(n))
    p = min(len(data) - 1, int(frac * len(data))) if data else 0
    if op == "truncate":
        member_ends = [sum(map(len, s.members[:j + 1])) for j in range(len(s.members))]
        at_boundary = (s.compression is None and s.fmt != "parquet" and p in (0, *s.ends)) or p in member_ends
        return Case(data[:p], p, every, silent_ok=at_boundary or s.fmt == "txt")
    if op == "flip":
        b = bytearray(data)
        b[p] ^= 1 << bit
        return Case(bytes(b), p, every)
    if op == "insert":
        return Case(data[:p] + garbage + data[p:], p, every)
    if op in ("dup_member", "drop_member") and len(s.members) > 1:
        k %= len(s.members)
        start = sum(map(len, s.members[:k]))
        if op == "dup_member":
            return Case(data[:start] + s.members[k] + data[start:], start, every)
        gone = set(s.member_records[k])
        return Case(data[:start] + data[start + len(s.members[k]):], start, [i for i in every if i not in gone],
                    silent_ok=True)
    if op == "bom" and s.compression is None and s.fmt in ("jsonl", "txt"):
        enc = ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"][k % 4]
        body = s.plain.decode()
        data = (b"\xfe\xff" + body.encode("utf-16-be")) if enc == "utf-16-be" else body.encode(enc)
        return Case(data, len(data), every, all_exact=True)
    return Case(data, len(data), every)


def _one_line_naming(err: SiftmixError, path: str) -> None:
    msg = str(err)
    assert "\n" not in msg.strip() and path in msg, f"error is not one line naming the file: {msg!r}"


def check_case(s: Sample, case: Case, lying: int | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input" + s.suffix)
        Path(path).write_bytes(case.data)
        out = os.path.join(tmp, "out")
        old = signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(30)
        try:
            r = ingest_file(IngestTask(path, "input" + s.suffix, s.fmt, "web", 0, len(case.data)), SRC, CFG, out)
        except SiftmixError as err:
            _one_line_naming(err, path)
            return
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        docs = read_shards(os.path.join(out, "data"))
        rej = read_shards(os.path.join(out, "rejected"))
    n_kept = 0 if docs is None else docs.num_rows
    n_rej = 0 if rej is None else rej.num_rows
    assert r.docs_in == r.kept + sum(r.rejected.values()), "in != kept + rejected"
    assert (n_kept, n_rej) == (r.kept, sum(r.rejected.values())), "the shards disagree with the counts"
    kept = {} if docs is None else dict(zip(docs["id"].to_pylist(), docs["text"].to_pylist()))
    reasons = [] if rej is None else rej["reason"].to_pylist()
    rej_ids = set() if rej is None else set(rej["id"].to_pylist())
    named = any(x in DAMAGE for x in reasons)
    ids = [s.ids[i] for i in range(len(s.ids))]
    if s.fmt == "txt":  # one document, with a derived id
        ids = list(kept) or list(rej_ids)
    if case.all_exact:
        assert list(kept.values()) == s.texts, "a byte-order mark lost or changed records"
        return
    # whole before the damage: kept, as written
    if s.fmt in ("parquet", "txt"):
        whole = []
    else:
        limit = tolerant_plain_prefix(s, case.data[:case.at])
        whole = [i for i in range(len(s.ids)) if s.ends[i] <= limit and (lying is None or i < lying)]
    for i in whole:
        if s.exact_text:
            assert kept.get(ids[i]) == s.texts[i], f"record {i}, whole before the damage at byte {case.at}, not kept"
        else:
            assert ids[i] in kept or ids[i] in rej_ids, f"record {i}, whole before the damage, is gone"
    # anything else that went missing is accounted for: by a row naming the damage, or it came
    # out under another id (the damage hit its id: a flipped byte in WARC-Record-ID or "id")
    missing = [i for i in case.expect if s.fmt != "txt" and ids[i] not in kept and ids[i] not in rej_ids]
    renamed = [i for i in [*kept, *rej_ids] if i not in set(s.ids)]
    if missing and not case.silent_ok and len(missing) > len(renamed):
        assert named, f"records {missing} went missing and no rejected row names the damage ({reasons})"


def _timeout(*_):
    raise TimeoutError("the case hangs (over 30 s)")


OPS = ["truncate", "flip", "insert", "dup_member", "drop_member", "bom", "lying_length"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@seed(SEED)
@given(kind=st.sampled_from(FORMATS), op=st.sampled_from(OPS), n=st.integers(1, 12), per_member=st.integers(1, 4),
       salt=st.integers(0, 10**6), frac=st.floats(0, 1), garbage=st.binary(min_size=1, max_size=48),
       bit=st.integers(0, 7), k=st.integers(0, 50), delta=st.integers(-400, 600).filter(lambda d: d != 0))
def test_damaged_inputs_lose_nothing_silently(kind, op, n, per_member, salt, frac, garbage, bit, k, delta):
    if op == "lying_length":
        if not kind.startswith(("wet", "warc")):
            op = "truncate"
        else:
            victim = k % n  # its Content-Length lies by delta bytes: the records before it are whole
            s = make_sample(kind, n, per_member, salt, {victim: delta})
            check_case(s, Case(s.data, len(s.data), list(range(n))), lying=victim)
            return
    s = make_sample(kind, n, per_member, salt)
    check_case(s, damage(s, op, frac, garbage, bit, k))


def test_fuzzer_oracle_sees_a_silent_drop():
    """The checker fails a reader that drops a record in silence (it is not vacuous)."""
    s = make_sample("jsonl", 4, 1, 3)
    lines = s.plain.split(b"\n")
    # a "damaged" file the checker is told is intact: record 2 removed with no trace
    case = Case(b"\n".join(lines[:2] + lines[3:]), len(s.plain), list(range(4)))
    with pytest.raises(AssertionError, match="went missing|not kept"):
        check_case(s, case)
