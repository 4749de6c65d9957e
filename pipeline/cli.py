"""The ``siftmix`` command line.

``run``, ``validate``, ``report``, ``demo-data``, and one command per registered stage: stages
with options of their own (``ingest --input``, ``quality train|filter|score``, ``audit``) are
written here; every other stage gets ``siftmix <stage> CONFIG`` from the registry
(:func:`add_stage_commands`), its help from ``Stage.help``.

Exit codes: 0 ok, 1 failure (a stage could not finish), 2 usage (bad arguments or config).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import registry
from .config import FORMATS, config_from_dict, load_config
from .core import storage
from .core.errors import SiftmixError

app = typer.Typer(
    name="siftmix",
    help="siftmix: a GPT-3-style pretraining data pipeline on Ray.\n\n"
    "Ingest Common Crawl and curated sources, filter, deduplicate, decontaminate and mix them into "
    "training shards. Start with `siftmix demo-data demo/corpus` and `siftmix run configs/demo.yaml`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

err_console = Console(stderr=True)

# Arguments and options shared by the commands
ConfigArg = Annotated[Path, typer.Argument(help="run configuration (YAML)", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="recompute even if finished")]
AddressOpt = Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")]
WorkersOpt = Annotated[int | None, typer.Option(min=1, help="at most this many concurrent tasks (actors) per stage")]
ModelOpt = Annotated[Path | None, typer.Option(help="a trained model folder (default: train one)")]
ScorerOpt = Annotated[str | None, typer.Option(help="fasttext, embedding or both (default: the config's)")]


def _log(msg: str) -> None:
    err_console.print(msg, highlight=False, markup=False, soft_wrap=True)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def _fail(msg: str, code: int) -> None:
    msg = _ANSI.sub("", msg)  # Ray's messages carry terminal colours
    msg = " ".join(msg.split()) if "\n" in msg else msg  # one line
    err_console.print(f"error: {msg}", style="bold red" if err_console.is_terminal else None,
                      highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn):
    """Turn the errors a user can cause into one line and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SiftmixError as e:
            _fail(str(e), e.exit_code)
        except PermissionError as e:  # the OS's "Permission denied", or object storage's own words
            # EACCES ("Permission denied") and EPERM ("Operation not permitted": root on an immutable
            # folder) read the same to the user
            os_words = ("Permission denied", "Operation not permitted")
            why = e.strerror if e.strerror and e.strerror not in os_words else "permission denied"
            _fail(f"{why}: {e.filename or e}", 1)
        except OSError as e:
            _fail(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), 1)
        except KeyboardInterrupt:
            _fail("interrupted; rerun the same command to resume (finished stages are skipped)", 130)

    return wrapper


@app.command()
@guarded
def run(
    config: ConfigArg,
    force: ForceOpt = False,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
):
    """Run the pipeline described by CONFIG; finished stages are skipped (resume).

    Examples:

        siftmix run configs/demo.yaml

        siftmix run configs/gpt3.yaml --address ray://head:10001

        ray job submit -- siftmix run "$PWD/configs/gpt3.yaml"
    """
    from .runner import run_pipeline

    cfg = load_config(config)
    if until is not None and until not in cfg.stages:
        _fail(f"--until {until!r}: not one of the configured stages ({', '.join(cfg.stages)})", 2)
    run_pipeline(cfg, force=force, address=address, workers=workers, until=until, console=err_console, log=_log)
    print(cfg.run_dir)


