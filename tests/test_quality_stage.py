"""The quality stage through a real local Ray: demo corpus, real reference-vs-crawl data,
determinism, model reuse, the embedding scorer (offline), the CLI."""

import json
import os
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import committed, demo_sources, parquet_bytes, run_cli
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.shards import read_shards
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _quiet(*a, **k):
    pass


def _demo_cfg(run_dir, corpus, **quality):
    return config_from_dict({
        "run_dir": str(run_dir), "seed": 5,
        "sources": demo_sources(corpus),
        "ingest": {"min_chars": 200},
        "quality": {"train": {"max_docs_per_class": 2000}, **quality},
    })


def test_quality_stage_on_demo_counts_determinism_reuse(ray_local, demo_corpus, tmp_path):
    outs, manifests = [], []
    for i, workers in enumerate((1, 2, 2)):
        cfg = _demo_cfg(tmp_path / f"run{i}", demo_corpus)
        run_stage("ingest", cfg, log=_quiet)
        m = run_stage("quality", cfg, workers=workers, log=_quiet, progress=False)
        stage = Path(cfg.run_dir) / "10_quality"
        outs.append({k: v for k, v in parquet_bytes(stage).items()})
        outs[-1]["model.bin"] = (committed(stage) / "model" / "model.bin").read_bytes()
        manifests.append(m)
    assert outs[0] == outs[1] == outs[2]  # byte-identical with 1 and 2 workers, twice
    m = manifests[0]
    c = m["counts"]
    assert c["in"] == c["kept"] + c["rejected"]
    for src, sc in c["by_source"].items():
        assert sc["in"] == sc["kept"] + sc["rejected"]
        if src != "common_crawl":
            assert sc["rejected"] == 0  # curated sources are not filtered
    assert set(c["rejected_by_reason"]) == {"quality"}
    assert 0 < c["by_source"]["common_crawl"]["kept"] < c["by_source"]["common_crawl"]["in"]
    ev = json.loads((committed(tmp_path / "run0" / "10_quality") / "eval.json").read_text())
    assert ev["heldout"]["fasttext"]["roc_auc"] > 0.7
    assert set(m["score_histograms"]) == {"edges", "common_crawl"}
    stage = committed(tmp_path / "run0" / "10_quality")
    docs, rej = read_shards(str(stage / "data")), read_shards(str(stage / "rejected"))
    cc = docs.filter(pc.equal(docs["source"], "common_crawl"))
    assert cc["quality_score"].null_count == 0 and docs.filter(pc.equal(docs["source"], "wikipedia"))["quality_score"].null_count > 0
    assert rej["score"].null_count == 0
    # the classifier ranks the planted kinds: crawl prose above spam, junk and boilerplate
    truth = json.loads((demo_corpus / "truth.json").read_text())["cc_kinds"]
    scores = {}
    for t, col in ((cc, "quality_score"), (rej, "score")):
        for i, s in zip(t["id"].to_pylist(), t[col].to_pylist()):
            scores.setdefault(truth.get(i.removeprefix("urn:uuid:")), []).append(s)
    mean = {k: sum(v) / len(v) for k, v in scores.items()}
    assert mean["prose"] > 1.5 * max(mean["spam"], mean["boilerplate"])
    assert mean["prose"] > mean["junk"]  # random hex and numbers: mostly words fastText never saw
    # reuse the trained model: same output, no training
    cfg = _demo_cfg(tmp_path / "reuse", demo_corpus, model=str(stage / "model"))
    run_stage("ingest", cfg, log=_quiet)
    logs = []
    run_stage("quality", cfg, log=logs.append, progress=False)
    assert any("using the trained model" in x for x in logs)
    assert parquet_bytes(tmp_path / "reuse" / "10_quality") == {k: v for k, v in outs[0].items() if k != "model.bin"}


def test_heuristics_and_score_mode(ray_local, demo_corpus, tmp_path):
    cfg = _demo_cfg(tmp_path / "h", demo_corpus, heuristics={"enabled": True})
    run_stage("ingest", cfg, log=_quiet)
    c = run_stage("quality", cfg, log=_quiet, progress=False)["counts"]
    assert any(r.startswith("heuristic:") for r in c["rejected_by_reason"])
    assert c["in"] == c["kept"] + c["rejected"]
    m = run_stage("quality_score", cfg, log=_quiet, progress=False)
    assert m["counts"]["rejected"] == 0 and m["stage"] == "quality_score"
    docs = read_shards(str(committed(os.path.join(cfg.run_dir, "10_quality_scored")) / "data"))
    assert docs.filter(pc.equal(docs["source"], "common_crawl"))["quality_score"].null_count == 0


