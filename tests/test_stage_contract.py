"""The stage contract: the import rule (an ast scan of every import), and a toy stage that is
registered with one line and runs through `siftmix run`, its own command and the report."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from conftest import REPO, committed, demo_sources

#: folder -> the package it is installed as
PACKAGES = {"pipeline/core": "siftmix.pipeline.core", "pipeline/ingest": "siftmix.pipeline.ingest",
            "filters": "siftmix.filters", "dedup": "siftmix.dedup", "contamination": "siftmix.contamination",
            "mixing": "siftmix.mixing"}
STAGE_PACKAGES = [p for p in PACKAGES.values() if p != "siftmix.pipeline.core"]


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, at any depth (function-level too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from x import y`: y may be a module
    return out


def _violations() -> list[str]:
    bad = []
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            own = package
            for line, mod in _imports(path, package):
                if not mod.startswith("siftmix"):
                    continue
                where = f"{path.relative_to(REPO)}:{line} imports {mod}"
                if mod.startswith(own + ".") or mod == own:
                    continue
                if package == "siftmix.pipeline.core":
                    if mod != "siftmix.__version__":
                        bad.append(f"{where} (the core imports nothing of siftmix outside itself)")
                elif not mod.startswith("siftmix.pipeline.core."):
                    bad.append(f"{where} (a stage package imports only siftmix.pipeline.core)")
    return bad


def test_import_rule():
    assert _violations() == []


def test_import_rule_catches_a_violation(tmp_path, monkeypatch):
    """The scan sees function-level and relative imports (so the rule test can fail)."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from ..filters.scoring import hash01\n    import siftmix.pipeline.runner\n")
    assert [m for _, m in _imports(f, "siftmix.dedup")] == ["siftmix.filters.scoring.hash01", "siftmix.pipeline.runner"]
    pkg = tmp_path / "repo" / "mixing"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text("from siftmix.dedup.lsh import band_keys\nfrom siftmix.pipeline.core.hashing import hash01\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path / "repo")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", {"mixing": "siftmix.mixing"})
    assert _violations() == ["mixing/bad.py:1 imports siftmix.dedup.lsh.band_keys (a stage package imports only siftmix.pipeline.core)"]


def test_registry_drives_config_cli_and_report():
    from siftmix.pipeline import registry
    from siftmix.pipeline.cli import app
    from siftmix.pipeline.config import RunConfig
    from siftmix.pipeline.report import stage_folders

    names = registry.names()
    assert names == ["ingest", "langid", "quality", "dedup", "decontam", "mix"]
    assert {st.config_key for st in registry.STAGES} <= set(RunConfig.model_fields)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert set(names) <= commands and "audit" in commands
    assert [f for f, _ in stage_folders()] == sorted(f for f, _ in stage_folders())


@pytest.fixture
def toy(ray_local):
    import toy_stage
    from siftmix.pipeline import registry

    ray_local.cloudpickle.register_pickle_by_value(toy_stage)  # workers cannot import tests/
    registry.register(toy_stage.TOY, after="dedup")  # the one registry line, made at run time
    yield toy_stage
    registry.unregister("toy")


@pytest.mark.integration
def test_toy_stage_runs_through_siftmix_run(toy, demo_corpus, tmp_path):
    from siftmix.pipeline import cli
    from siftmix.pipeline.config import ConfigError, config_from_dict
    from typer.testing import CliRunner

    run_dir = tmp_path / "run"
    cfg = {"run_dir": str(run_dir), "stages": ["ingest", "toy", "mix"], "sources": demo_sources(demo_corpus),
           "ingest": {"min_chars": 50}, "toy": {"min_words": 120},
           "mix": {"shard_tokens": 200_000, "max_epochs": 100}}
    path = tmp_path / "toy.yaml"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="toy.min_words"):  # its config section is validated like any other
        config_from_dict({**cfg, "toy": {"min_words": -1}}, where="x")
    cli.add_stage_commands()
    runner = CliRunner()
    r = runner.invoke(cli.app, ["run", str(path)])
    assert r.exit_code == 0, r.output
    ingest, toy_m, mix = (json.loads((run_dir / d / "_manifest.json").read_text()) for d in ("00_ingest", "25_toy", "40_mix"))
    c = toy_m["counts"]
    assert toy_m["input_stage"] == "ingest" and mix["input_stage"] == "toy"  # the stage before it feeds each stage
    assert c["in"] == ingest["counts"]["kept"] == c["kept"] + c["rejected"] and c["rejected_by_reason"]["toy_short"] > 0
    assert all(s["in"] == s["kept"] + s["rejected"] for s in c["by_source"].values())
    names_in = {p.name for p in (committed(run_dir / "00_ingest") / "data").iterdir()}
    assert {p.name for p in (committed(run_dir / "25_toy") / "data").iterdir()} <= names_in  # shard names do not grow
    assert mix["counts"]["by_source"]["webtext2"]["pieces_in"] > 0
    page = (run_dir / "report.html").read_text()
    assert 'id="25_toy"' in page and 'id="toy-note"' in page and "toy_short" in page
    r = runner.invoke(cli.app, ["toy", str(path)])  # its own command, from the registry
    assert r.exit_code == 0 and "toy: finished earlier, skipped" in r.output, r.output
    r = runner.invoke(cli.app, ["toy", "--help"])
    assert r.exit_code == 0 and "toy.min_words" in r.output
