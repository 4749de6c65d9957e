"""Per-example evaluation results against the audit: GPT-3's Table C.1 (score on all, dirty and
clean examples, % clean, relative difference clean vs all) and the flags of Figure 4.2.

Two inputs are read (:func:`read_scores`):

- lm-evaluation-harness ``--log_samples`` output, ``samples_<task>_<date>.jsonl``: one record per
  (document, filter) with ``doc_id``, ``doc`` (the dataset row), ``filter`` and one field per
  metric (``acc``, ``acc_norm``, ``exact_match``, ``f1``, ...; newer versions also list them in
  ``metrics``). The benchmark is the one named like the task, else the one whose examples hold
  the most of the samples' document texts; ``BENCHMARK=PATH`` names it (lm-eval's task names and
  document fields often differ from a benchmark file's). A sample is matched to an example by its
  document's text (the benchmark's fields, as the loader builds it), else, for a benchmark named
  like the task or named by ``BENCHMARK=``, by ``doc_id`` (the example's position in the file).
- a plain JSONL of ``{"benchmark", "id", "score"}`` (``"metric"`` optional, default ``score``).

Per benchmark and metric, :func:`table_c1` gives the counts and mean scores on all, dirty and
clean examples, the share that is clean and the relative difference; a row is flagged when the
score on all examples lies outside the 95% sampling interval of the clean score: a Wilson
binomial interval for a 0/1 metric, else a seeded percentile bootstrap of the clean mean.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
from siftmix.pipeline.core import storage

from .appendix_c import Benchmark
from .benchmarks import example_text
from .config import split_named

Z95 = 1.959963984540054
BOOTSTRAP = 1000
#: fields of an lm-eval sample record that are not metrics
SAMPLE_FIELDS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                 "doc_hash", "prompt_hash", "target_hash"}
_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+?)(?:_\d{4}-\d{2}-\d{2}T[0-9.\-]+)?\.jsonl$")


class ScoresError(ValueError):
    """A scores file that cannot be read: one line naming file and line."""


@dataclass
class Scores:
    """{benchmark: {metric: {example index: score}}}, metrics in the order first seen, and what
    could not be used (warnings)."""

    values: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)

    def add(self, where: str, bench: str, metric: str, ex: int, value: float, label: str) -> None:
        per = self.values.setdefault(bench, {}).setdefault(metric, {})
        if ex in per:
            raise ScoresError(f"{where}: example {label} of {bench} already has a {metric} score "
                              f"(one result per example: two samples files of one task?)")
        per[ex] = value


def named_score_files(paths: list[str]) -> list[tuple[str | None, str]]:
    """(benchmark named by ``BENCHMARK=PATH`` or None, file): files named, matched by a glob, or
    the ``*.jsonl`` files anywhere under a named folder."""
    out = []
    for item in paths:
        name, p = split_named(item)
        if storage.has_magic(p):
            found = storage.glob(p)
        elif storage.isdir(p):
            found = sorted(f for f in storage.walk_files(p) if f.endswith(".jsonl"))
        elif storage.exists(p):
            found = [p]
        else:
            raise ScoresError(f"scores path does not exist: {p}")
        out += [(name, f) for f in found]
    return out


def score_files(paths: list[str]) -> list[str]:
    return [f for _, f in named_score_files(paths)]


def _records(path: str) -> list[tuple[int, dict]]:
    try:
        with storage.open_decompressed(path) as fh:
            text = fh.read().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ScoresError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except storage.StreamDamage as err:
        raise ScoresError(f"{path}: {err}") from None
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                r = json.loads(line)
            except json.JSONDecodeError as err:
                raise ScoresError(f"{path}: line {i}: invalid JSON ({err.msg})") from None
            if not isinstance(r, dict):
                raise ScoresError(f"{path}: line {i}: not a JSON object")
            out.append((i, r))
    return out


def _number(v) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def _metrics_of(r: dict) -> list[tuple[str, float]]:
    names = r["metrics"] if isinstance(r.get("metrics"), list) else [k for k in r if k not in SAMPLE_FIELDS]
    flt = r.get("filter")
    out = []
    for k in names:
        v = _number(r.get(k))
        if v is not None:  # corpus-level metrics (bleu's (ref, pred) pairs) have no per-example score
            out.append((k if flt in (None, "none") else f"{k},{flt}", v))
    return out


def _read_samples(path: str, recs: list[tuple[int, dict]], benches: list[Benchmark], fields, out: Scores,
                  named: str | None = None) -> None:
    m = _SAMPLES_NAME.match(storage.basename(path))
    task = m.group("task") if m else storage.basename(path).removesuffix(".jsonl")
    by_name = {b.name: b for b in benches}
    if named is not None:  # BENCHMARK=PATH: the samples are of that benchmark (by text, else doc_id)
        task = named
    texts = [(i, r, example_text(r["doc"], fields) if isinstance(r.get("doc"), dict) else None) for i, r in recs]
    where = {}
    for b in benches:
        pos: dict[str, list[int]] = {}
        for k, t in enumerate(b.texts):
            pos.setdefault(t, []).append(k)
        where[b.name] = pos
    bench = by_name.get(task)
    how = "named" if named is not None else "task name"
    if bench is None:  # the benchmark whose examples hold the most of the samples' texts
        hits = {b.name: sum(t in where[b.name] for _, _, t in texts if t is not None) for b in benches}
        best = max(hits, key=lambda k: (hits[k], k), default=None)
        if best is None or hits[best] == 0:
            out.warnings.append({"kind": "scores_unmatched", "file": path, "count": len(recs),
                                 "message": f"scores {storage.basename(path)} (task {task}): no benchmark is named "
                                            f"{task} and none holds its documents' text; its {len(recs)} samples are not used"})
            return
        bench, how = by_name[best], "document text"
    unmatched, n, used = 0, 0, {}
    for i, r, t in texts:
        cand = where[bench.name].get(t) if t is not None else None
        doc_id = r.get("doc_id")
        if cand:  # the doc_id if it is one of the examples of this text, else the next of them
            taken = used.setdefault((t, r.get("filter")), set())
            ex = doc_id if doc_id in cand else next((c for c in cand if c not in taken), cand[0])
            taken.add(ex)
        elif how != "document text" and isinstance(doc_id, int) and 0 <= doc_id < len(bench.texts):
            ex = doc_id
        else:
            unmatched += 1
            continue
        ms = _metrics_of(r)
        for metric, v in ms:
            out.add(f"{path}: line {i}", bench.name, metric, ex, v, bench.ids[ex])
        n += bool(ms)
    out.files.append({"file": path, "format": "lm-eval samples", "task": task, "benchmark": bench.name,
                      "matched_by": how, "samples": len(recs), "matched": len(recs) - unmatched})
    if unmatched:
        out.warnings.append({"kind": "scores_unmatched", "benchmark": bench.name, "file": path, "count": unmatched,
                             "message": f"scores {storage.basename(path)} (task {task}): {unmatched} of {len(recs)} "
                                        f"samples match no example of {bench.name}; not used"})


def _read_plain(path: str, recs: list[tuple[int, dict]], benches: list[Benchmark], out: Scores) -> None:
    ids = {b.name: {} for b in benches}
    for b in benches:
        for k, x in enumerate(b.ids):
            ids[b.name].setdefault(x, k)
    unknown: dict[str, int] = {}
    for i, r in recs:
        if "benchmark" not in r or "id" not in r or "score" not in r:
            raise ScoresError(f"{path}: line {i}: a plain scores record needs benchmark, id and score")
        v = _number(r["score"])
        if v is None:
            raise ScoresError(f"{path}: line {i}: score is not a number ({r['score']!r})")
        b, x = str(r["benchmark"]), str(r["id"])
        if b not in ids or x not in ids[b]:
            unknown[b] = unknown.get(b, 0) + 1
            continue
        out.add(f"{path}: line {i}", b, str(r.get("metric", "score")), ids[b][x], v, x)
    out.files.append({"file": path, "format": "plain", "records": len(recs), "matched": len(recs) - sum(unknown.values())})
    for b, c in sorted(unknown.items()):
        what = f"{c} records name an id that {b} does not have" if b in ids else f"{c} records name an unknown benchmark {b}"
        out.warnings.append({"kind": "scores_unmatched", "file": path, "count": c,
                             "message": f"scores {storage.basename(path)}: {what}; not used"})


def read_scores(paths: list[str], benches: list[Benchmark], fields: list[str] | None = None) -> Scores:
    out = Scores()
    names = {b.name for b in benches}
    for named, path in named_score_files(paths):
        if named is not None and named not in names:
            raise ScoresError(f"scores {named}={path}: no benchmark named {named} (benchmarks: {', '.join(sorted(names))})")
        recs = _records(path)
        if not recs:
            out.warnings.append({"kind": "scores_unmatched", "file": path, "count": 0,
                                 "message": f"scores {storage.basename(path)}: empty file"})
            continue
        first = recs[0][1]
        if "doc_id" in first:
            _read_samples(path, recs, benches, fields, out, named)
        elif "benchmark" in first:
            _read_plain(path, recs, benches, out)
        else:
            raise ScoresError(f"{path}: line {recs[0][0]}: neither an lm-eval sample (doc_id, doc, metrics) "
                              f"nor a plain score (benchmark, id, score)")
    return out


# --------------------------------------------------------------------------- Table C.1


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def seed_for(seed: int, bench: str, metric: str) -> int:
    """The bootstrap seed of one row: from the run seed and the row's names (not its position)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{bench}\0{metric}".encode()).digest()[:8], "little")


