"""Benchmark loaders: JSONL (.gz/.zst), JSON (a list, or {"data": [...]}), Parquet and CSV, one
file or a folder of them, with a field mapping that says which fields make an example's text.

The default mapping takes ``text`` when present, else joins the usual fields (context,
question, choices, answer, ...). The 14 sets in ../shared/data/benchmarks load with no options.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os

import pyarrow.parquet as pq
from siftmix.pipeline.core import storage

from .appendix_c import Benchmark

DEFAULT_FIELDS = ("text", "context", "passage", "ctx", "question", "query", "goal", "sentence", "premise",
                  "hypothesis", "choices", "endings", "options", "sol1", "sol2", "answer", "answers")
SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".parquet", ".csv")


class BenchmarkError(ValueError):
    """A benchmark file that cannot be read: one line naming file and record."""


def _flatten(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return " ".join(_flatten(x) for x in v)
    if isinstance(v, dict):
        return " ".join(_flatten(x) for x in v.values())
    return str(v)


def example_text(row: dict, fields: list[str] | None) -> str:
    if fields:
        return " ".join(_flatten(row.get(f)) for f in fields if row.get(f) is not None)
    if isinstance(row.get("text"), str):
        return row["text"]
    return " ".join(_flatten(row[f]) for f in DEFAULT_FIELDS if f in row)


def _text(path: str) -> str:
    try:
        with storage.open_decompressed(path) as fh:
            data = fh.read()
    except storage.StreamDamage as err:  # a benchmark must be read whole: no partial audit
        raise BenchmarkError(f"{path}: {err}") from None
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as err:
        raise BenchmarkError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return text


def _jsonl_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]  # not splitlines(): U+0085 etc. occur inside strings


def _rows(path: str) -> list[dict]:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return storage.read_table(path).to_pylist()
    text = _text(path)
    if lower.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text)))
    if ".jsonl" in lower:
        rows = []
        for i, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+0085 etc. occur inside strings
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise BenchmarkError(f"{path}: line {i}: invalid JSON ({err.msg})") from None
        return rows
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(obj, dict):
        obj = next((v for v in obj.values() if isinstance(v, list)), [obj])
    return obj


def benchmark_name(path: str) -> str:
    name = os.path.basename(path)
    for s in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def load_benchmark(path: str, name: str | None = None, fields: list[str] | None = None,
                   id_field: str = "id") -> Benchmark:
    rows = _rows(path)
    ids, texts = [], []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise BenchmarkError(f"{path}: record {i + 1} is not an object")
        t = example_text(r, fields)
        if not t.strip():
            raise BenchmarkError(f"{path}: record {i + 1} has no text in fields {fields or list(DEFAULT_FIELDS)}")
        ids.append(str(r.get(id_field, i)))
        texts.append(t)
    return Benchmark(name or benchmark_name(path), ids, texts, path)


def benchmark_files(paths: list[str]) -> list[str]:
    """Benchmark files named, matched by a glob, or found directly in a named folder."""

    files = []
    for p in paths:
        if storage.has_magic(p):
            files += storage.glob(p)
        elif storage.isdir(p):
            files += [f for f in storage.list_files(p) if f.lower().endswith(SUFFIXES)]
        elif storage.exists(p):
            files.append(p)
        else:
            raise BenchmarkError(f"benchmark path does not exist: {p}")
    return files


def load_benchmarks(paths: list[str], fields: list[str] | None = None) -> list[Benchmark]:
    """Every benchmark file of :func:`benchmark_files` (sorted by name within a folder)."""
    return [load_benchmark(f, fields=fields) for f in benchmark_files(paths)]


def suffix_of(path: str) -> str:
    """The benchmark file's format suffix (``.jsonl.gz``, ``.csv``, ...)."""
    lower = storage.basename(path).lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if lower.endswith(s)), "")


def _compress(data: bytes, path: str) -> bytes:
    lower = path.lower()
    if lower.endswith(".gz"):  # level 6: half the time of the default 9 for 0.4% more bytes
        return gzip.compress(data, compresslevel=6, mtime=0)
    if lower.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def subset_bytes(path: str, keep: list[int]) -> bytes:
    """The records ``keep`` (record indices, in the loader's order) of a benchmark file, in the
    file's own format: JSONL lines as they were, the JSON layout ({"data": [...]} or a list) with
    its other keys, CSV with the same header, Parquet with the same schema; compressed as the
    file was. An evaluation harness reads it as it reads the original."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        buf = io.BytesIO()
        pq.write_table(storage.read_table(path).take(keep), buf)
        return buf.getvalue()
    text = _text(path)
    if lower.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=reader.fieldnames or [], lineterminator="\n")
        w.writeheader()
        w.writerows(rows[i] for i in keep)
        return out.getvalue().encode("utf-8")
    if ".jsonl" in lower:
        lines = _jsonl_lines(text)
        return _compress("".join(lines[i] + "\n" for i in keep).encode("utf-8"), path)
    obj = json.loads(text)
    if isinstance(obj, dict):
        key = next((k for k, v in obj.items() if isinstance(v, list)), None)
        if key is None:  # one record
            sub = obj if keep == [0] else {}
            return _compress(json.dumps(sub, ensure_ascii=False).encode("utf-8"), path)
        obj = {**obj, key: [obj[key][i] for i in keep]}
    else:
        obj = [obj[i] for i in keep]
    return _compress(json.dumps(obj, ensure_ascii=False).encode("utf-8"), path)


def _ids_text(ids: list[str]) -> str:
    """One id a line; a line break inside an id is written escaped (\\u000a)."""
    return "".join(i.replace("\r", "\\u000d").replace("\n", "\\u000a") + "\n" for i in ids)


def subset_files(b: Benchmark) -> dict:
    """The paths (relative) of a benchmark's subsets: ``clean/<name><suffix>`` (the clean examples,
    in the input's format and fields), ``clean/<name>.ids`` and ``dirty/<name>.ids``."""
    return {"clean": f"clean/{b.name}{suffix_of(b.path)}", "clean_ids": f"clean/{b.name}.ids",
            "dirty_ids": f"dirty/{b.name}.ids"}


def write_subsets(b: Benchmark, dirty: set[int], folder: str) -> dict:
    """The subsets (:func:`subset_files`) under ``folder``; returns their paths (relative)."""
    keep = [i for i in range(len(b.ids)) if i not in dirty]
    files = subset_files(b)
    storage.write_bytes(storage.join(folder, files["clean"]), subset_bytes(b.path, keep))
    storage.write_text(storage.join(folder, files["clean_ids"]), _ids_text([b.ids[i] for i in keep]))
    storage.write_text(storage.join(folder, files["dirty_ids"]), _ids_text([b.ids[i] for i in sorted(dirty)]))
    return files
