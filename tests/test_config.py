from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli
from siftmix.pipeline.config import ConfigError, config_from_dict, load_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "hello"}\n')
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


GOOD = """
run_dir: out
stages: [ingest]
sources:
  - name: web
    paths: data/*.jsonl
"""


def test_good_config_resolves_paths_relative_to_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.run_dir == str(tmp_path / "out")
    assert cfg.sources[0].paths == [str(tmp_path / "data" / "*.jsonl")]
    assert cfg.sources[0].format == "auto" and cfg.sources[0].filter is False
    assert cfg.ingest.min_chars == 100 and cfg.stages == ["ingest"]


@pytest.mark.parametrize(
    "text, expect",
    [
        (GOOD + "colour: red\n", "colour: unknown key"),
        (GOOD.replace("paths:", "pathz:"), "sources[0](web).pathz: unknown key"),
        (GOOD + "ingest:\n  min_chars: lots\n", "ingest.min_chars: Input should be a valid integer"),
        (GOOD.replace("data/*.jsonl", "nowhere/*.jsonl"), "sources[0](web).paths: no file matches 'nowhere/*.jsonl'"),
        (GOOD.replace("data/*.jsonl", "missing.jsonl"), "path does not exist: 'missing.jsonl'"),
        (GOOD + "  - name: web\n    paths: data\n", "source name 'web' appears twice"),
        (GOOD.replace("[ingest]", "[ingest, mix]"), "mix.weights: no weight for source(s) web"),
        (GOOD.replace("[ingest]", "[ingest, mix]") + "mix:\n  weights: {web: 0.5, books: 0.5}\n", "mix.weights: weight given to books"),
        (GOOD + "ingest:\n  on_bad_encoding: ignore\n", "ingest.on_bad_encoding: Input should be 'repair' or 'reject'"),
        ("run_dir: x\n", "sources: required key is missing"),
        ("sources: [\n", "invalid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, text, expect):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert expect in msg, msg
    assert str(p) in msg
    assert "\n" not in msg


def test_cli_exit_code_2_and_one_line_on_bad_config(tmp_path):
    p = write(tmp_path, GOOD + "colour: red\n")
    r = run_cli("run", p)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "colour: unknown key" in lines[0] and str(p) in lines[0], r.stderr
    r = run_cli("run", tmp_path / "nope.yaml")
    assert r.returncode == 2 and "file not found" in r.stderr


def test_shipped_example_configs_are_valid(tmp_path):
    """configs/gpt3.yaml names paths on a real cluster: check it with those paths made to exist."""
    for name in ("gpt3.yaml", "demo.yaml"):
        data = yaml.safe_load((REPO / "configs" / name).read_text())
        for i, s in enumerate(data["sources"]):
            f = tmp_path / name / f"src{i}.jsonl"
            f.parent.mkdir(exist_ok=True)
            f.write_text("")
            s["paths"] = [str(f)]
        if "decontam" in data:
            data["decontam"]["benchmarks"] = [str(tmp_path)]
        cfg = config_from_dict(data, base_dir=tmp_path, where=name)
        assert [s.name for s in cfg.sources] == ["common_crawl", "webtext2", "books1", "books2", "wikipedia"]
        assert [s.filter for s in cfg.sources] == [True, False, False, False, False]


def test_validate_prints_defaults(tmp_path):
    r = run_cli("validate", write(tmp_path, GOOD))
    assert r.returncode == 0, r.stderr
    assert "min_chars: 100" in r.stdout and "on_bad_encoding: repair" in r.stdout
