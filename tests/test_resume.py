"""Manifests, resume and crash safety: a killed driver leaves nothing that looks finished, and the
rerun gives output byte-identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SIFTMIX, assert_same_run, parquet_bytes, write_demo_config
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.manifest import MANIFEST, read_manifest
from siftmix.pipeline.core.storage import stage_output
from siftmix.pipeline.runner import run_stage

pytestmark = pytest.mark.integration


def _corpus(folder: Path, n_files: int = 150) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        with open(folder / f"part-{f:04d}.jsonl", "w") as fh:
            for i in range(150):
                fh.write(json.dumps({"id": f"{f}-{i}", "text": f"document {f} {i} " + "lorem ipsum dolor " * 30}) + "\n")
    return folder


def _config(tmp_path: Path, name: str, data: Path) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"run_dir: {tmp_path / name}\nstages: [ingest]\nsources:\n  - name: web\n    paths: {data}\nray:\n  num_cpus: 2\n")
    return p


def test_stage_output_is_atomic(tmp_path):
    from siftmix.pipeline.core.storage import LOCK, run_lock

    final = tmp_path / "run" / "00_x"
    with run_lock(str(tmp_path / "run")):
        _atomic(tmp_path, final)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["00_x", LOCK]


def _atomic(tmp_path, final):
    from siftmix.pipeline.core.storage import LOCK

    with pytest.raises(RuntimeError):
        with stage_output(str(final)) as out:
            Path(out.path("data")).mkdir()
            raise RuntimeError("boom")
    assert not final.exists() and [p.name for p in (tmp_path / "run").iterdir()] == [LOCK]
    with stage_output(str(final)) as out:
        Path(out.path("data")).mkdir()
        Path(out.path("data", "a.parquet")).write_bytes(b"x")
        m = out.commit({"stage": "x", "config_hash": "c", "input_fingerprint": "i"})
    assert read_manifest(str(final))["output_fingerprint"] == m["output_fingerprint"]
    assert sorted(p.name for p in final.iterdir()) == sorted([m["attempt"], "_manifest.json"])
    assert m["outputs"] == [{"path": "data/a.parquet", "size": 1}]
    # an attempt of a killed run is cleaned by the next run of the stage; the committed one stays
    stale = final / "attempt-20260101T000000-99999-abcdef"
    (stale / "data").mkdir(parents=True)
    with stage_output(str(final)) as out:
        assert not stale.exists() and (final / m["attempt"] / "data" / "a.parquet").exists()
        out.abort()
    assert read_manifest(str(final))["attempt"] == m["attempt"]


def test_rerun_skips_finished_stage_and_force_recomputes(ray_local, tmp_path):
    data = _corpus(tmp_path / "data", n_files=3)
    cfg = config_from_dict({"run_dir": str(tmp_path / "run"), "stages": ["ingest"], "sources": [{"name": "web", "paths": [str(data)]}]})
    logs = []
    m1 = run_stage("ingest", cfg, log=logs.append)
    m2 = run_stage("ingest", cfg, log=logs.append)
    assert m2["timings"] == m1["timings"] and "skipped" in logs[-1]
    m3 = run_stage("ingest", cfg, force=True, log=logs.append)
    assert m3["timings"]["started"] > m1["timings"]["started"]
    cfg.ingest.min_chars = 10_000  # a config change invalidates the stage
    m4 = run_stage("ingest", cfg, log=logs.append)
    assert m4["config_hash"] != m1["config_hash"] and m4["counts"]["kept"] == 0
    (data / "part-0000.jsonl").write_text(json.dumps({"text": "new " * 3000}) + "\n")  # so does new input
    m5 = run_stage("ingest", cfg, log=logs.append)
    assert m5["input_fingerprint"] != m4["input_fingerprint"] and m5["counts"]["kept"] == 1
    for m in (m1, m3, m4, m5):
        c = m["counts"]
        assert c["in"] == c["kept"] + c["rejected"]
        assert set(m) >= {"config_hash", "input_fingerprint", "output_fingerprint", "counts", "timings", "versions"}


def _kill_driver_when(proc: subprocess.Popen, ready, timeout: float = 240) -> bool:
    """kill -9 the driver (only it, mid-stage) as soon as ``ready()``; then the Ray processes it
    left behind (its session). True if it was killed before it finished."""
    killed = False
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def test_kill_9_of_the_driver_mid_stage_then_rerun_is_byte_identical(tmp_path):
    data = _corpus(tmp_path / "data")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    clean_cfg, crash_cfg = _config(tmp_path, "clean", data), _config(tmp_path, "crash", data)
    r = subprocess.run([*SIFTMIX, "run", str(clean_cfg), "--workers", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    proc = subprocess.Popen([*SIFTMIX, "run", str(crash_cfg), "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    run_dir = tmp_path / "crash"
    killed = _kill_driver_when(proc, lambda: len(list(run_dir.glob("00_ingest/attempt-*/data/*.parquet"))) >= 5)
    assert killed, "the stage finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "00_ingest" / MANIFEST).exists()  # nothing that looks finished
    abandoned = list(run_dir.glob("00_ingest/attempt-*"))  # just the abandoned attempt
    assert len(abandoned) == 1

    r = subprocess.run([*SIFTMIX, "run", str(crash_cfg), "--workers", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not abandoned[0].exists() and len(list(run_dir.glob("00_ingest/attempt-*"))) == 1
    clean, resumed = parquet_bytes(tmp_path / "clean" / "00_ingest"), parquet_bytes(run_dir / "00_ingest")
    assert len(clean) == 150 and clean == resumed
    mc = json.loads((tmp_path / "clean" / "00_ingest" / MANIFEST).read_text())
    mr = json.loads((run_dir / "00_ingest" / MANIFEST).read_text())
    assert mc["counts"] == mr["counts"]
    assert mc["counts"]["kept"] == 150 * 150


def test_kill_9_in_a_later_stage_then_rerun_resumes_there(demo_corpus, demo_reference, tmp_path):
    """A multi-stage run (ingest, quality, decontam, mix) whose driver is killed while decontam
    runs: the finished stages stay finished and the rerun skips them by their manifests,
    recomputes from decontam on, and ends with the output of an uninterrupted run."""
    run_dir = tmp_path / "run"
    config = write_demo_config(tmp_path / "demo.yaml", demo_corpus, run_dir)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with open(tmp_path / "crash.log", "w") as log:
        proc = subprocess.Popen([*SIFTMIX, "run", str(config)], env=env, stdout=log, stderr=log, start_new_session=True)
    killed = _kill_driver_when(proc, lambda: bool(list(run_dir.glob("30_decontam/attempt-*"))))
    assert killed, "decontam did not start:\n" + (tmp_path / "crash.log").read_text()[-3000:]
    assert not (run_dir / "30_decontam" / MANIFEST).exists() and not (run_dir / "40_mix").exists()
    assert list(run_dir.glob("30_decontam/attempt-*"))  # the abandoned attempt, not a stage
    finished = {st: json.loads((run_dir / st / MANIFEST).read_text()) for st in ("00_ingest", "10_quality")}

    r = subprocess.run([*SIFTMIX, "run", str(config)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ingest: finished earlier, skipped" in r.stderr and "quality: finished earlier, skipped" in r.stderr
    assert "decontam: finished earlier" not in r.stderr and "mix: finished earlier" not in r.stderr
    for st, m in finished.items():  # skipped, not recomputed: the very same manifests
        assert json.loads((run_dir / st / MANIFEST).read_text()) == m
    assert_same_run(run_dir, demo_reference)  # no temp folder left, every output byte-identical
