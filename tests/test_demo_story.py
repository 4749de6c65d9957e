"""The 10 MB demo tells GPT-3's story (issue 18): `make demo`'s corpus (seed 0) run with
configs/demo.yaml. The figures the README shows are asserted here."""

from pathlib import Path

import pytest
import yaml
from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_story(ray_local, tmp_path_factory):
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.demo import generate, story
    from siftmix.pipeline.runner import run_pipeline

    base = tmp_path_factory.mktemp("demo10")
    corpus = base / "corpus"
    generate(str(corpus), 10_000_000, seed=0)  # `siftmix demo-data demo/corpus --size 10MB`
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw["run_dir"] = str(base / "run")
    for s in raw["sources"]:  # the config's paths, pointed at this corpus
        s["paths"] = str(corpus / Path(s["paths"]).relative_to("../demo/corpus"))
    raw["decontam"]["benchmarks"] = [str(corpus / "benchmarks")]
    run_pipeline(config_from_dict(raw), log=lambda *_: None)
    return story(str(base / "run"), str(corpus))


def test_classifier_and_quality_filter(demo_story):
    s = demo_story
    assert s["classifier"]["roc_auc"] >= 0.95 and s["classifier"]["heldout_examples"] >= 50
    assert s["good_crawl"]["in"] >= 150 and s["good_crawl"]["share_kept"] >= 0.5
    assert s["crawl_junk"]["in"] >= 3000 and s["crawl_junk"]["share_kept"] <= 0.02


def test_crawl_duplicates_survive_quality_and_dedup_finds_them(demo_story):
    s = demo_story
    assert s["crawl_duplicates_surviving_quality"] >= 10 and s["crawl_duplicates_at_threshold"] >= 10
    assert s["crawl_duplicates_found"] == s["crawl_duplicates_at_threshold"]  # every one at Jaccard >= 0.8
    assert s["crawl_pairs_below_threshold_joined"] == 0
    assert any(p["kind"] == "near_duplicates" and p["edit_rate"] > 0 for p in s["duplicate_pairs"])


def test_planted_contamination_found(demo_story):
    s = demo_story
    assert s["contamination_reached_decontam"] >= 15
    assert s["contamination_found"] == s["contamination_reached_decontam"]
    # some planted passages sat in crawl pages that quality dropped: they never reach decontam
    assert s["contamination_reached_decontam"] < s["contamination_planted"]


def test_mix_sees_the_crawl_less_than_once_and_small_sources_several_times(demo_story):
    e = demo_story["epochs"]
    assert e["common_crawl"] < 1 and e["books2"] < 1  # GPT-3: 0.44 and 0.43
    assert e["webtext2"] >= 2 and e["wikipedia"] >= 2 and e["books1"] > 1  # GPT-3: 2.9, 3.4, 1.9
    assert max(e.values()) <= 3.5 + 1e-6  # mix.max_epochs of configs/demo.yaml
