"""Table C.1 (clean vs all scores) from per-example evaluation results: the numbers and flags
against a brute-force computation on a seeded example, the plain {benchmark, id, score} path,
and lm-evaluation-harness's own --log_samples output (its dummy model on a local task)."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binomtest
from siftmix.contamination.appendix_c import Benchmark
from siftmix.contamination.benchmarks import load_benchmarks, write_subsets
from siftmix.contamination.scores import Scores, ScoresError, read_scores, table_c1

# --------------------------------------------------------------------------- the oracle


def brute_force_row(bench, metric, per, dirty, seed):
    """One Table C.1 row in plain Python: means by hand, scipy's Wilson interval for 0/1 scores,
    a bootstrap drawn one resample at a time for the others."""
    all_ = [v for _, v in sorted(per.items())]
    d = [v for k, v in sorted(per.items()) if k in dirty]
    c = [v for k, v in sorted(per.items()) if k not in dirty]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    binary = all(v in (0.0, 1.0) for v in all_)
    if not c:
        lo = hi = None
    elif binary:
        ci = binomtest(int(sum(c)), len(c)).proportion_ci(confidence_level=0.95, method="wilson")
        lo, hi = ci.low, ci.high
    else:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}\0{bench}\0{metric}".encode()).digest()[:8], "little"))
        means = []
        for _ in range(1000):
            idx = rng.integers(0, len(c), len(c))
            means.append(sum(c[i] for i in idx) / len(c))
        means.sort()
        # numpy's default (linear) quantile, by hand
        def q(p):
            pos = p * (len(means) - 1)
            f = int(pos)
            return means[f] + (means[min(f + 1, len(means) - 1)] - means[f]) * (pos - f)
        lo, hi = q(0.025), q(0.975)
    a, cl = mean(all_), mean(c)
    return {"count_all": len(all_), "score_all": a, "count_dirty": len(d), "score_dirty": mean(d),
            "count_clean": len(c), "score_clean": cl, "pct_clean": 100 * len(c) / len(all_),
            "rel_diff_pct": 100 * (cl - a) / a if cl is not None and a else None,
            "interval": None if lo is None else [lo, hi],
            "flagged": lo is not None and len(d) > 0 and not (lo <= a <= hi)}


def _close(a, b):
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def test_table_c1_equals_brute_force_with_flags():
    rng = np.random.default_rng(2024)
    scores, dirty = Scores(), {}
    # three benchmarks; in "leaky" the dirty examples are (nearly) all right and the clean ones
    # mostly wrong: clean falls well below all (flagged); in the others dirty is random (not flagged)
    for name, n, share, leak in (("leaky", 400, 0.3, True), ("fair", 300, 0.1, False), ("tiny", 12, 0.25, False)):
        d = set(rng.choice(n, int(n * share), replace=False).tolist())
        dirty[name] = d
        acc = {i: float(rng.random() < (0.95 if i in d else 0.35) if leak else rng.random() < 0.6) for i in range(n)}
        f1 = {i: float(rng.random() * (1.0 if i not in d or not leak else 0.2) + (0.8 if i in d and leak else 0.0))
              for i in range(n)}
        scores.values[name] = {"acc": acc, "f1": f1}
    scores.values["nothing_dirty"] = {"acc": {i: float(i % 3 == 0) for i in range(30)}}
    dirty["nothing_dirty"] = set()
    got = table_c1(scores, dirty, seed=11, order=["leaky", "fair", "tiny", "nothing_dirty"])
    assert [(r["benchmark"], r["metric"], r["primary"]) for r in got] == [
        ("leaky", "acc", True), ("leaky", "f1", False), ("fair", "acc", True), ("fair", "f1", False),
        ("tiny", "acc", True), ("tiny", "f1", False), ("nothing_dirty", "acc", True)]
    for r in got:
        want = brute_force_row(r["benchmark"], r["metric"], scores.values[r["benchmark"]][r["metric"]],
                               dirty[r["benchmark"]], 11)
        for k, v in want.items():
            assert _close(r[k], v) if k != "flagged" else r[k] == v, (r["benchmark"], r["metric"], k, r[k], v)
        assert r["interval_method"] == ("wilson" if r["metric"] == "acc" else "bootstrap")
    flags = {(r["benchmark"], r["metric"]): r["flagged"] for r in got}
    assert flags[("leaky", "acc")] and flags[("leaky", "f1")]  # both interval kinds flag the leak
    assert not flags[("fair", "acc")] and not flags[("nothing_dirty", "acc")]
    # the seed is per (benchmark, metric): the same rows in another order give the same intervals
    again = table_c1(scores, dirty, seed=11, order=["tiny", "leaky", "fair", "nothing_dirty"])
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, got))
    assert table_c1(scores, dirty, seed=12)[1]["interval"] != got[1]["interval"]  # and it is the seed's


def _bench_files(tmp_path):
    (tmp_path / "b").mkdir()
    rows = {"qa": [{"id": f"qa-{i}", "question": f"question number {i} about the old mill and river {i}",
                    "choices": ["yes", "no"], "answer": i % 2} for i in range(8)],
            "cloze": [{"id": f"c{i}", "text": f"the quiet valley town {i} grew near its walls"} for i in range(5)]}
    for name, rs in rows.items():
        (tmp_path / "b" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return rows, load_benchmarks([str(tmp_path / "b")])


def test_plain_scores_path(tmp_path):
    rows, benches = _bench_files(tmp_path)
    recs = [{"benchmark": "qa", "id": f"qa-{i}", "score": i % 3 == 0} for i in range(8)]
    recs += [{"benchmark": "cloze", "id": f"c{i}", "score": 0.1 * i, "metric": "f1"} for i in range(5)]
    recs += [{"benchmark": "cloze", "id": "c99", "score": 1}, {"benchmark": "nope", "id": "x", "score": 1}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = read_scores([str(tmp_path / "s.jsonl")], benches)
    assert s.values["qa"]["score"] == {i: float(i % 3 == 0) for i in range(8)}
    assert s.values["cloze"]["f1"] == {i: 0.1 * i for i in range(5)}
    assert sorted(w["message"].split(": ", 1)[1] for w in s.warnings) == [
        "1 records name an id that cloze does not have; not used", "1 records name an unknown benchmark nope; not used"]
    rows_c1 = table_c1(s, {"qa": {0, 1}, "cloze": set()}, order=["qa", "cloze"])
    qa = rows_c1[0]
    assert (qa["count_all"], qa["count_dirty"], qa["count_clean"]) == (8, 2, 6)
    assert qa["score_dirty"] == 0.5 and qa["score_clean"] == 2 / 6 and qa["binary"]
    # bad input: one line naming file and line
    (tmp_path / "bad.jsonl").write_text(json.dumps(recs[0]) + "\n{oops\n")
    with pytest.raises(ScoresError, match=r"bad.jsonl: line 2: invalid JSON"):
        read_scores([str(tmp_path / "bad.jsonl")], benches)
    (tmp_path / "dup.jsonl").write_text(json.dumps(recs[0]) * 1 + "\n" + json.dumps(recs[0]) + "\n")
    with pytest.raises(ScoresError, match=r"dup.jsonl: line 2: example qa-0 of qa already has a score score"):
        read_scores([str(tmp_path / "dup.jsonl")], benches)
    (tmp_path / "nan.jsonl").write_text(json.dumps({"benchmark": "qa", "id": "qa-1", "score": "high"}) + "\n")
    with pytest.raises(ScoresError, match=r"nan.jsonl: line 1: score is not a number"):
        read_scores([str(tmp_path / "nan.jsonl")], benches)


TASK = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: answer
doc_to_choice: choices
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def lm_eval_samples(tmp_path, tasks: dict) -> dict:
    """Run lm-evaluation-harness once (its dummy model, task YAMLs reading local JSONL files:
    nothing from a hub) with --log_samples; {task: the samples files it wrote}."""
    pytest.importorskip("lm_eval", reason="lm-eval is in the test extra (make test installs it)")
    (tmp_path / "tasks").mkdir(exist_ok=True)
    for task, data in tasks.items():
        (tmp_path / "tasks" / f"{task}.yaml").write_text(TASK.format(task=task, data=data))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "dummy", "--tasks", ",".join(tasks), "--include_path",
                        str(tmp_path / "tasks"), "--output_path", str(tmp_path / "lm-out"), "--log_samples"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return {task: sorted((tmp_path / "lm-out").rglob(f"samples_{task}_2*.jsonl")) for task in tasks}


def test_lm_eval_samples_path(tmp_path):
    rows, benches = _bench_files(tmp_path)
    dirty = {"qa": {1, 4, 6}}
    # the clean subset the audit writes, evaluated by lm-eval as it evaluates the original
    files = write_subsets(benches[[b.name for b in benches].index("qa")], dirty["qa"], str(tmp_path / "audit"))
    out = lm_eval_samples(tmp_path, {"qa": tmp_path / "b" / "qa.jsonl", "qaclean": tmp_path / "audit" / files["clean"]})
    clean_docs = [json.loads(x)["doc"] for x in out["qaclean"][0].read_text().splitlines()]
    assert clean_docs == [r for i, r in enumerate(rows["qa"]) if i not in dirty["qa"]]
    files = out["qa"]
    assert len(files) == 1
    samples = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert len(samples) == 8 and {"doc_id", "doc", "acc", "acc_norm"} <= set(samples[0])  # lm-eval's own format
    want = {m: {s["doc_id"]: float(s[m]) for s in samples} for m in ("acc", "acc_norm")}
    # the task is named like the benchmark: by text (and doc_id agrees)
    s = read_scores([str(f) for f in files], benches)
    assert s.values == {"qa": want} and s.warnings == []
    assert s.files[0]["benchmark"] == "qa" and s.files[0]["matched_by"] == "task name"
    # a task of another name, its file in another order: matched by the documents' text
    other = tmp_path / "other" / "samples_my_qa_task_2026-01-02T03-04-05.678901.jsonl"
    other.parent.mkdir()
    shuffled = [{**x, "doc_id": k} for k, x in enumerate(reversed(samples))]
    other.write_text("".join(json.dumps(x) + "\n" for x in shuffled))
    s2 = read_scores([str(other)], benches)
    assert s2.values == {"qa": want} and s2.files[0]["matched_by"] == "document text"
    assert s2.files[0]["task"] == "my_qa_task"
    # samples of documents no benchmark has: a warning, nothing used
    stray = tmp_path / "other2" / "samples_zzz_2026-01-02T03-04-05.jsonl"
    stray.parent.mkdir()
    stray.write_text(json.dumps({**samples[0], "doc": {"question": "unrelated", "choices": []}}) + "\n")
    s3 = read_scores([str(stray)], benches)
    assert s3.values == {} and "no benchmark is named zzz" in s3.warnings[0]["message"]
    # Table C.1 of the lm-eval scores against the brute force
    for r in table_c1(s, dirty, seed=3, order=["qa"]):
        want_row = brute_force_row("qa", r["metric"], s.values["qa"][r["metric"]], dirty["qa"], 3)
        assert all(_close(r[k], v) if k != "flagged" else r[k] == v for k, v in want_row.items())


def test_samples_filters_and_non_numeric_metrics(tmp_path):
    """Records of lm-eval's documented samples format with a filter and a corpus-level metric
    (written here: the dummy model's generate_until task would need a tokenizer from a hub)."""
    b = [Benchmark("gsm", ["g0", "g1"], ["what is one and one", "what is two and two"])]
    recs = [{"doc_id": i, "doc": {"text": t}, "target": "x", "arguments": {}, "resps": [], "filtered_resps": [],
             "filter": flt, "metrics": ["exact_match", "bleu"], "exact_match": float(i == 0), "bleu": ["ref", "pred"]}
            for flt in ("strict-match", "flexible-extract") for i, t in enumerate(b[0].texts)]
    (tmp_path / "samples_gsm_2026-01-01T00-00-00.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = read_scores([str(tmp_path)], b)
    assert s.values == {"gsm": {"exact_match,strict-match": {0: 1.0, 1: 0.0}, "exact_match,flexible-extract": {0: 1.0, 1: 0.0}}}


def test_samples_of_repeated_example_texts_go_to_distinct_examples(tmp_path):
    b = [Benchmark("dup", ["a", "b", "c"], ["the same text", "the same text", "another text"])]
    recs = [{"doc_id": 10 + k, "doc": {"text": t}, "filter": "none", "acc": float(k)}
            for k, t in enumerate(["the same text", "another text", "the same text"])]
    (tmp_path / "samples_renamed_2026-01-01T00-00-00.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = read_scores([str(tmp_path)], b)
    assert s.values == {"dup": {"acc": {0: 0.0, 2: 1.0, 1: 2.0}}} and s.files[0]["matched_by"] == "document text"


def test_benchmark_named_for_a_samples_file(tmp_path):
    """lm-eval's own task of a benchmark has other fields and another name than the benchmark
    file (arc_easy vs arc_easy_test): BENCHMARK=PATH names it, and doc_id matches."""
    b = [Benchmark("arc_easy_test", ["x0", "x1"], ["Question: a? A B", "Question: b? C D"])]
    recs = [{"doc_id": i, "doc": {"question": q, "choices": {"text": ["A", "B"], "label": ["A", "B"]}}, "filter": "none",
             "acc": float(i)} for i, q in enumerate(["a?", "b?"])]
    f = tmp_path / "samples_arc_easy_2026-01-01T00-00-00.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    unnamed = read_scores([str(f)], b)
    assert unnamed.values == {} and "no benchmark is named arc_easy" in unnamed.warnings[0]["message"]
    named = read_scores([f"arc_easy_test={f}"], b)
    assert named.values == {"arc_easy_test": {"acc": {0: 0.0, 1: 1.0}}} and named.files[0]["matched_by"] == "named"
    with pytest.raises(ScoresError, match="no benchmark named arc_easy_dev"):
        read_scores([f"arc_easy_dev={f}"], b)
    from siftmix.contamination.config import DecontamConfig

    cfg = DecontamConfig.model_validate({"scores": [f"arc_easy_test={f.name}"]}, context={"base_dir": str(tmp_path)})
    assert cfg.scores == [f"arc_easy_test={f}"]  # the path part is resolved like any other path


def test_bootstrap_in_chunks_draws_what_one_draw_would():
    """Large benchmarks are resampled in chunks (memory): the same draws as all at once."""
    from siftmix.contamination.scores import bootstrap

    v = np.random.default_rng(1).random(5000)  # 400 resamples a chunk
    rng = np.random.default_rng(77)
    means = v[rng.integers(0, len(v), (1000, len(v)))].mean(axis=1)
    assert bootstrap(v, 77) == tuple(float(x) for x in np.quantile(means, [0.025, 0.975]))
