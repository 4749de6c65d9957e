"""Language identification (filters/langid.py): the pure batch function, its config, its agreement
with the `lang` field of the real crawl pages, and the stage through `siftmix run` and `trace`."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import committed
from siftmix.filters.langid import LangidConfig, detector, langid_batch

EN = ("The committee met on Tuesday to discuss the new budget for the city's public schools. Several "
      "members argued that the money should go to teachers rather than to new buildings, and the vote was postponed.")
DE = ("Der Ausschuss traf sich am Dienstag, um den neuen Haushalt für die öffentlichen Schulen der Stadt zu "
      "besprechen. Mehrere Mitglieder meinten, das Geld solle eher den Lehrern zugutekommen als neuen Gebäuden.")
ZH = "委员会星期二开会讨论了城市公立学校的新预算。几位成员认为这笔钱应该用于教师而不是新建筑，投票被推迟了。"


def _table(texts):
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "source": ["cc"] * len(texts),
                     "text": pa.array(texts, pa.large_string()), "meta": pa.nulls(len(texts), pa.string())})


def test_keep_and_reasons_with_scores():
    t = _table([EN, DE, ZH, "12345 67890 !!! ???", EN + "\x00\x01 control"])
    kept, rej = langid_batch(t, LangidConfig(keep=["en"], min_score=0.5), detector())
    assert kept["id"].to_pylist() == ["d0", "d4"]
    assert rej["id"].to_pylist() == ["d1", "d2", "d3"]
    assert rej["reason"].to_pylist() == ["language:de", "language:zh", "language:un"]
    s = rej["score"].to_pylist()
    assert s[0] > 0.9 and s[1] > 0.9 and s[2] == 0.0
    assert kept.schema == t.schema and kept.num_rows + rej.num_rows == t.num_rows
    # two languages kept; a mixed document below min_score is rejected with its top language
    kept, rej = langid_batch(t, LangidConfig(keep=["en", "de"]), detector())
    assert kept["id"].to_pylist() == ["d0", "d1", "d4"]
    mixed = _table([EN + " " + DE])
    assert langid_batch(mixed, LangidConfig(keep=["en", "de"], min_score=0.5), detector())[0].num_rows == 1
    kept, rej = langid_batch(mixed, LangidConfig(keep=["en", "de"], min_score=0.9), detector())
    assert kept.num_rows == 0 and rej["reason"][0].as_py() in ("language:en", "language:de")
    assert 0.3 < rej["score"][0].as_py() < 0.9


def test_config_codes():
    assert LangidConfig(keep=["EN", " de "]).keep == ["en", "de"]
    with pytest.raises(ValueError, match="not a language code"):
        LangidConfig(keep=["english!"])
    with pytest.raises(ValueError):
        LangidConfig(keep=["en"], min_score=1.5)


def test_agrees_with_the_lang_field_of_real_crawl_pages(shared_data):
    """Every page of ../shared/data/cc with a `lang` (3,245; set by resiliparse when the files were
    made, another model, not a human label): measured agreement 0.989, English precision 0.991
    (bench/bench_langid.py); the test holds it to 0.98."""
    docs = []
    for f in sorted((shared_data / "cc").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            docs += [d for d in map(json.loads, fh) if d.get("lang") and len(d["lang"]) == 2 and d.get("text")]
    assert len(docs) > 3000
    t = _table([d["text"] for d in docs])
    kept, rej = langid_batch(t, LangidConfig(keep=["en"], min_score=0.0), detector())
    pred = dict.fromkeys(kept["id"].to_pylist(), "en") | dict(zip(rej["id"].to_pylist(),
                                                                  (r.split(":")[1] for r in rej["reason"].to_pylist())))
    gold = {f"d{i}": d["lang"] for i, d in enumerate(docs)}
    agree = sum(pred[k] == g for k, g in gold.items()) / len(gold)
    tp = sum(pred[k] == "en" and g == "en" for k, g in gold.items())
    assert agree >= 0.98 and tp / kept.num_rows >= 0.98 and tp / sum(g == "en" for g in gold.values()) >= 0.98


@pytest.mark.integration
def test_stage_in_a_run_and_in_trace(ray_local, tmp_path):
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.runner import run_stage
    from siftmix.pipeline.trace import trace

    src = tmp_path / "cc"
    src.mkdir()
    rows = [{"id": f"en-{i}", "text": f"{EN} Item {i}."} for i in range(6)] + \
           [{"id": f"de-{i}", "text": f"{DE} Punkt {i}."} for i in range(3)]
    (src / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "wiki.jsonl").write_text(json.dumps({"id": "w-de", "text": DE}) + "\n")
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "stages": ["ingest", "langid"],
                            "sources": [{"name": "common_crawl", "paths": [str(src)], "filter": True},
                                        {"name": "wikipedia", "paths": [str(tmp_path / "wiki.jsonl")]}],
                            "ingest": {"min_chars": 50}, "langid": {"keep": ["en"], "min_score": 0.5}})
    run_stage("ingest", cfg, log=lambda *_: None)
    m = run_stage("langid", cfg, log=lambda *_: None, progress=False)
    c = m["counts"]
    assert (c["in"], c["kept"], c["rejected_by_reason"]) == (10, 7, {"language:de": 3})  # wikipedia is not checked
    assert m["input_stage"] == "ingest" and m["config"]["langid"]["keep"] == ["en"]
    rej = pq.read_table(committed(tmp_path / "run" / "05_langid") / "rejected")
    assert sorted(rej["id"].to_pylist()) == ["de-0", "de-1", "de-2"] and min(rej["score"].to_pylist()) > 0.9
    t = trace(str(tmp_path / "run"), "de-1")
    step = {s["stage"]: s for s in t["stages"]}["langid"]
    assert step["status"] == "rejected" and step["reason"] == "language:de" and step["score"] > 0.9
    # without langid.keep the stage is off by default; listed without it is a config error
    from siftmix.pipeline import registry

    off = config_from_dict({"run_dir": str(tmp_path / "r2"), "stages": ["ingest"], "sources": cfg.model_dump()["sources"]})
    assert registry.get("langid").enabled_by_default(cfg) and not registry.get("langid").enabled_by_default(off)
    with pytest.raises(ValueError, match="langid.keep"):
        config_from_dict({"run_dir": str(tmp_path / "r3"), "stages": ["ingest", "langid"],
                          "sources": cfg.model_dump()["sources"]})