@app.command()
@guarded
def ingest(
    config: Annotated[Path | None, typer.Argument(help="run configuration (YAML); or use --input", show_default=False)] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="file, folder or glob (repeatable)")] = None,
    source: Annotated[str, typer.Option(help="source name for --input")] = "common_crawl",
    fmt: Annotated[str, typer.Option("--format", help=f"input format for --input: {', '.join(FORMATS)}")] = "auto",
    out: Annotated[str | None, typer.Option("--out", "-o", help="output stage folder for --input (a path or s3:// / gs:// URL)")] = None,
    min_chars: Annotated[int | None, typer.Option(help="reject documents shorter than this")] = None,
    force: ForceOpt = False,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
):
    """Ingest raw files (WET, WARC, JSONL[.gz|.zst], Parquet, .txt folders) into Parquet documents.

    With CONFIG, runs the ingest stage of that run (into RUN_DIR/00_ingest). With --input, ingests
    the given files as one source into --out.

    Examples:

        siftmix ingest configs/demo.yaml

        siftmix ingest -i 'crawl/*.warc.wet.gz' --source common_crawl -o out/ingest

        siftmix ingest -i books/ --source books1 --format txt -o out/books
    """
    from .core.ray_runner import ray_session
    from .runner import run_stage

    if (config is None) == (not inputs):
        _fail("give either a CONFIG file or --input (and --out)", 2)
    if config is not None:
        cfg = load_config(config)
        out_dir = None
    else:
        if out is None:
            _fail("--input needs --out (the output folder)", 2)
        data = {"run_dir": str(out), "stages": ["ingest"], "sources": [{"name": source, "paths": inputs, "format": fmt}]}
        cfg = config_from_dict(data, base_dir=os.getcwd(), where="command line")
        out_dir = out if storage.is_url(out) else str(Path(out).absolute())
    if min_chars is not None:
        cfg.ingest.min_chars = min_chars
    with ray_session(cfg.ray, address=address, log=_log):
        m = run_stage("ingest", cfg, force=force, workers=workers, console=err_console, log=_log, out_dir=out_dir)
    print(out_dir or storage.join(cfg.run_dir, "00_ingest"))
    return m


quality_app = typer.Typer(
    help="The quality filter: train a classifier (reference vs crawl), score, filter (GPT-3 appendix A).",
    no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(quality_app, name="quality")


def _quality_cfg(config: Path, model: Path | None, scorer: str | None):
    if scorer is not None and scorer not in ("fasttext", "embedding", "both"):
        _fail(f"--scorer {scorer!r}: use fasttext, embedding or both", 2)
    cfg = load_config(config)
    if model is not None:
        data = {**cfg.quality.model_dump(), "model": str(model.absolute())}
        if scorer:
            data["scorer"] = scorer
        cfg.quality = config_from_dict({"sources": [s.model_dump() for s in cfg.sources], "quality": data,
                                        "stages": ["ingest", "quality"], "run_dir": cfg.run_dir},
                                       where=f"--model {model}").quality
    elif scorer:
        cfg.quality.scorer = scorer
    return cfg


@quality_app.command("train")
@guarded
def quality_train(
    config: ConfigArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="model folder (default RUN_DIR/quality-model)")] = None,
    scorer: ScorerOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
):
    """Train the quality classifier: curated sources (filter: false) against raw crawl (filter: true).

    Ingests first if needed. Writes model.bin, quality_model.json and eval.json (held-out ROC AUC,
    accuracy, precision/recall, score histograms) into the model folder.

    Examples:

        siftmix quality train configs/demo.yaml

        siftmix quality train configs/gpt3.yaml --scorer both -o models/gpt3-quality
    """
    from siftmix.filters.stage import train_quality

    from .core.ray_runner import ray_session
    from .runner import bare_context, run_through

    cfg = _quality_cfg(config, None, scorer)
    out_dir = str((out or Path(cfg.run_dir) / "quality-model").absolute())
    with ray_session(cfg.ray, address=address, log=_log):
        run_through(cfg, "ingest", workers=workers, console=err_console, log=_log)
        train_quality(bare_context("quality", cfg, workers=workers, log=_log), out_dir)
    print(out_dir)


def _quality_run(config: Path, model: Path | None, scorer: str | None, force: bool, address: str | None,
                 workers: int | None, drop: bool) -> None:
    cfg = _quality_cfg(config, model, scorer)
    _run_through(cfg, "quality" if drop else "quality_score", force, address, workers)


