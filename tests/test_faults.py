"""Faults: a Ray worker killed mid-stage (its task is retried, its actor restarted, the output is
byte-identical to a clean run), and a run dir that cannot be written or fills up (one error line,
exit code 1, no traceback, no stage folder that looks finished). The driver killed with kill -9
is in test_resume.py."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import SIFTMIX, assert_same_run, demo_sources, parquet_bytes, write_demo_config
from siftmix.pipeline.config import config_from_dict
from siftmix.pipeline.core.ray_runner import TaskError, map_actors, map_tasks
from siftmix.pipeline.runner import run_pipeline, run_stage

pytestmark = pytest.mark.integration


def _quiet(*a, **k):
    pass


def _forum(folder: Path, n_files: int = 120, n_docs: int = 40) -> Path:
    """Many small crawl-like files: a stage of many short tasks, so a kill lands mid-stage."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        with open(folder / f"f-{f:03d}.jsonl", "w") as fh:
            for i in range(n_docs):
                words = " ".join(f"w{(f * 7 + i * 13 + j * j) % 997}" for j in range(120))
                fh.write(json.dumps({"id": f"{f}-{i}", "text": f"post {f} {i} {words}"}) + "\n")
    return folder


class WorkerKiller(threading.Thread):
    """For each (process title, stage folder) in turn: once the stage is running (its temp folder
    exists, its manifest does not), kill -9 a Ray worker of this process's Ray whose title says it
    is executing that task (``ray::_call`` for a task, ``ray::_ShardActor.process`` for an
    actor method)."""

    def __init__(self, run_dir: Path, targets: list[tuple[str, str]]):
        super().__init__(daemon=True)
        self.run_dir, self.targets = run_dir, targets
        self.killed: list[tuple[str, int]] = []
        self.done = threading.Event()

    def _running(self, stage: str) -> bool:
        return any(self.run_dir.glob(f"{stage}/attempt-*")) and not (self.run_dir / stage / "_manifest.json").exists()

    def run(self) -> None:
        me = psutil.Process()
        for title, stage in self.targets:
            while not self.done.is_set():
                victim = None
                if self._running(stage):
                    for p in me.children(recursive=True):
                        try:
                            if p.cmdline()[:1] == [title]:
                                victim = p
                                break
                        except (psutil.Error, IndexError):
                            pass
                if victim is not None:
                    victim.kill()
                    self.killed.append((title, victim.pid))
                    break
                time.sleep(0.02)


def test_ray_workers_killed_mid_stage_retried_output_identical(ray_local, demo_corpus, tmp_path):
    forum = _forum(tmp_path / "forum")

    def cfg(name):
        return config_from_dict({"run_dir": str(tmp_path / name), "seed": 3, "stages": ["ingest", "quality"],
                                 "sources": [*demo_sources(demo_corpus), {"name": "forum", "paths": [str(forum)], "filter": True}]})

    clean = cfg("clean")
    run_stage("ingest", clean, log=_quiet, progress=False)
    run_stage("quality", clean, log=_quiet, progress=False)

    faulty = cfg("faulty")
    killer = WorkerKiller(tmp_path / "faulty", [("ray::_call", "00_ingest"), ("ray::_ShardActor.process", "10_quality")])
    killer.start()
    try:
        m_ingest = run_stage("ingest", faulty, log=_quiet, progress=False)   # a task's worker dies: the task is retried
        m_quality = run_stage("quality", faulty, log=_quiet, progress=False)  # an actor dies: restarted, its call retried
    finally:
        killer.done.set()
        killer.join(timeout=10)
    assert [t for t, _ in killer.killed] == ["ray::_call", "ray::_ShardActor.process"], "a stage ended before its kill"
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for _, pid in killer.killed)

    for stage in ("00_ingest", "10_quality"):
        a, b = parquet_bytes(tmp_path / "clean" / stage), parquet_bytes(tmp_path / "faulty" / stage)
        assert len(a) > 120 and a == b, stage  # many shards (the 2 MB demo corpus + forum: 135 files)
        ma, mb = (json.loads((tmp_path / d / stage / "_manifest.json").read_text()) for d in ("clean", "faulty"))
        assert ma["counts"] == mb["counts"] and ma["output_fingerprint"] == mb["output_fingerprint"]
    assert m_ingest["counts"]["by_source"]["forum"]["in"] == 120 * 40 and m_quality["counts"]["in"] == m_ingest["counts"]["kept"]


def _raises(task):
    raise OSError(errno.ENOSPC, "No space left on device")


def _dies(task):
    os.kill(os.getpid(), signal.SIGKILL)


class _DyingActor:
    def process(self, task):
        os.kill(os.getpid(), signal.SIGKILL)


