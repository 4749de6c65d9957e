"""Behaviour check for refactors: the sha256 of every output file of two whole runs.

    python tests/golden_check.py record tests/golden/baseline.json   # on the code before a change
    python tests/golden_check.py check  tests/golden/baseline.json   # after it: exit 1 on any difference
    make golden                                                      # the same as `check`

The two runs (all five stages, 2 workers, a local Ray):
- ``demo``: the 10 MB demo corpus (``siftmix demo-data --size 10MB --seed 0``);
- ``shared``: a corpus built from ``../shared/data`` (Common Crawl WET + WARC, news, books,
  Wikipedia excerpts) with the 14 benchmark sets, so decontam cuts real benchmark text.

Hashed: every file under ``data/``, ``rejected/``, ``clusters/`` and the mix ``shards/``
(.parquet, .bin, .idx), each stage's ``audit.json`` (without timings), and each manifest's
``counts`` (canonical JSON). Shard names are compared after :func:`canonical_name`, the
project's shard naming rule (``<source>-<file#>-<part>.parquet`` whatever the stage; before it,
every stage appended one ``-0000``): the mapping must be one to one, else the check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIFTMIX_SHARED_DATA", REPO.parent / "shared" / "data"))
HASHED_DIRS = ("data", "rejected", "clusters", "shards")

_GROWN = re.compile(r"^(?P<base>.+?-\d{5}-\d{4})(?:-\d{4})+(?P<ext>\.parquet)$")


def canonical_name(name: str) -> str:
    """``webtext2-00001-0000-0000-0000.parquet`` (one ``-0000`` per stage) -> ``webtext2-00001-0000.parquet``."""
    m = _GROWN.match(name)
    return m.group("base") + m.group("ext") if m else name


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _drop_timings(obj):
    if isinstance(obj, dict):
        return {k: _drop_timings(v) for k, v in obj.items() if not k.endswith("_s") and k not in ("timings", "generated")}
    if isinstance(obj, list):
        return [_drop_timings(v) for v in obj]
    return obj


def canonical_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_hashes(run_dir: Path) -> dict[str, str]:
    """{stage/dir/canonical file name: sha256} plus {stage/_manifest.json#counts: hash}."""
    out: dict[str, str] = {}
    for stage in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        m = stage / "_manifest.json"
        if not m.exists():
            continue
        manifest = json.loads(m.read_text())
        out[f"{stage.name}/_manifest.json#counts"] = canonical_json(manifest["counts"])
        for sub in HASHED_DIRS:
            folder = stage / manifest.get("attempt", ".") / sub
            if not folder.is_dir():
                continue
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(folder)
                    key = f"{stage.name}/{sub}/{rel.parent / canonical_name(rel.name)}".replace("/./", "/")
                    if key in out:
                        raise SystemExit(f"golden: two files map to {key} (the naming rule is not one to one)")
                    out[key] = sha256(f)
        audit = stage / manifest.get("attempt", ".") / "audit.json"  # the committed attempt's
        if audit.exists():
            out[f"{stage.name}/audit.json"] = canonical_json(_drop_timings(json.loads(audit.read_text())))
    return out


def _siftmix(*args: str) -> None:
    cmd = [sys.executable, "-m", "siftmix.pipeline.cli", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"golden: {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def _write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def demo_config(work: Path) -> Path:
    """configs/demo.yaml (what `make demo` runs) over a 10 MB demo corpus in ``work``."""
    import yaml

    corpus = work / "demo-corpus"
    if not (corpus / "demo.yaml").exists():
        _siftmix("demo-data", str(corpus), "--size", "10MB", "--seed", "0")
    text = (REPO / "configs" / "demo.yaml").read_text().replace("../demo/corpus", str(corpus))
    cfg = yaml.safe_load(text)
    cfg["run_dir"] = str(work / "runs" / "demo")
    return _write_config(work / "demo.yaml", cfg)


def shared_config(work: Path) -> Path:
    d = SHARED
    cfg = {
        "run_dir": str(work / "runs" / "shared"),
        "seed": 0,
        "sources": [
            {"name": "common_crawl", "filter": True, "paths": [
                str(d / "cc/raw/whirlwind.CC-MAIN-2024-22.warc.wet.gz"),
                str(d / "cc/raw/resiliparse_tests_warcfile.CC-MAIN-2020-34.warc.gz"),
                str(d / "cc/web_pages_dragnet.jsonl.gz"), str(d / "cc/web_pages_cleaneval_final.jsonl.gz"),
                str(d / "lowquality/gpt3_175b_unconditional_samples.jsonl.gz")]},
            {"name": "webtext2", "paths": [str(d / "reference/news_bbc_2004_2005.jsonl.gz"),
                                           str(d / "reference/news_reuters21578_test.jsonl.gz"),
                                           str(d / "reference/news_lee_abc.jsonl.gz"),
                                           str(d / "neardup/plagiarism_clough_stevenson_docs.jsonl.gz")]},
            {"name": "books1", "paths": [str(d / "reference/books_gutenberg.jsonl.gz")]},
            {"name": "books2", "paths": [str(d / "neardup/gutenberg_editions_docs.jsonl.gz")]},
            {"name": "wikipedia", "paths": [str(d / "reference/wikipedia_enwiki_dump_excerpt.jsonl.gz"),
                                            str(d / "reference/wikipedia_wikitext2_valid_test.jsonl.gz")]},
        ],
        "quality": {"train": {"max_docs_per_class": 2000}},
        "decontam": {"benchmarks": [str(d / "benchmarks")]},
        "mix": {"shard_tokens": 2_000_000},
        "ray": {"num_cpus": 2},
    }
    return _write_config(work / "shared.yaml", cfg)


def collect(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, make in (("demo", demo_config), ("shared", shared_config)):
        if name == "shared" and not SHARED.is_dir():
            raise SystemExit(f"golden: {SHARED} is absent (the shared run needs it)")
        cfg = make(work)
        print(f"golden: siftmix run {cfg} --force", flush=True)
        _siftmix("run", str(cfg), "--force")
        out[name] = run_hashes(work / "runs" / name)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["record", "check"])
    ap.add_argument("baseline", type=Path)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "golden",
                    help="corpora and runs go here (the same absolute path for record and check)")
    a = ap.parse_args(argv)
    got = collect(a.work.resolve())
    if a.mode == "record":
        a.baseline.parent.mkdir(parents=True, exist_ok=True)
        a.baseline.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"golden: recorded {sum(map(len, got.values()))} hashes in {a.baseline}")
        return 0
    want = json.loads(a.baseline.read_text())
    bad = 0
    for run in sorted(set(want) | set(got)):
        w, g = want.get(run, {}), got.get(run, {})
        for key in sorted(set(w) | set(g)):
            if w.get(key) != g.get(key):
                bad += 1
                what = "missing" if key not in g else "new" if key not in w else "differs"
                print(f"golden: {run}: {key}: {what}")
    n = sum(map(len, want.values()))
    print(f"golden: {n - bad if bad <= n else 0} of {n} hashes equal" + (f"; {bad} differences" if bad else " (all)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