@quality_app.command("filter")
@guarded
def quality_filter(
    config: ConfigArg,
    model: ModelOpt = None,
    scorer: ScorerOpt = None,
    force: ForceOpt = False,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
):
    """Score the filtered sources and keep documents by the GPT-3 rule (the `quality` stage of a run).

    Writes RUN_DIR/10_quality: documents with quality_score, rejected/ (reason quality or
    heuristic:<rule>, with the score), eval.json, the model, and the manifest.

    Examples:

        siftmix quality filter configs/demo.yaml

        siftmix quality filter configs/gpt3.yaml --model models/gpt3-quality
    """
    _quality_run(config, model, scorer, force, address, workers, drop=True)


@quality_app.command("score")
@guarded
def quality_score(
    config: ConfigArg,
    model: ModelOpt = None,
    scorer: ScorerOpt = None,
    force: ForceOpt = False,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
):
    """Add quality_score to every document of the filtered sources, dropping nothing.

    Writes RUN_DIR/10_quality_scored (same layout as the filter stage, nothing rejected).

    Examples:

        siftmix quality score configs/demo.yaml --model runs/demo/10_quality/model
    """
    _quality_run(config, model, scorer, force, address, workers, drop=False)


def _with_stage(cfg, stage: str, where):
    """``cfg`` with ``stage`` in its stages (checked again: a missing section is exit 2)."""
    if stage in cfg.stages:
        return cfg
    data = cfg.model_dump()
    data["stages"] = [*cfg.stages, stage]
    return config_from_dict(data, where=str(where))


def _run_through(cfg, name: str, force: bool, address: str | None, workers: int | None) -> None:
    """The configured stages before ``name`` (skipped where finished), then it; print its folder."""
    from .core.ray_runner import ray_session
    from .runner import run_through, stage_dir

    with ray_session(cfg.ray, address=address, log=_log):
        run_through(cfg, name, force=force, workers=workers, console=err_console, log=_log)
    print(stage_dir(cfg, name))


def _stage_command(name: str):
    """``siftmix <stage> CONFIG``: the configured stages before it (skipped where finished), then it."""

    def command(config: ConfigArg, force: ForceOpt = False, address: AddressOpt = None, workers: WorkersOpt = None):
        _run_through(_with_stage(load_config(config), name, config), name, force, address, workers)

    command.__name__ = name
    command.__doc__ = registry.get(name).help
    return guarded(command)


@app.command("dedup")
@guarded
def dedup_command(
    config: ConfigArg,
    force: ForceOpt = False,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    against: Annotated[list[str] | None, typer.Option(
        "--against", help="deduplicate against the index of this run dir (or its 20_dedup folder); repeatable; "
                          "adds to dedup.against")] = None,
    update_index: Annotated[bool, typer.Option(
        "--update-index", help="this run's index extends the indexes it was deduplicated against "
                               "(dedup.update_index)")] = False,
):
    cfg = _with_stage(load_config(config), "dedup", config)
    if against or update_index:
        data = cfg.model_dump()
        data["dedup"]["against"] = [*data["dedup"]["against"], *(against or [])]
        data["dedup"]["update_index"] = data["dedup"]["update_index"] or update_index
        cfg = config_from_dict(data, base_dir=Path.cwd(), where=str(config))
    _run_through(cfg, "dedup", force, address, workers)


dedup_command.__doc__ = registry.get("dedup").help + """
        siftmix dedup new-dump.yaml --against runs/cc-2020-34 --update-index
"""

#: stages whose commands are written above (options of their own)
CUSTOM_COMMANDS = {"ingest", "quality", "quality_score", "audit", "dedup"}


