"""Scale benchmark: the whole pipeline at 100 MB and 1 GB, and the dedup stage's driver memory
from 100k to 1M documents (not part of ``make bench``: ``make bench-scale``).

    python -m bench.bench_scale [--sizes 100MB,1GB] [--docs 100k,1M] [--dedup-corpus 1GB] [--parts ...] [--quick]

pipeline: ``siftmix run`` (a subprocess) with the config ``siftmix demo-data`` writes (every stage:
          ingest, quality (fastText), dedup, decontam, mix) on a generated demo corpus of each size.
          Per stage: wall time (its manifest's ``timings.wall_s``), MB/s per core (the stage's input
          bytes / wall / cores; ingest's input is the files on disk, compressed, and its text output
          is given too), driver and Ray-worker RSS during the stage. Checks: the 1 GB run's wall is
          at most 1.1x the size ratio times the 100 MB wall (cost per MB does not grow), and the
          driver's peak RSS does not grow (at most 1.1x).
isolated: the same pipeline again, one stage per ``siftmix run --until STAGE`` process (earlier
          stages skipped as finished): each process's peak RSS is one stage's driver memory.
quality_cap: the quality stage alone with ``quality.train.max_docs_per_class`` small enough to bind
          at every size (--quality-cap, 5000): the training sample the driver holds is capped by that
          setting, so with the cap binding its driver peak must not move with the corpus.
dedup:    JSONL corpora of short documents (~1 KB, Zipf words, 5% planted near-duplicates at 0.5-2%
          word edits and 1% exact copies, fixed seed), ``siftmix run`` with stages [ingest, dedup]:
          first ``--until ingest``, then a second process that skips ingest (finished) and runs
          dedup alone, so that its peak RSS is the dedup stage's. Check: the driver's peak RSS at the
          largest size is within 10% of the smallest.
dedup_e2e: stages [ingest, dedup] on the largest demo corpus the same way; dedup MB/s (wall).

Measurement (a thread of this process polls every 0.5 s):
* driver: the ``siftmix run`` process; peak RSS = its VmHWM in /proc (the kernel's high-water
  mark, read at each poll, last read < 0.5 s before exit); per stage: the largest VmRSS sampled
  inside the stage's [started, finished] window (manifest timings).
* Ray workers: the descendants of the driver (children of raylet; the local Ray is started by the
  driver) whose command line, as Ray sets it, starts with ``ray::`` (``ray::IDLE``,
  ``ray::_call``, actor names) or names ``default_worker.py``, except Ray's per-node agents
  (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``). Sum = the largest sum of their VmRSS over
  one sample (shared pages, e.g. object-store mappings, count once per process; RssAnon, private
  heap, is given too); max = the largest VmHWM of one worker. Everything else under the driver
  (raylet, gcs_server, agents, monitors) is ``ray_system``.
* spill: Ray's own counters: the raylet's cumulative ``Spilled N MiB`` log line (raylet.out of
  the run's session dir, ``/tmp/ray/session_*_<driver pid>``), the largest ``num bytes currently
  spilled`` of its debug_state.txt (dumped every 10 s), and the largest size on disk of the spill
  folder ``<session>/ray_spilled_objects*`` (polled); plus the largest ``Object store current
  usage`` the raylet logged (it logs one at start and then only on large changes, so this is
  not a usage profile).
* noise: the machine is shared; each run records the CPU seconds of its own process tree and the
  machine's busy CPU seconds over the same interval (the difference is other people's load).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import WORK, write_result

CORES = os.cpu_count() or 1
STAGE_DIRS = {"ingest": "00_ingest", "quality": "10_quality", "dedup": "20_dedup", "decontam": "30_decontam", "mix": "40_mix"}
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
MB = 1e6


def _mb(n) -> float:
    return round(n / MB, 1)


# ----------------------------------------------------------------------------- process-tree monitor

def _status(pid: int) -> dict | None:
    """VmRSS, VmHWM, RssAnon, RssShmem of a process in bytes (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            out = {}
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssShmem"):
                    out[k] = int(v.split()[0]) * 1024
            return out
    except (OSError, ValueError):
        return None


def _cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, from the parent pids in /proc (processes that vanish
    mid-scan are skipped)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


class TreeMonitor(threading.Thread):
    """Polls the driver and its descendants (see the module docstring)."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop_event = threading.Event()
        self.samples: list[tuple] = []  # (t, driver_rss, workers_rss_sum, workers_anon_sum, workers_rss_max, n_workers, system_rss_sum, spill_bytes)
        self.kind: dict[int, str] = {}
        self.worker_hwm: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.driver_hwm = 0
        self.session_dir: str | None = None
        self.spill_dir_peak = 0
        self.errors: list[str] = []

    def _classify(self, pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = [x.decode(errors="replace") for x in fh.read().split(b"\0") if x]
        except OSError:
            return None
        if not cmd:
            return None
        line = " ".join(cmd)
        if self.session_dir is None:
            m = re.search(r"--session[-_]dir=(\S+)", line)
            if m:
                self.session_dir = m.group(1)
        if cmd[0].startswith(AGENTS):
            return "system"
        if cmd[0].startswith("ray::") or "default_worker.py" in line:
            return "worker"
        return "system"

    def _spill_bytes(self) -> int:
        if not self.session_dir:
            return 0
        total = 0
        for d in glob.glob(os.path.join(self.session_dir, "ray_spilled_objects*")):
            for root, _, files in os.walk(d):
                for f in files:
                    try:
                        total += os.path.getsize(os.path.join(root, f))
                    except OSError:
                        pass
        return total

    def sample(self) -> None:
        t = time.time()
        d = _status(self.pid)
        if d is None:
            return
        self.driver_hwm = max(self.driver_hwm, d.get("VmHWM", 0))
        c = _cpu_s(self.pid)
        if c is not None:
            self.cpu[self.pid] = c
        w_rss = w_anon = w_max = n_w = s_rss = 0
        for pid in _descendants(self.pid):
            k = self.kind.get(pid)
            if k is None:
                k = self._classify(pid)
                if k is None:
                    continue
                self.kind[pid] = k
            st = _status(pid)
            if st is None:
                continue
            c = _cpu_s(pid)
            if c is not None:
                self.cpu[pid] = c
            if k == "worker":
                n_w += 1
                w_rss += st.get("VmRSS", 0)
                w_anon += st.get("RssAnon", 0)
                w_max = max(w_max, st.get("VmRSS", 0))
                self.worker_hwm[pid] = max(self.worker_hwm.get(pid, 0), st.get("VmHWM", 0))
            else:
                s_rss += st.get("VmRSS", 0)
        spill = self._spill_bytes()
        self.spill_dir_peak = max(self.spill_dir_peak, spill)
        self.samples.append((t, d.get("VmRSS", 0), w_rss, w_anon, w_max, n_w, s_rss, spill))

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.sample()
            except Exception as err:  # noqa: BLE001 - a failed poll is counted, not fatal
                self.errors.append(f"{type(err).__name__}: {err}")
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()

    def window(self, t0: float, t1: float) -> dict:
        """Peaks of the samples inside [t0, t1] (a stage)."""
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return {"samples": 0}
        return {"samples": len(s), "driver_rss_start_mb": _mb(s[0][1]), "driver_rss_peak_mb": _mb(max(x[1] for x in s)),
                "workers_rss_sum_peak_mb": _mb(max(x[2] for x in s)), "workers_anon_sum_peak_mb": _mb(max(x[3] for x in s)),
                "worker_rss_max_mb": _mb(max(x[4] for x in s)), "workers_alive_max": max(x[5] for x in s),
                "ray_system_rss_peak_mb": _mb(max(x[6] for x in s))}


def _ray_logs(session_dir: str | None) -> dict:
    """Spill and object-store figures from the raylet's own logs (see the module docstring)."""
    out = {"session_dir": session_dir, "raylet_spilled_mib": 0, "raylet_spilled_objects": 0,
           "debug_state_bytes_spilled_max": 0, "debug_state_cumulative_spill_requests": 0,
           "object_store_usage_max_gb": None, "object_store_capacity_gb": None}
    if not session_dir or not os.path.isdir(session_dir):
        return out
    for f in sorted(glob.glob(os.path.join(session_dir, "logs", "raylet*.out"))):
        with open(f, errors="replace") as fh:
            for line in fh:
                if "Spilled " in line:
                    m = re.search(r"Spilled (\d+) MiB, (\d+) objects", line)
                    if m:
                        out["raylet_spilled_mib"] = max(out["raylet_spilled_mib"], int(m.group(1)))
                        out["raylet_spilled_objects"] = max(out["raylet_spilled_objects"], int(m.group(2)))
                m = re.search(r"Object store current usage ([0-9.e+-]+) / ([0-9.e+-]+) GB", line)
                if m:
                    u = float(m.group(1))
                    out["object_store_usage_max_gb"] = max(out["object_store_usage_max_gb"] or 0.0, u)
                    out["object_store_capacity_gb"] = float(m.group(2))
                if "[state-dump]" in line:
                    _debug_line(line.split("[state-dump]", 1)[1], out)
    f = os.path.join(session_dir, "logs", "debug_state.txt")
    if os.path.exists(f):
        with open(f, errors="replace") as fh:
            for line in fh:
                _debug_line(line, out)
    return out


def _debug_line(line: str, out: dict) -> None:
    m = re.match(r"\s*- num bytes currently spilled: (\d+)", line)
    if m:
        out["debug_state_bytes_spilled_max"] = max(out["debug_state_bytes_spilled_max"], int(m.group(1)))
    m = re.match(r"\s*- cumulative spill requests: (\d+)", line)
    if m:
        out["debug_state_cumulative_spill_requests"] = max(out["debug_state_cumulative_spill_requests"], int(m.group(1)))


def _kill_tree(pid: int) -> None:
    """Stop a run that ran out of time: its descendants (started by it), then it, by pid."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def siftmix_run(cfg: Path, log: Path, extra: list[str] = (), timeout: float = 3600) -> dict:
    """``siftmix run CFG`` in a subprocess under the monitor."""
    exe = Path(sys.executable).parent / "siftmix"
    cmd = [str(exe), "run", str(cfg), *extra]
    busy0, load0 = _machine_busy_s(), os.getloadavg()
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(cfg.parent))
        mon = TreeMonitor(proc.pid)
        mon.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            rc = proc.wait()
            rc = "timeout"
        finally:
            mon.stop()
    wall = time.time() - t0
    busy = _machine_busy_s() - busy0
    tree_cpu = sum(mon.cpu.values())
    res = {"command": "siftmix run " + " ".join([os.path.relpath(cfg, WORK.parent.parent), *extra]), "rc": rc,
           "started": round(t0, 3), "wall_s": round(wall, 2), "driver_peak_rss_mb": _mb(mon.driver_hwm),
           "workers_rss_sum_peak_mb": _mb(max((x[2] for x in mon.samples), default=0)),
           "workers_anon_sum_peak_mb": _mb(max((x[3] for x in mon.samples), default=0)),
           "worker_peak_rss_max_mb": _mb(max(mon.worker_hwm.values(), default=0)),
           "worker_processes_seen": len(mon.worker_hwm),
           "ray_system_rss_peak_mb": _mb(max((x[6] for x in mon.samples), default=0)),
           "samples": len(mon.samples), "sample_errors": mon.errors[:5],
           "cpu": {"own_tree_cpu_s": round(tree_cpu, 1), "machine_busy_cpu_s": round(busy, 1),
                   "others_cpu_s_approx": round(max(0.0, busy - tree_cpu), 1),
                   "loadavg_1min_before": round(load0[0], 2), "loadavg_1min_after": round(os.getloadavg()[0], 2)},
           "spill": {"spill_dir_peak_bytes": mon.spill_dir_peak, **_ray_logs(mon.session_dir)}}
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{res['command']} failed (rc {rc}); log {log}:\n" + "\n".join(tail))
    res["_monitor"] = mon
    return res


def _pop_monitor(r: dict) -> TreeMonitor:
    return r.pop("_monitor")


# ----------------------------------------------------------------------------- helpers

def parse_count(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
    return int(float(s.rstrip("km")) * mult)


def manifests(run_dir: Path) -> dict:
    out = {}
    for st, d in STAGE_DIRS.items():
        p = run_dir / d / "_manifest.json"
        if p.exists():
            out[st] = json.loads(p.read_text())
    return out


def stage_rows(ms: dict, mon: TreeMonitor, t_lo: float) -> dict:
    """Per stage of one run: wall, input MB, MB/s per core, RSS in its window."""
    rows, prev_out = {}, None
    for st, m in ms.items():
        tm = m["timings"]
        c = m.get("counts", {})
        if st == "ingest":
            in_bytes = c["bytes_in"]
        elif "bytes_in" in c:
            in_bytes = c["bytes_in"]
        else:
            in_bytes = prev_out
        wall = tm["wall_s"]
        row = {"wall_s": wall, "input_mb": _mb(in_bytes), "mb_s_per_core": round(in_bytes / MB / wall / CORES, 2),
               "docs_in": c.get("in"), "docs_kept": c.get("kept"), "output_text_mb": _mb(c["bytes_kept"]) if "bytes_kept" in c else None}
        if st == "ingest":
            row["input_is"] = "files on disk (compressed WET/jsonl.gz/zst, plain jsonl/txt)"
            row["text_out_mb_s_per_core"] = round(c["bytes_kept"] / MB / wall / CORES, 2)
        if st == "mix":
            row["tokens_out"] = c.get("tokens")
        if "timings" in m and st == "dedup":
            row["passes_s"] = {k: v for k, v in tm.items() if k.endswith("_s") and k != "wall_s"}
        if tm.get("started", 0) >= t_lo:
            row["memory"] = mon.window(tm["started"], tm["finished"])
            if st == "dedup":  # passes run one after the other from the stage's start (approximate windows)
                t, row["memory_by_pass"] = tm["started"], {}
                for k, v in row["passes_s"].items():
                    w = mon.window(t, t + v)
                    if w["samples"]:
                        row["memory_by_pass"][k.removesuffix("_s")] = {x: w[x] for x in ("driver_rss_peak_mb", "workers_rss_sum_peak_mb", "worker_rss_max_mb")}
                    t += v
        else:
            row["memory"] = "skipped in this process (finished earlier)"
        rows[st] = row
        prev_out = c.get("bytes_kept", prev_out)
    return rows


def _write_yaml(path: Path, data: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))


def demo_corpus(size: str, log) -> tuple[Path, dict]:
    from siftmix.pipeline.demo import generate, parse_size

    corpus = WORK / f"scale-corpus-{size}"
    info = {"size": size, "text_bytes": parse_size(size), "generated_now": False}
    if not (corpus / "truth.json").exists() or not (corpus / "demo.yaml").exists():
        shutil.rmtree(corpus, ignore_errors=True)
        t0 = time.time()
        g = generate(str(corpus), parse_size(size), seed=0)
        info.update(generated_now=True, generate_s=round(time.time() - t0, 1), files=g["files"], documents=g["documents"])
        log(f"demo corpus {size}: {g['documents']:,} documents, {g['bytes'] / MB:.0f} MB on disk, {info['generate_s']}s")
    info["bytes_on_disk"] = sum(f.stat().st_size for f in corpus.rglob("*") if f.is_file() and f.suffix not in (".yaml", ".json"))
    return corpus, info


# ----------------------------------------------------------------------------- 1. the whole pipeline

def _demo_config(corpus: Path, name: str, run: Path, max_docs_per_class: int | None = None) -> Path:
    """The corpus's demo.yaml with ``run_dir`` set (and the quality sample cap), written beside it."""
    import yaml

    cfg = yaml.safe_load((corpus / "demo.yaml").read_text())
    cfg["run_dir"] = str(run)
    if max_docs_per_class is not None:
        cfg.setdefault("quality", {}).setdefault("train", {})["max_docs_per_class"] = max_docs_per_class
    _write_yaml(corpus / name, cfg)
    return corpus / name


def bench_pipeline(size: str, timeout: float, log) -> dict:
    corpus, info = demo_corpus(size, log)
    run = WORK / f"scale-run-{size}"
    shutil.rmtree(run, ignore_errors=True)
    cfg_path = _demo_config(corpus, "scale-all.yaml", run)
    log(f"pipeline {size}: {cfg_path} ...")
    r = siftmix_run(cfg_path, WORK / f"scale-run-{size}.log", timeout=timeout)
    mon = _pop_monitor(r)
    ms = manifests(run)
    stages = stage_rows(ms, mon, 0)
    text_mb = ms["ingest"]["counts"]["bytes_kept"] / MB
    res = {"corpus": info, "run": r, "stages": stages, "stage_wall_sum_s": round(sum(s["wall_s"] for s in stages.values()), 2),
           "text_mb": round(text_mb, 1), "total_wall_s_per_text_mb": round(r["wall_s"] / text_mb, 4),
           "dedup_removed": ms.get("dedup", {}).get("counts", {}).get("rejected_by_reason"),
           "table_2_2": ms.get("mix", {}).get("table_2_2")}
    log(f"pipeline {size}: {r['wall_s']:.0f}s, driver peak {r['driver_peak_rss_mb']} MB, workers sum peak "
        f"{r['workers_rss_sum_peak_mb']} MB, worker max {r['worker_peak_rss_max_mb']} MB, spilled {r['spill']['raylet_spilled_mib']} MiB; "
        + ", ".join(f"{k} {v['wall_s']:.1f}s ({v['mb_s_per_core']} MB/s/core)" for k, v in stages.items()))
    return res


def _link_tree(src: Path, dst: Path) -> None:
    """A finished stage folder reused in another run dir (hard links: no copy, same manifest)."""
    shutil.copytree(src, dst, copy_function=os.link)


def bench_isolated(size: str, timeout: float, log) -> dict:
    """The same pipeline, one stage per ``siftmix run --until STAGE`` process (earlier stages are
    skipped as finished): each process's peak RSS is one stage's driver memory (plus Ray's start)."""

    corpus, _ = demo_corpus(size, log)
    run = WORK / f"scale-iso-{size}"
    shutil.rmtree(run, ignore_errors=True)
    cfg_path = _demo_config(corpus, "scale-iso.yaml", run)
    out = {}
    for st in STAGE_DIRS:
        r = siftmix_run(cfg_path, WORK / f"scale-iso-{size}-{st}.log", ["--until", st], timeout=timeout)
        mon = _pop_monitor(r)
        row = stage_rows(manifests(run), mon, r["started"])[st]
        if st == "quality":
            ev = json.loads((run / STAGE_DIRS[st] / "eval.json").read_text())
            row["train_examples"] = ev.get("train_examples")
        out[st] = {"process_wall_s": r["wall_s"], "stage_wall_s": row["wall_s"], "driver_peak_rss_mb": r["driver_peak_rss_mb"],
                   "workers_rss_sum_peak_mb": r["workers_rss_sum_peak_mb"], "worker_peak_rss_max_mb": r["worker_peak_rss_max_mb"],
                   "spilled_mib": r["spill"]["raylet_spilled_mib"], **({"train_examples": row["train_examples"]} if "train_examples" in row else {})}
    log(f"isolated {size}: driver peak per stage " + ", ".join(f"{k} {v['driver_peak_rss_mb']} MB" for k, v in out.items()))
    return out


def bench_quality_cap(size: str, cap: int, timeout: float, log) -> dict:
    """The quality stage alone with ``quality.train.max_docs_per_class: cap`` (on the isolated
    run's ingest output): with the cap binding at every size, its driver peak should not move."""

    corpus, _ = demo_corpus(size, log)
    run = WORK / f"scale-qcap-{size}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    _link_tree(WORK / f"scale-iso-{size}" / STAGE_DIRS["ingest"], run / STAGE_DIRS["ingest"])
    cfg_path = _demo_config(corpus, "scale-qcap.yaml", run, max_docs_per_class=cap)
    r = siftmix_run(cfg_path, WORK / f"scale-qcap-{size}.log", ["--until", "quality"], timeout=timeout)
    _pop_monitor(r)
    ms = manifests(run)
    if ms["ingest"]["timings"]["started"] >= r["started"]:
        raise RuntimeError(f"quality cap {size}: ingest ran again (the linked ingest output was not reused)")
    ev = json.loads((run / STAGE_DIRS["quality"] / "eval.json").read_text())
    res = {"max_docs_per_class": cap, "train_examples": ev.get("train_examples"), "stage_wall_s": ms["quality"]["timings"]["wall_s"],
           "driver_peak_rss_mb": r["driver_peak_rss_mb"], "command": r["command"]}
    log(f"quality cap {cap} {size}: driver peak {r['driver_peak_rss_mb']} MB, examples {res['train_examples']}")
    return res


# ----------------------------------------------------------------------------- 2. dedup driver memory

def _vocab(rng: np.random.Generator, n: int = 30_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random lowercase words, each followed by a space: (bytes, start, length incl. space)."""
    lens = rng.integers(2, 11, n)
    tl = lens + 1
    start = np.cumsum(tl) - tl
    buf = np.full(int(tl.sum()), ord(" "), np.uint8)
    pos = np.repeat(start, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))
    buf[pos] = rng.integers(ord("a"), ord("z") + 1, int(lens.sum()), dtype=np.uint8)
    return buf, start, tl


def generate_docs(out: Path, n_docs: int, seed: int = 0, per_file: int = 50_000, near: float = 0.05,
                  exact: float = 0.01, min_words: int = 100, max_words: int = 180) -> dict:
    """``n_docs`` short documents (~1 KB: 100-180 Zipf-distributed words) as JSONL files of
    ``per_file`` lines; ``near`` of them are near-duplicates (0.5, 1 or 2% of words replaced) and
    ``exact`` exact copies of a document of the same or the previous file."""
    rng = np.random.default_rng(seed)
    vbuf, vstart, vlen = _vocab(rng)
    cdf = np.cumsum(1.0 / (np.arange(len(vstart)) + 10.0))
    cdf /= cdf[-1]
    table = np.searchsorted(cdf, (np.arange(2**20) + 0.5) / 2**20).astype(np.int32)  # inverse CDF, 2^20 steps

    def words(shape):
        return table[rng.integers(0, 2**20, shape, dtype=np.uint32)]

    out.mkdir(parents=True, exist_ok=True)
    prev_w = prev_l = None
    planted = {"near_duplicates": 0, "exact_duplicates": 0}
    nbytes = 0
    for f, lo in enumerate(range(0, n_docs, per_file)):
        n = min(per_file, n_docs - lo)
        W = words((n, max_words))
        L = rng.integers(min_words, max_words + 1, n)
        k_near, k_exact = int(n * near), int(n * exact)
        copies = rng.choice(n, k_near + k_exact, replace=False)
        is_copy = np.zeros(n, bool)
        is_copy[copies] = True
        pool_w = W if prev_w is None else np.concatenate([W, prev_w])
        pool_l = L if prev_l is None else np.concatenate([L, prev_l])
        cand = np.flatnonzero(np.r_[~is_copy, np.ones(len(pool_w) - n, bool)])
        orig = rng.choice(cand, len(copies))
        W[copies], L[copies] = pool_w[orig], pool_l[orig]
        nc = copies[:k_near]
        rate = rng.choice([0.005, 0.01, 0.02], k_near)[:, None]
        edit = rng.random((k_near, max_words)) < rate
        repl = words((k_near, max_words))
        W[nc] = np.where(edit, repl, W[nc])
        planted["near_duplicates"] += k_near
        planted["exact_duplicates"] += k_exact
        # the text of every document in one gather over the vocabulary's bytes
        toks = W[np.arange(max_words)[None, :] < L[:, None]]
        tl = vlen[toks]
        ends = np.cumsum(tl)
        first, last = vstart[toks], vstart[toks] + tl - 1
        step = np.ones(int(ends[-1]), np.int32)  # byte k of the output is vbuf[cumsum(step)[k]]
        step[ends[:-1]] = first[1:] - last[:-1]
        step[0] = first[0]
        text = vbuf[np.cumsum(step, dtype=np.int32)].tobytes()
        doc_end = ends[np.cumsum(L) - 1]
        doc_start = np.r_[0, doc_end[:-1]]
        with open(out / f"docs-{f:05d}.jsonl", "wb") as fh:
            fh.write(b"".join(b'{"id":"d%08d","text":"%s"}\n' % (lo + i, text[a:b - 1])
                              for i, (a, b) in enumerate(zip(doc_start.tolist(), doc_end.tolist()))))
        nbytes += int(doc_end[-1]) - n
        prev_w, prev_l = W, L
    return {"documents": n_docs, "text_bytes": nbytes, "files": len(range(0, n_docs, per_file)), "planted": planted}


def _dedup_only(name: str, cfg: dict, timeout: float, log) -> dict:
    """``siftmix run`` twice: --until ingest, then dedup alone (ingest is skipped as finished)."""
    run = Path(cfg["run_dir"])
    shutil.rmtree(run, ignore_errors=True)
    cfg_path = WORK / f"{name}.yaml"
    _write_yaml(cfg_path, cfg)
    r_in = siftmix_run(cfg_path, WORK / f"{name}-ingest.log", ["--until", "ingest"], timeout=timeout)
    _pop_monitor(r_in)
    r = siftmix_run(cfg_path, WORK / f"{name}.log", timeout=timeout)
    mon = _pop_monitor(r)
    ms = manifests(run)
    st = stage_rows(ms, mon, r["started"])
    d, m = st["dedup"], ms["dedup"]
    st["ingest"].pop("memory", None)
    return {"ingest": {"wall_s": st["ingest"]["wall_s"], "run": {k: r_in[k] for k in ("command", "wall_s", "driver_peak_rss_mb")}},
            "dedup": {**d, "mb_s_wall": round(m["counts"]["bytes_in"] / MB / d["wall_s"], 2),
                      "rejected_by_reason_prefix": _reason_prefixes(m["counts"]["rejected_by_reason"]),
                      "edges": m.get("edges"), "components": m.get("components"), "partitions": m.get("partitions"),
                      "clusters": {k: v for k, v in m.get("clusters", {}).items() if k != "size_histogram"}},
            "run": r}


def _reason_prefixes(reasons: dict) -> dict:
    out: dict = {}
    for k, v in reasons.items():
        p = k.split(":", 1)[0]
        out[p] = out.get(p, 0) + v
    return out


def bench_dedup_docs(n_docs: int, timeout: float, log) -> dict:
    corpus = WORK / f"scale-docs-{n_docs}"
    marker = corpus / "truth.json"
    if marker.exists():
        gen = json.loads(marker.read_text())
    else:
        shutil.rmtree(corpus, ignore_errors=True)
        t0 = time.time()
        gen = generate_docs(corpus, n_docs, seed=0)
        gen["generate_s"] = round(time.time() - t0, 1)
        marker.write_text(json.dumps(gen))
        log(f"docs {n_docs:,}: {gen['text_bytes'] / MB:.0f} MB of text in {gen['files']} files, {gen['generate_s']}s")
    cfg = {"run_dir": str(WORK / f"scale-docs-run-{n_docs}"), "stages": ["ingest", "dedup"],
           "sources": [{"name": "common_crawl", "paths": [str(corpus)], "format": "jsonl"}]}
    log(f"dedup {n_docs:,} documents ...")
    res = {"corpus": gen, **_dedup_only(f"scale-docs-{n_docs}", cfg, timeout, log)}
    d = res["dedup"]
    log(f"dedup {n_docs:,}: {d['wall_s']:.1f}s, {d['mb_s_wall']} MB/s, driver peak {res['run']['driver_peak_rss_mb']} MB "
        f"(in the stage: {d['memory'].get('driver_rss_start_mb')} -> {d['memory'].get('driver_rss_peak_mb')} MB), "
        f"removed {d['rejected_by_reason_prefix']}")
    return res


def bench_dedup_e2e(size: str, timeout: float, log) -> dict:
    import yaml

    corpus, info = demo_corpus(size, log)
    cfg = yaml.safe_load((corpus / "demo.yaml").read_text())
    for s in cfg["sources"]:  # the config is written elsewhere: absolute paths
        s["paths"] = str(corpus / s["paths"])
    cfg.pop("decontam", None)
    cfg.update(run_dir=str(WORK / f"scale-dedup-run-{size}"), stages=["ingest", "dedup"])
    log(f"dedup end to end on the {size} demo corpus ...")
    res = {"corpus": info, **_dedup_only(f"scale-dedup-{size}", cfg, timeout, log)}
    d = res["dedup"]
    log(f"dedup {size}: {d['wall_s']:.1f}s, {d['mb_s_wall']} MB/s wall ({d['mb_s_per_core']} MB/s/core), passes {d.get('passes_s')}")
    return res


# ----------------------------------------------------------------------------- main

def _strip(obj):
    """Drop the monitor objects before JSON."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="demo corpus sizes for the whole pipeline (default 100MB,1GB; quick 20MB)")
    ap.add_argument("--docs", default=None, help="document counts for the dedup memory check (default 100k,1M; quick 10k,50k)")
    ap.add_argument("--dedup-corpus", default=None, help="demo corpus size for the dedup end-to-end run (default: the largest of --sizes)")
    ap.add_argument("--parts", default="pipeline,isolated,quality_cap,dedup,dedup_e2e", help="which parts to run")
    ap.add_argument("--quality-cap", type=int, default=5000,
                    help="quality.train.max_docs_per_class of the quality_cap part (binding at every size; configs/demo.yaml's value)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per siftmix run before it is killed")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run; results in scale-quick.json)")
    ap.add_argument("--name", default=None, help="result file: bench/results/NAME.json")
    args = ap.parse_args(argv)
    sizes = (args.sizes or ("20MB" if args.quick else "100MB,1GB")).split(",")
    docs = [parse_count(x) for x in (args.docs or ("10k,50k" if args.quick else "100k,1M")).split(",")]
    parts = set(args.parts.split(","))
    name = args.name or ("scale-quick" if args.quick else "scale")
    WORK.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    res: dict = {"cores": CORES, "command": "python -m bench.bench_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "how_measured": __doc__.split("Measurement", 1)[1].strip()}
    checks = {}
    if "pipeline" in parts:
        res["pipeline"] = {s: bench_pipeline(s, args.timeout, log) for s in sizes}
        if len(sizes) > 1:
            from siftmix.pipeline.demo import parse_size

            a, b = sizes[0], sizes[-1]
            pa, pb = res["pipeline"][a], res["pipeline"][b]
            ratio = parse_size(b) / parse_size(a)
            checks["pipeline_wall"] = {"small": a, "large": b, "size_ratio": ratio,
                                       "wall_ratio": round(pb["run"]["wall_s"] / pa["run"]["wall_s"], 2),
                                       "limit": round(1.1 * ratio, 2),
                                       "ok": pb["run"]["wall_s"] <= 1.1 * ratio * pa["run"]["wall_s"]}
            checks["pipeline_driver_rss"] = {"small_mb": pa["run"]["driver_peak_rss_mb"], "large_mb": pb["run"]["driver_peak_rss_mb"],
                                             "ratio": round(pb["run"]["driver_peak_rss_mb"] / pa["run"]["driver_peak_rss_mb"], 3),
                                             "limit": 1.1, "ok": pb["run"]["driver_peak_rss_mb"] <= 1.1 * pa["run"]["driver_peak_rss_mb"]}
            checks["pipeline_stage_cost_per_mb_ratio"] = {
                st: round((pb["stages"][st]["wall_s"] / pb["stages"][st]["input_mb"]) / (pa["stages"][st]["wall_s"] / pa["stages"][st]["input_mb"]), 2)
                for st in pa["stages"] if st in pb["stages"]}
    if "isolated" in parts:
        res["isolated_stages"] = {s: bench_isolated(s, args.timeout, log) for s in sizes}
        if len(sizes) > 1:
            a, b = res["isolated_stages"][sizes[0]], res["isolated_stages"][sizes[-1]]
            checks["isolated_stage_driver_rss_ratio"] = {st: round(b[st]["driver_peak_rss_mb"] / a[st]["driver_peak_rss_mb"], 3) for st in a}
        if "quality_cap" in parts:
            res["quality_cap"] = {s: bench_quality_cap(s, args.quality_cap, args.timeout, log) for s in sizes}
            if len(sizes) > 1:
                a, b = res["quality_cap"][sizes[0]], res["quality_cap"][sizes[-1]]
                checks["quality_driver_rss_with_cap_binding"] = {"max_docs_per_class": args.quality_cap,
                                                                 "peak_mb": [a["driver_peak_rss_mb"], b["driver_peak_rss_mb"]],
                                                                 "ratio": round(b["driver_peak_rss_mb"] / a["driver_peak_rss_mb"], 3),
                                                                 "limit": 1.1, "ok": b["driver_peak_rss_mb"] <= 1.1 * a["driver_peak_rss_mb"]}
    if "dedup" in parts:
        res["dedup_memory"] = {str(n): bench_dedup_docs(n, args.timeout, log) for n in docs}
        if len(docs) > 1:
            a, b = res["dedup_memory"][str(docs[0])], res["dedup_memory"][str(docs[-1])]
            ra, rb = a["run"]["driver_peak_rss_mb"], b["run"]["driver_peak_rss_mb"]
            checks["dedup_driver_rss"] = {"docs": [docs[0], docs[-1]], "peak_mb": [ra, rb], "ratio": round(rb / ra, 3),
                                          "in_stage_peak_mb": [a["dedup"]["memory"].get("driver_rss_peak_mb"), b["dedup"]["memory"].get("driver_rss_peak_mb")],
                                          "limit": 1.1, "ok": rb <= 1.1 * ra}
    if "dedup_e2e" in parts:
        res["dedup_e2e"] = bench_dedup_e2e(args.dedup_corpus or sizes[-1], args.timeout, log)
    res["checks"] = checks
    for k, v in checks.items():
        log(f"check {k}: {v}")
    print("wrote", write_result(name, _strip(res)))
    return res


if __name__ == "__main__":
    main()