def test_embedding_and_stacked_scorers_offline(ray_local, tmp_path, monkeypatch):
    """The sentence-transformers scorer loads the installed all-MiniLM-L6-v2 with no network."""
    from siftmix.filters.quality import QualityModel
    from siftmix.pipeline.demo import generate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = tmp_path / "small"
    generate(str(corpus), 1_200_000, seed=2)
    cfg = _demo_cfg(tmp_path / "emb", corpus, scorer="both",
                    train={"max_docs_per_class": 400, "heldout_fraction": 0.2},
                    embedding={"reference_docs": 60, "calibration_docs": 40, "n_centroids": 4, "max_seq_length": 64})
    run_stage("ingest", cfg, log=_quiet)
    m = run_stage("quality", cfg, workers=1, log=_quiet, progress=False)
    assert set(m["eval"]) == {"fasttext", "embedding", "both"}
    assert m["eval"]["embedding"]["roc_auc"] > 0.6 and m["eval"]["both"]["roc_auc"] > 0.6
    c = m["counts"]
    assert c["in"] == c["kept"] + c["rejected"]
    model_dir = committed(Path(cfg.run_dir) / "10_quality") / "model"
    assert (model_dir / "centroids.npy").exists()
    import pyarrow as pa

    qm = QualityModel(str(model_dir), "embedding")
    s = qm.score(pa.array(["In 1850, Grant founded a quiet library in Ashford. The river crossed the valley.",
                           "BEST CASINO ONLINE!!! cheap slots free bonus click here now 9f8e7d6c"], pa.large_string()))
    assert s.dtype.name == "float32" and s[0] > s[1]


def test_real_reference_vs_crawl(ray_local, shared_data, tmp_path):
    """GPT-3 appendix A on real text: reference/ (Wikipedia, books, news) against cc/ (raw web pages)."""
    ref = sorted(str(p) for p in (shared_data / "reference").glob("*.jsonl.gz"))
    cc = sorted(str(p) for p in (shared_data / "cc").glob("*.jsonl.gz") if "dclm" not in p.name)
    cfg = config_from_dict({"run_dir": str(tmp_path / "real"), "stages": ["ingest", "quality"], "sources": [
        {"name": "reference", "paths": ref}, {"name": "common_crawl", "paths": cc, "filter": True}],
        "ingest": {"min_chars": 200}, "quality": {"train": {"max_docs_per_class": 3000}}})
    run_stage("ingest", cfg, log=_quiet)
    m = run_stage("quality", cfg, log=_quiet, progress=False)
    ev = m["eval"]["fasttext"]
    assert ev["roc_auc"] > 0.9, ev
    c = m["counts"]["by_source"]["common_crawl"]
    assert c["in"] == c["kept"] + c["rejected"] and c["kept"] < c["in"]


def test_cli_quality_commands(tmp_path, demo_corpus):
    cfgp = tmp_path / "q.yaml"
    cfgp.write_text(f"""run_dir: {tmp_path / 'run'}
stages: [ingest, quality]
sources:
  - {{name: common_crawl, paths: {demo_corpus / 'cc'}, filter: true}}
  - {{name: books2, paths: {demo_corpus / 'books2'}}}
""")
    r = run_cli("quality", "train", cfgp, "-o", tmp_path / "model")
    assert r.returncode == 0, r.stderr
    assert "held-out ROC AUC" in r.stderr and (tmp_path / "model" / "eval.json").exists()
    r = run_cli("quality", "filter", cfgp, "--model", tmp_path / "model", "--scorer", "nonsense")
    assert r.returncode == 2 and "--scorer" in r.stderr
    r = run_cli("quality", "filter", cfgp, "--model", tmp_path / "model")
    assert r.returncode == 0, r.stderr
    assert "using the trained model" in r.stderr
    m = json.loads((tmp_path / "run" / "10_quality" / "_manifest.json").read_text())
    assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