def add_stage_commands() -> None:
    """One ``siftmix <stage> CONFIG`` per registered stage without a command yet (idempotent)."""
    have = {c.name or c.callback.__name__ for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for st in registry.STAGES:
        if st.name not in have and st.name not in CUSTOM_COMMANDS:
            app.command(st.name)(_stage_command(st.name))


@app.command()
@guarded
def audit(
    config: Annotated[Path | None, typer.Argument(help="run configuration (YAML); or use --input", show_default=False)] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="dataset files or folders (JSONL, Parquet, ...)")] = None,
    benchmarks: Annotated[list[str] | None, typer.Option("--benchmarks", "-b", help="benchmark files or folders")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="output folder for --input (a path or s3:// / gs:// URL)")] = None,
    scores: Annotated[list[str] | None, typer.Option("--scores", "-s", help="per-example evaluation results (lm-eval "
                      "--log_samples files or {benchmark, id, score} JSONL; files, folders, globs; BENCHMARK=PATH names the "
                      "benchmark; repeatable): Table C.1")] = None,
    index: Annotated[str | None, typer.Option("--index", help="audit against an index (siftmix index build) "
                     "instead of reading the data; needs --benchmarks and --out")] = None,
    force: ForceOpt = False, address: AddressOpt = None, workers: WorkersOpt = None,
):
    """Report which benchmark examples occur in a dataset; never changes the data.

    With CONFIG, audits the output of the stage before decontam (into RUN_DIR/30_audit). With
    --input, audits any dataset: it is read into OUT/00_ingest and reported in OUT/30_audit.
    With --input RUN_DIR/40_mix, audits the training mix itself (its shards, repeats included:
    a dirty example counts once per epoch in which it is seen); any finished stage folder
    (RUN_DIR/20_dedup, ...) is read where it is too. With --scores, the report gives
    the scores on all, dirty and clean examples (GPT-3 Table C.1, Figure 4.2). Clean subsets of
    every benchmark are written beside the report (clean/, dirty/).

    Examples:

        siftmix audit configs/demo.yaml

        siftmix audit -i my_corpus/ -b ../shared/data/benchmarks -o audit-out

        siftmix audit -i runs/demo/40_mix -b demo/corpus/benchmarks -o audit-mix

        siftmix audit configs/demo.yaml --scores lm-eval-out/ --scores more_scores.jsonl

        siftmix audit -b demo/corpus/benchmarks --index runs/demo-index -o audit-index
    """
    if index is not None:
        if config is not None or inputs or not benchmarks or out is None:
            _fail("--index needs --benchmarks and --out (and no CONFIG or --input)", 2)
        inputs = [index]
    if (config is None) == (not inputs):
        _fail("give either a CONFIG file or --input, --benchmarks and --out", 2)
    if config is not None:
        cfg = load_config(config)
        if not cfg.decontam.benchmarks:
            _fail(f"config error in {config}: decontam.benchmarks is empty (which benchmarks to check?)", 2)
    else:
        if not benchmarks or out is None:
            _fail("--input needs --benchmarks and --out", 2)
        cfg = config_from_dict({"run_dir": str(out), "stages": ["ingest", "decontam"],
                                "sources": [{"name": "dataset", "paths": inputs}],
                                "ingest": {"min_chars": 1}, "decontam": {"benchmarks": benchmarks}},
                               base_dir=os.getcwd(), where="command line")
    if scores:  # added to the config's decontam.scores (relative paths: from the current folder)
        data = cfg.model_dump()
        data["decontam"]["scores"] = [*data["decontam"]["scores"], *scores]
        cfg = config_from_dict(data, base_dir=os.getcwd(), where="--scores")
    from siftmix.contamination.stage import FolderAuditStage, is_stage_folder

    from .core.manifest import stage_path
    from .core.ray_runner import ray_session
    from .runner import run_stage, run_through, stage_dir

    cfg = _with_stage(cfg, "decontam", config or "command line")
    folder = inputs[0] if inputs and len(inputs) == 1 and is_stage_folder(inputs[0]) else None
    with ray_session(cfg.ray, address=address, log=_log):
        if index is not None:  # the benchmark side against a built index (the training text is not read)
            from siftmix.contamination.index import IndexAuditStage

            m = run_stage(IndexAuditStage(index), cfg, force=force, workers=workers, console=err_console, log=_log)
        elif folder is not None:  # a finished stage folder (RUN_DIR/40_mix: the training mix): read where it is
            m = run_stage(FolderAuditStage(folder), cfg, force=force, workers=workers, console=err_console, log=_log)
        else:
            m = run_through(cfg, "audit", force=force, workers=workers, console=err_console, log=_log)
    print(stage_path(stage_dir(cfg, "audit"), m, "audit.html"))


