"""A folder of broken inputs, as users have them (shared by unit and integration tests)."""

import gzip
import json
from pathlib import Path

PROSE = "The quiet river crossed the ancient valley near the old mill, and the village grew around it. " * 4

#: reason -> number of rejected rows the folder must produce (with on_bad_encoding=repair)
EXPECTED_REJECTS = {
    "truncated_file": 1,
    "bad_json": 2,
    "missing_field:text": 2,
    "too_long": 1,
    "too_short": 1,
    "duplicate_id": 1,
}


def make_bad_inputs(folder: Path, big_mb: int = 50) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.jsonl").write_text("".join(json.dumps({"id": f"g{i}", "text": PROSE + str(i)}) + "\n" for i in range(3)))
    # truncated gzip: 40 lines, cut in the middle of the compressed stream
    blob = gzip.compress("".join(json.dumps({"id": f"t{i}", "text": PROSE + str(i) * 50}) + "\n" for i in range(40)).encode(), mtime=0)
    (folder / "truncated.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    # non-UTF-8 bytes inside a JSON string, between good lines
    good = json.dumps({"id": "u0", "text": PROSE}).encode()
    bad = b'{"id": "u1", "text": "' + PROSE.encode() + b'caf\xe9 \xff\xfe bytes"}'
    (folder / "bad_utf8.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    # malformed lines: broken JSON, JSON that is not an object
    (folder / "malformed.jsonl").write_text(
        json.dumps({"id": "m0", "text": PROSE}) + "\n" + '{"id": "m1", "text": "oops\n' + "[1, 2, 3]\n"
    )
    (folder / "empty.jsonl").write_bytes(b"")
    # a 50 MB single document (over max_chars by default: too_long) and a normal one beside it
    with open(folder / "big.jsonl", "w") as fh:
        fh.write(json.dumps({"id": "big", "text": "word " * (big_mb * 2**20 // 5)}) + "\n")
        fh.write(json.dumps({"id": "small", "text": PROSE}) + "\n")
    # missing / wrong-typed text field; a too-short document
    (folder / "missing_field.jsonl").write_text(
        json.dumps({"id": "f0", "body": PROSE}) + "\n" + json.dumps({"id": "f1", "text": 42}) + "\n"
        + json.dumps({"id": "f2", "text": "tiny"}) + "\n"
    )
    # lone surrogate escaped in JSON (valid JSON, invalid Unicode) and a duplicated id
    (folder / "surrogate.jsonl").write_text(json.dumps({"id": "s0", "text": PROSE + "\ud800 end"}) + "\n")
    (folder / "dup_ids.jsonl").write_text(
        json.dumps({"id": "d0", "text": PROSE}) + "\n" + json.dumps({"id": "d0", "text": PROSE + "again"}) + "\n"
    )
    return folder


def expected_kept(folder: Path) -> int:
    """Documents the folder must give: counted independently of siftmix (zlib for the truncated file)."""
    import zlib

    data = zlib.decompressobj(31).decompress((folder / "truncated.jsonl.gz").read_bytes())
    complete_lines = data.count(b"\n")
    # good 3, truncated (complete lines), bad_utf8 2 (repaired), malformed 1, big.jsonl 1 (small),
    # surrogate 1 (repaired), dup_ids 1 (first)
    return 3 + complete_lines + 2 + 1 + 1 + 1 + 1