def test_failed_task_or_dead_worker_is_one_line_naming_the_input(ray_local):
    """A task that raises, a task whose worker dies more often than it is retried, an actor that
    dies more often than it is restarted: each one TaskError line naming the task's input."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    with pytest.raises(TaskError) as e:
        list(map_tasks(_raises, [{"path": "/data/a.parquet"}]))
    assert str(e.value) == "a raises task failed on /data/a.parquet: OSError: [Errno 28] No space left on device"
    assert isinstance(e.value.cause, OSError) and e.value.cause.errno == errno.ENOSPC
    with pytest.raises(TaskError) as e:
        list(map_tasks(_dies, [{"task": {"path": "/data/b.jsonl"}}], max_retries=1))
    msg = str(e.value)
    assert msg.startswith("a dies task failed on /data/b.jsonl: its Ray worker died") and "WorkerCrashedError" in msg
    assert "\n" not in msg
    with pytest.raises(TaskError) as e:
        list(map_actors(_DyingActor, {}, [{"path": "/data/c.parquet"}, {"path": "/data/d.parquet"}], workers=1))
    msg = str(e.value)
    assert msg.startswith("a DyingActor.process task failed on /data/c.parquet: its Ray worker died"), msg
    assert "ActorDiedError" in msg and "\n" not in msg


# --------------------------------------------------------------------------- run dir faults

def _small_config(tmp_path: Path, run_dir: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "a.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 40}) + "\n" for i in range(20)))
    p = tmp_path / "small.yaml"
    p.write_text(f"run_dir: {run_dir}\nstages: [ingest]\nsources:\n  - name: web\n    paths: {data}\n")
    return p


def _siftmix(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*SIFTMIX, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert errors and errors[-1].startswith("error: ") and sum(ln.startswith("error") for ln in errors) == 1, r.stderr
    assert all(not ln.startswith(" ") for ln in errors), r.stderr  # no indented traceback or log block
    return errors[-1]


def _nothing_finished(run_dir: Path, stage: str) -> None:
    assert not (run_dir / stage / "_manifest.json").exists()
    assert not list(run_dir.glob(f"{stage}/attempt-*")) if run_dir.is_dir() else True


@pytest.fixture
def read_only_dir(tmp_path):
    """A run dir this process cannot write: chmod 555, or for root (which ignores modes) the
    immutable attribute (chattr +i, on ext4, xfs, btrfs)."""
    d = tmp_path / "ro-run"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    r = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a folder read-only for root here (chattr +i: {r.stderr.strip()})")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


def test_read_only_run_dir_is_one_line_and_fails_before_ray(tmp_path, read_only_dir):
    t0 = time.time()
    r = _siftmix("run", _small_config(tmp_path, read_only_dir))
    line = _one_error_line(r)
    assert line == f"error: permission denied: {read_only_dir}", line
    assert "ray:" not in r.stderr and time.time() - t0 < 30  # checked before Ray starts (6-8 s)
    assert list(read_only_dir.iterdir()) == []


def test_run_dir_under_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    r = _siftmix("run", _small_config(tmp_path, blocker / "run"))
    assert _one_error_line(r) == f"error: Not a directory: {blocker / 'run'}"
    r = _siftmix("run", _small_config(tmp_path, blocker))  # the run dir itself is a file
    assert _one_error_line(r) == f"error: the run dir is a file, not a folder: {blocker}"
    assert blocker.read_text() == "x"


def test_disk_full_at_the_manifest_is_one_line_and_leaves_nothing_finished(ray_local, tmp_path, monkeypatch):
    """ENOSPC where the driver writes the manifest (any user; in-process, through the CLI)."""
    from siftmix.pipeline.cli import app
    from siftmix.pipeline.core import storage as stage_mod
    from typer.testing import CliRunner

    class FullDisk:  # json, but every dump (the manifest) fails
        load, loads, dumps = staticmethod(json.load), staticmethod(json.loads), staticmethod(json.dumps)

        @staticmethod
        def dump(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stage_mod, "json", FullDisk)
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(_small_config(tmp_path, run_dir))])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1] == f"error: No space left on device: {run_dir}/00_ingest/_manifest.json.tmp", lines
    assert lines[-1].endswith("/_manifest.json.tmp") and sum(ln.startswith("error") for ln in lines) == 1
    _nothing_finished(run_dir, "00_ingest")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only; skipped where it cannot be mounted): room for the demo's ingest
    output (~0.7 MB), not for its quality model (~64 MB)."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_disk_full_mid_run_is_one_line_then_resumes(ray_local, demo_corpus, demo_reference, small_disk, tmp_path):
    run_dir = small_disk / "run"
    config = write_demo_config(tmp_path / "demo.yaml", demo_corpus, run_dir)
    r = _siftmix("run", config)
    line = _one_error_line(r)
    assert "quality" in line and "No space left on device" in line, line
    assert "ingest: " in r.stderr
    assert (run_dir / "00_ingest" / "_manifest.json").exists()  # the finished stage before stays finished
    _nothing_finished(run_dir, "10_quality")
    # room again: the rerun skips ingest and gives the clean run's output
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    logs = []
    from siftmix.pipeline.config import load_config

    run_pipeline(load_config(config), log=logs.append)
    assert any(ln.startswith("ingest: finished earlier, skipped") for ln in logs), logs
    assert_same_run(run_dir, demo_reference)