def bootstrap(values: np.ndarray, seed: int, rounds: int = BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95% interval of the mean: ``rounds`` resamples with replacement, drawn in
    chunks from one generator (the same draws as one resample after another)."""
    rng = np.random.default_rng(seed)
    n, means, chunk = len(values), [], max(1, min(rounds, 2_000_000 // max(1, len(values))))
    done = 0
    while done < rounds:
        k = min(chunk, rounds - done)
        means.append(values[rng.integers(0, n, (k, n))].mean(axis=1))
        done += k
    lo, hi = np.quantile(np.concatenate(means), [0.025, 0.975])
    return float(lo), float(hi)


def _mean(v: np.ndarray) -> float | None:
    return float(v.mean()) if len(v) else None


def table_c1(scores: Scores, dirty: dict[str, set[int]], seed: int = 0, order: list[str] | None = None) -> list[dict]:
    """One row per benchmark and metric (benchmarks in ``order``; the first metric of a benchmark
    is its ``primary`` one: Figure 4.2's point)."""
    rows = []
    for bench in order or sorted(scores.values):
        for mi, (metric, per) in enumerate(scores.values.get(bench, {}).items()):
            ex = np.fromiter(per, np.int64, len(per))
            v = np.fromiter(per.values(), np.float64, len(per))
            is_dirty = np.isin(ex, np.fromiter(dirty.get(bench, ()), np.int64))
            clean, dv = v[~is_dirty], v[is_dirty]
            all_, c = _mean(v), _mean(clean)
            binary = bool(np.all((v == 0) | (v == 1)))
            interval, method = None, None
            if len(clean):
                if binary:
                    interval, method = wilson(int(clean.sum()), len(clean)), "wilson"
                else:
                    interval, method = bootstrap(clean, seed_for(seed, bench, metric)), "bootstrap"
            rel = 100.0 * (c - all_) / all_ if c is not None and all_ else None
            flagged = bool(interval is not None and len(dv) > 0 and not interval[0] <= all_ <= interval[1])
            rows.append({"benchmark": bench, "metric": metric, "primary": mi == 0, "binary": binary,
                         "count_all": len(v), "score_all": all_, "count_dirty": len(dv), "score_dirty": _mean(dv),
                         "count_clean": len(clean), "score_clean": c,
                         "pct_clean": 100.0 * len(clean) / len(v) if len(v) else None,
                         "rel_diff_pct": rel, "interval": list(interval) if interval else None,
                         "interval_method": method, "flagged": flagged})
    return rows