index_app = typer.Typer(help="A persisted n-gram index of a finished stage (for `siftmix audit --index`).",
                        no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(index_app, name="index")


@index_app.command("build")
@guarded
def index_build(
    run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="a run folder (a path or URL)", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="the index folder (a path or s3:// URL)", show_default=False)],
    stage: Annotated[str, typer.Option(help="the stage whose documents are indexed (mix: each document once)")] = "mix",
    sizes: Annotated[str, typer.Option(help="n-gram sizes, e.g. 8-13 or 13 (13 is always indexed)")] = "8-13",
    partitions: Annotated[int, typer.Option(help="hash-prefix partitions (a power of two)")] = 16,
    force: ForceOpt = False, address: AddressOpt = None, workers: WorkersOpt = None,
):
    """Index every n-gram (GPT-3 appendix C words) of a finished stage's documents.

    Each n-gram is a 64-bit hash (the hash the audit uses) with its document (shard, row, id)
    and character offset, sorted and partitioned by hash prefix into memory-mappable .npy files.
    Rebuilding against an unchanged stage is skipped. `siftmix audit -b BENCH --index INDEX`
    then audits benchmarks without reading the training text.

    Examples:

        siftmix index build runs/demo -o runs/demo-index

        siftmix index build s3://bucket/runs/cc --stage decontam -o s3://bucket/index/cc
    """
    from pydantic import ValidationError
    from siftmix.contamination.index import IndexConfig, IndexStage

    from .core.ray_runner import ray_session
    from .runner import run_stage

    try:
        st = registry.get(stage)
    except KeyError as e:
        _fail(f"--stage: {e.args[0]}", 2)
    try:
        lo, _, hi = sizes.partition("-")
        conf = IndexConfig(sizes=list(range(int(lo), int(hi or lo) + 1)), partitions=partitions)
    except (ValueError, ValidationError) as e:
        _fail(f"--sizes/--partitions: {str(e).splitlines()[0] if not isinstance(e, ValidationError) else e.errors()[0]['msg']}", 2)
    cfg = config_from_dict({"run_dir": str(storage.dirname(out.rstrip("/"))), "stages": ["ingest"],
                            "sources": [{"name": "run", "paths": [run_dir]}]},
                           base_dir=os.getcwd(), where="command line")
    with ray_session(cfg.ray, address=address, log=_log):
        run_stage(IndexStage(storage.join(run_dir, st.folder), conf), cfg, force=force, workers=workers,
                  console=err_console, log=_log, out_dir=out.rstrip("/"))
    print(out)


@app.command()
@guarded
def serve(
    index: Annotated[str, typer.Argument(metavar="INDEX", help="a built index (siftmix index build; a path or URL)",
                                         show_default=False)],
    host: Annotated[str, typer.Option(help="address to bind (loopback unless told otherwise)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    max_contains_bytes: Annotated[int, typer.Option(min=1, help="largest /v1/contains body (413 above)")] = 1 << 20,
    max_audit_bytes: Annotated[int, typer.Option(min=1, help="largest /v1/audit body (413 above)")] = 64 << 20,
):
    """Serve a read-only contamination lookup over a built n-gram index (FastAPI + uvicorn).

    `GET /` is a page to paste text into and see the 13-grams found in the training data;
    `POST /v1/contains` {"text": ...} answers with the matching spans, training documents and
    offsets; `POST /v1/audit?name=BENCH.jsonl` audits a benchmark file (the body) against the
    index; `GET /v1/doc/N?offset=O` gives a training snippet; `GET /health`, `GET /v1/index`.

    Examples:

        siftmix serve runs/demo-index

        curl -s localhost:8000/v1/contains -d '{"text": "..."}'
    """
    if not storage.exists(storage.join(index, "_manifest.json")) and not storage.exists(index):
        _fail(f"INDEX: {index} does not exist", 2)
    import uvicorn
    from siftmix.contamination.serve import is_loopback, make_app

    app_ = make_app(index, max_contains_bytes=max_contains_bytes, max_audit_bytes=max_audit_bytes)
    if app_.state.warning:
        _log(f"warning: {app_.state.warning}")
    if not is_loopback(host):
        _log(f"warning: binding {host}: the service is reachable from other machines and has no authentication")
    import socket

    try:  # bound here, so that a port in use is one line and exit 1 (uvicorn would exit 3)
        sock = socket.create_server((host.strip("[]"), port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
        _fail(f"serve: cannot listen on {host}:{port}: {e.strerror or e}", 1)
    port = sock.getsockname()[1]
    _log(f"serve: {index} at http://{host if ':' not in host else f'[{host}]'}:{port}/ (Ctrl-C stops)")
    uvicorn.Server(uvicorn.Config(app_, log_level="warning")).run(sockets=[sock])


@app.command("demo-data")
@guarded
def demo_data(
    out: Annotated[Path, typer.Argument(help="folder to write the demo corpus into", show_default=False)],
    size: Annotated[str, typer.Option(help="approximate total size, e.g. 10MB, 100MB, 1GB")] = "10MB",
    seed: Annotated[int, typer.Option(help="random seed (same seed, same corpus)")] = 0,
):
    """Generate a realistic demo corpus: Common Crawl-like WET files, curated sources, benchmarks.

    The crawl mixes good prose, spam, boilerplate and machine-like junk; near-duplicates and
    benchmark passages are planted in it. Also writes OUT/demo.yaml, a run config for it.

    Examples:

        siftmix demo-data demo/corpus

        siftmix demo-data /tmp/bench-corpus --size 1GB --seed 1
    """
    from .demo import generate, parse_size

    try:
        nbytes = parse_size(size)
    except ValueError as e:
        _fail(str(e), 2)
    summary = generate(str(out), nbytes, seed=seed, log=_log)
    _log(f"demo-data: about {nbytes / 1e6:.0f} MB of text, {summary['bytes'] / 1e6:.1f} MB on disk in "
         f"{summary['files']} files; run config: {out / 'demo.yaml'}")
    print(out)


@app.command()
@guarded
def validate(config: Annotated[Path, typer.Argument(help="run configuration (YAML)", show_default=False)]):
    """Check a run configuration and print it with all defaults filled in."""
    import yaml

    cfg = load_config(config)
    print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")


@app.command()
@guarded
def report(run_dir: Annotated[str, typer.Argument(help="a run folder (run_dir of a config; a path or URL)", show_default=False)]):
    """Write RUN_DIR/report.html from the stage manifests there and print its path.

    One self-contained page: every stage's documents and bytes in / kept / rejected by reason and
    by source, wall time and throughput, quality score histograms, dedup cluster sizes, % dirty per
    benchmark, and the mixture as GPT-3's Table 2.2 (target vs realized shares, epochs).

    Examples:

        siftmix report runs/demo
    """
    from .report import build_report

    print(build_report(run_dir))


@app.command()
@guarded
def trace(run_dir: Annotated[str, typer.Argument(metavar="RUN_DIR", help="a run folder (a path or URL)", show_default=False)],
          doc_id: Annotated[str, typer.Argument(metavar="ID", help="a document id (as ingest wrote it)", show_default=False)],
          as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False):
    """Show what happened to one document at each stage of a run.

    Kept; rejected with its reason and score; a duplicate of which document; cut into which
    pieces; and where each piece and repeat sits in the mix (shard, row, token offset). Reads the
    one shard per stage that the manifests name (ingest: the Parquet footers, to find the shard).

    Examples:

        siftmix trace runs/demo webtext2-0000068

        siftmix trace s3://bucket/runs/cc urn:uuid:0522f332-4fe9-4994-aeba-c7d25f6900fb --json
    """
    from .trace import format_json, format_text
    from .trace import trace as run_trace

    t = run_trace(run_dir, doc_id)
    print(format_json(t) if as_json else format_text(t))


add_stage_commands()


def main() -> None:
    add_stage_commands()  # stages registered after import (plugins)
    try:
        app()
    except SystemExit as e:  # click exits 2 on usage errors already
        raise SystemExit(e.code) from None


if __name__ == "__main__":
    main()
    sys.exit(0)
