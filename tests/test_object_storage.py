"""Object storage: the storage layer, the commit without rename, the lease lock and whole runs
against a real S3 server (moto's, on loopback, started by the tests), and inputs over HTTP.

The storage tests compare every operation on S3 with the same operation on local disk (the
oracle); the run tests compare every committed file with the local demo run's, byte for byte.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from conftest import (
    SIFTMIX,
    S3Server,
    committed,
    committed_s3_files,
    run_outputs,
    write_demo_config,
)


def _local_tree(root: Path) -> Path:
    for rel, data in {"a/x.jsonl": b'{"text": "x"}\n', "a/b/y.jsonl.gz": gzip.compress(b'{"text": "y"}\n'),
                      "a/b/c/z.txt": b"zzz", "a/.hidden/h.txt": b"h", "top.parquet": b"",
                      "a/b/w.warc.wet.gz": b"w" * 1000}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"n": list(range(5000)), "s": [str(i) * 3 for i in range(5000)]}), root / "top.parquet",
                   row_group_size=1000)
    return root


def test_storage_on_s3_does_what_it_does_on_disk(s3, tmp_path):
    """glob (with **), walk, listdir, stat, reads (streams, ranges, Parquet), writes, copy and
    remove on S3 give what they give on local disk for the same tree."""
    from siftmix.pipeline.core import storage

    local = str(_local_tree(tmp_path / "tree"))
    url = s3.bucket("tree-bucket") + "/tree"
    storage.copy(local, url)

    def rel(paths, root):
        return sorted(storage.relpath(p, root) for p in paths)

    for pat in ("*", "a/*", "a/**", "**/*.jsonl*", "a/**/*.txt", "a/b/*.gz", "**", "a/*/c", "nothing/*"):
        want = rel(storage.glob(os.path.join(local, pat)), local)
        assert rel(storage.glob(storage.join(url, pat)), url) == want, pat
    assert rel(storage.walk_files(url), url) == rel(storage.walk_files(local), local)
    assert storage.listdir(storage.join(url, "a")) == [n for n in storage.listdir(os.path.join(local, "a"))]
    assert rel(storage.list_files(storage.join(url, "a")), url) == rel(storage.list_files(os.path.join(local, "a")), local)
    for f in storage.walk_files(local):
        u = storage.join(url, storage.relpath(f, local))
        assert storage.size(u) == storage.size(f) and storage.isfile(u) and not storage.isdir(u)
        assert storage.read_bytes(u) == Path(f).read_bytes()
    assert storage.isdir(storage.join(url, "a/b")) and not storage.exists(storage.join(url, "a/nope"))

    # ranges: seeks anywhere, reads of any size, past the end
    blob = os.urandom(300_000)
    storage.write_bytes(storage.join(url, "blob.bin"), blob)
    with storage.open_read(storage.join(url, "blob.bin"), random_access=True) as fh:
        for start, n in ((0, 10), (299_990, 100), (123_456, 70_000), (5, 0), (300_000, 5), (1, 299_999)):
            fh.seek(start)
            assert fh.read(n) == blob[start:start + n]
    pf = storage.parquet_file(storage.join(url, "top.parquet"))
    assert pf.metadata.num_row_groups == 5 and pf.read_row_group(3, columns=["s"]).equals(
        storage.parquet_file(os.path.join(local, "top.parquet")).read_row_group(3, columns=["s"]))
    with storage.open_decompressed(storage.join(url, "a/b/y.jsonl.gz")) as fh:
        assert fh.read() == b'{"text": "y"}\n'

    # fingerprints: size and ETag; a rewrite with other bytes of the same size changes it
    f = storage.join(url, "a/x.jsonl")
    fp = storage.fingerprint([f])
    assert storage.fingerprint([f]) == fp
    storage.write_bytes(f, b'{"text": "X"}\n')
    assert storage.fingerprint([f]) != fp

    back = tmp_path / "back"
    storage.copy(url, str(back))
    assert rel(storage.walk_files(str(back)), str(back)) == rel(storage.walk_files(url), url)
    storage.remove(storage.join(url, "a"))
    assert not storage.exists(storage.join(url, "a/x.jsonl")) and storage.exists(storage.join(url, "top.parquet"))


def test_a_read_survives_a_server_restart(s3):
    """A read that needs a new request while the server is down for a moment (here: after a
    seek) waits with bounded retries and goes on from the byte it had reached once the server
    is back; a server that stays away gives one line naming the object."""
    from siftmix.pipeline.core import objstore, storage

    blob = os.urandom(3_000_000)
    u = s3.bucket("restart-bucket") + "/blob.bin"
    storage.write_bytes(u, blob)
    with storage.open_read(u, random_access=True) as fh:
        head = fh.read(1_000_000)
        s3.stop()
        back = threading.Timer(1.5, s3.start)
        back.start()
        t0 = time.time()
        fh.seek(2_000_000)  # a new ranged GET, while the server is down
        tail = fh.read()
        fh.seek(1_000_000)
        middle = fh.read(1_000_000)
        back.join()
    assert head + middle + tail == blob and time.time() - t0 >= 1
    s3.stop()
    objstore.configure({"retries": 2, "backoff_s": 0.01})
    try:
        with pytest.raises(OSError) as e:
            storage.read_bytes(u)
        assert str(e.value).startswith("stat failed after 2 attempts: ") or "read failed after 2 attempts" in str(e.value)
        assert str(e.value).endswith(u) and "\n" not in str(e.value)
    finally:
        s3.start()


def test_commit_without_rename_on_s3(s3):
    """A stage's files go under an attempt prefix; the manifest, written last, names the attempt
    and lists every file with size and ETag; a failed attempt leaves no manifest; attempts
    never committed are removed by the next run of the stage; the committed one stays."""
    from siftmix.pipeline.core import storage
    from siftmix.pipeline.core.manifest import committed_files, read_manifest

    run = s3.bucket("commit-bucket") + "/run"
    stage = storage.join(run, "00_x")
    with storage.run_lock(run, "test"):
        with pytest.raises(RuntimeError):
            with storage.stage_output(stage) as out:
                storage.write_bytes(out.path("data", "a.bin"), b"half")
                raise RuntimeError("boom")
        assert read_manifest(stage) is None and storage.listdir(stage) == []
        with storage.stage_output(stage) as out:
            storage.write_bytes(out.path("data", "a.bin"), b"abc")
            storage.write_table(pa.table({"x": [1]}), out.path("data", "b.parquet"))
            m = out.commit({"stage": "x", "config_hash": "c", "input_fingerprint": "i"})
        assert [o["path"] for o in m["outputs"]] == ["data/a.bin", "data/b.parquet"]
        assert all(o["etag"] and o["size"] > 0 for o in m["outputs"])
        assert sorted(committed_files(stage)) == ["data/a.bin", "data/b.parquet"]
        # a killed attempt (files, no manifest naming it) is removed by the next run; the commit stays
        stale = storage.join(stage, "attempt-20260101T000000-1-abcdef", "data", "z.bin")
        storage.write_bytes(stale, b"zzz")
        with storage.stage_output(stage) as out:
            assert not storage.exists(stale)
            assert storage.read_bytes(storage.join(stage, m["attempt"], "data", "a.bin")) == b"abc"
            out.abort()
    assert read_manifest(stage)["attempt"] == m["attempt"]


def _lease_body(**kw) -> bytes:
    return json.dumps({"pid": 1, "host": "elsewhere", "since": time.time() - 100, "command": "siftmix run",
                       "token": "t0", "expires": time.time() + 300, **kw}).encode()


def test_lease_lock_on_s3(s3, monkeypatch):
    """A live holder's lease refuses a second siftmix with one line naming host, pid and start;
    an expired lease, or one whose pid is dead on this host, is taken over; a lost lease stops
    the commit."""
    from siftmix.pipeline.core import storage

    run = s3.bucket("lock-bucket") + "/run"
    lock = storage.join(run, storage.LOCK)
    storage.write_bytes(lock, _lease_body())  # another host's live lease
    with pytest.raises(storage.RunDirLocked) as e:
        with storage.run_lock(run, "siftmix run"):
            pass
    assert "in use by siftmix run (pid 1 on elsewhere, since" in str(e.value) and run in str(e.value)

    logs = []
    storage.write_bytes(lock, _lease_body(expires=time.time() - 1))  # expired
    with storage.run_lock(run, "siftmix run", logs.append):
        body = json.loads(storage.read_bytes(lock))
        assert body["pid"] == os.getpid() and body["token"] != "t0"
    assert "whose lease expired" in logs[-1] and not storage.exists(lock)  # released: removed

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage.write_bytes(lock, _lease_body(pid=dead.pid, host=socket.gethostname()))
    with storage.run_lock(run, "siftmix run", logs.append):
        pass
    assert "no longer running" in logs[-1]

    # a second process while this one holds it: refused, one line; then our lease is taken from us
    with storage.run_lock(run, "siftmix run"):
        code = (f"from siftmix.pipeline.core import storage\nwith storage.run_lock({run!r}, 'siftmix run'):\n pass")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60)
        assert r.returncode != 0 and f"pid {os.getpid()} on {socket.gethostname()}" in r.stderr
        handle = storage._held[storage._lock_path(run)][0]
        monkeypatch.setattr(storage, "LEASE_S", 0.3)
        storage.write_bytes(lock, _lease_body(token="thief"))  # someone took it (our lease had expired)
        handle.stop.set()
        handle.thread.join()
        handle.stop.clear()
        handle._renew_once()
        with pytest.raises(storage.LockLost):
            storage.check_lock(run)


# --------------------------------------------------------------------------- config and CLI errors

def _validate(tmp_path, cfg: dict, env=None) -> subprocess.CompletedProcess:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return subprocess.run([*SIFTMIX, "validate", str(p)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and sum(ln.startswith("error") for ln in lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[-1]


def test_bad_urls_are_config_errors_naming_the_key(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n')
    good = {"run_dir": str(tmp_path / "run"), "stages": ["ingest"], "sources": [{"name": "s", "paths": [str(data)]}]}
    cases = [({"run_dir": "ftp://host/run"}, "run_dir: unsupported URL scheme 'ftp://'"),
             ({"sources": [{"name": "s", "paths": ["hdfs://nn/data"]}]}, "sources[0](s).paths: unsupported URL scheme 'hdfs://'"),
             ({"run_dir": "https://example.org/run"}, "run_dir: https:// is read-only"),
             ({"run_dir": "s3://user:pw@bucket/run"}, "run_dir: a URL must not hold credentials"),
             ({"storage": {"endpoint": "localhost:9000"}}, "storage.endpoint: endpoint must be an http:// or https:// URL"),
             ({"sources": [{"name": "s", "paths": [str(data)], "limit": 0}]}, "sources[0](s).limit")]
    for change, want in cases:
        r = _validate(tmp_path, {**good, **change})
        assert r.returncode == 2 and want in _one_line(r), (change, r.stderr)
        assert "pw" not in r.stderr
    r = _validate(tmp_path, {**good, "sources": [{"name": "s", "paths": [f"file://{data}"]}]})
    assert r.returncode == 0, r.stderr


def test_missing_bucket_and_bad_credentials_are_one_line(s3, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello there, a document long enough"}\n')
    cfg = {"run_dir": "s3://no-such-bucket/run", "stages": ["ingest"], "ingest": {"min_chars": 1},
           "sources": [{"name": "s", "paths": [str(data)]}]}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([*SIFTMIX, "run", str(p)], capture_output=True, text=True, timeout=120, env=os.environ)
    assert r.returncode in (1, 2) and _one_line(r) == "error: the bucket does not exist (write): s3://no-such-bucket/run"
    # an input in a missing bucket: a config error naming the key
    r = _validate(tmp_path, {**cfg, "run_dir": str(tmp_path / "run"),
                             "sources": [{"name": "s", "paths": ["s3://no-such-bucket/x/*.jsonl"]}]})
    assert r.returncode == 2 and "sources[0](s).paths: cannot read" in _one_line(r) and "bucket does not exist" in r.stderr

    # bad credentials: a second server that checks them (moto's IAM auth on)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                           env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        cfg["run_dir"] = "s3://some-bucket/run"
        p.write_text(yaml.safe_dump(cfg))
        r = subprocess.run([*SIFTMIX, "run", str(p)], capture_output=True, text=True, timeout=120, env=env)
        line = _one_line(r)
        assert r.returncode in (1, 2) and line.startswith("error: access denied") and "s3://some-bucket/run" in line
        assert S3Server.SECRET not in r.stderr + r.stdout
    finally:
        srv.kill()
        srv.wait()


# --------------------------------------------------------------------------- whole runs on S3

def _s3_demo_config(path: Path, corpus_url: str, local_corpus: Path, run_url: str, **extra) -> Path:
    """The demo config of the local reference run, with the corpus and the run dir on S3."""
    write_demo_config(path, local_corpus, path.parent / "unused")
    cfg = yaml.safe_load(path.read_text())
    cfg["run_dir"] = run_url
    for s in cfg["sources"]:
        s["paths"] = [p.replace(str(local_corpus), corpus_url) for p in s["paths"]]
    cfg["decontam"]["benchmarks"] = [corpus_url + "/benchmarks"]
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _assert_same_as_reference(s3_server: S3Server, run_url: str, reference: Path) -> None:
    got = {k: v for k, v in committed_s3_files(s3_server, run_url).items() if "/" in k}
    want = {k: v for k, v in run_outputs(reference).items() if "/" in k}
    assert sorted(got) == sorted(want)
    for k in [k for k in want if k.endswith("audit.json")]:  # it echoes the config: benchmarks: <where they are>
        a, b = json.loads(got[k]), json.loads(want[k])
        assert [u.rsplit("/", 1)[-1] for u in a["config"].pop("benchmarks")] == \
               [u.rsplit("/", 1)[-1] for u in b["config"].pop("benchmarks")]
        assert a == b
        del got[k], want[k]
    assert [k for k in want if got[k] != want[k]] == []


def _env(s3_server: S3Server) -> dict:
    return {**os.environ, **s3_server.env, "RAY_AUTH_MODE": "disabled"}


def _wait_for(pred, timeout: float = 240, every: float = 0.05) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(every)
    return False


def _stage_running(s3_server: S3Server, bucket: str, stage: str) -> bool:
    """The stage has written a file under an attempt and has no manifest yet."""
    try:
        r = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"run/{stage}/")
    except Exception:  # noqa: BLE001 - the server is down for a moment
        return False
    keys = [o["Key"] for o in r.get("Contents", [])]
    return any("/attempt-" in k for k in keys) and f"run/{stage}/_manifest.json" not in keys


@pytest.mark.integration
def test_kill_9_mid_stage_on_s3_then_rerun_is_identical(s3_server, s3_corpus, demo_corpus, demo_reference, tmp_path):
    run = s3_server.bucket("kill-run") + "/run"
    config = _s3_demo_config(tmp_path / "s3.yaml", s3_corpus, demo_corpus, run)
    with open(tmp_path / "crash.log", "w") as log:
        proc = subprocess.Popen([*SIFTMIX, "run", str(config)], env=_env(s3_server), stdout=log, stderr=log,
                                start_new_session=True)
    try:
        assert _wait_for(lambda: _stage_running(s3_server, "kill-run", "30_decontam") or proc.poll() is not None), \
            "decontam did not start"
        assert proc.poll() is None, "the run ended before it could be killed:\n" + (tmp_path / "crash.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    objs = s3_server.objects("kill-run")
    assert "run/30_decontam/_manifest.json" not in objs and "run/.siftmix.lock" in objs  # the dead driver's lease
    r = subprocess.run([*SIFTMIX, "run", str(config)], capture_output=True, text=True, timeout=600, env=_env(s3_server))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "took over the lock of siftmix run" in r.stderr and "no longer running" in r.stderr
    assert "ingest: finished earlier, skipped" in r.stderr and "decontam: finished earlier" not in r.stderr
    _assert_same_as_reference(s3_server, run, demo_reference)  # no attempt left over either


@pytest.mark.integration
def test_demo_on_s3_with_a_server_outage_is_byte_identical_to_the_local_run(s3_server, s3_corpus, demo_corpus,
                                                                           demo_reference, tmp_path):
    """The whole demo with its inputs, benchmarks and run dir on s3://, the S3 server stopped for
    3 s while dedup runs, then back: the requests in flight and those made meanwhile are retried
    with backoff, the run completes, and every committed file is byte-identical to the local
    run's; the secret key is in no object and no log; a rerun skips every stage. (One run for
    both properties: each whole demo on S3 costs ~50 s of CI.)"""
    run = s3_server.bucket("demo-run") + "/run"
    config = _s3_demo_config(tmp_path / "s3.yaml", s3_corpus, demo_corpus, run)
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen([*SIFTMIX, "run", str(config)], env=_env(s3_server), stdout=log, stderr=log)
    try:
        assert _wait_for(lambda: _stage_running(s3_server, "demo-run", "20_dedup") or proc.poll() is not None)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        s3_server.stop()
        time.sleep(3)
        s3_server.start()
        assert proc.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        if s3_server.server is None:
            s3_server.start()
    out = (tmp_path / "run.log").read_text()
    assert f"report: {run}/report.html" in out
    _assert_same_as_reference(s3_server, run, demo_reference)
    everything = s3_server.objects("demo-run")
    assert not [k for k, v in everything.items() if S3Server.SECRET.encode() in v]
    assert S3Server.SECRET not in out and "siftmix-test-key" not in out
    assert ".siftmix.lock" not in everything  # released
    m = json.loads(everything["run/00_ingest/_manifest.json"])
    assert m["manifest_version"] == 2 and all(o.get("etag") for o in m["outputs"])
    # the rerun skips every stage: fingerprints (size + ETag) and config unchanged
    r = subprocess.run([*SIFTMIX, "run", str(config)], capture_output=True, text=True, timeout=600, env=_env(s3_server))
    assert r.returncode == 0 and r.stderr.count("finished earlier, skipped") == 5, r.stderr[-3000:]


# --------------------------------------------------------------------------- listings, HTTP, missing files

class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range requests (Python's own handler has none) and ETags."""

    def log_message(self, *a):
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        data = Path(path).read_bytes()
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a or 0), min(int(b) if b else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{len(data)}-{int(os.path.getmtime(path))}"')
        self.end_headers()
        import io

        return io.BytesIO(data[start:end + 1])


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _crawl_copy(demo_corpus: Path, root: Path) -> list[str]:
    """The demo's WET files laid out like Common Crawl under ``root``, and their listing lines."""
    lines = []
    for i, f in enumerate(sorted((demo_corpus / "cc").glob("*.wet.gz"))):
        line = f"crawl-data/CC-DEMO/segments/{i % 3}/wet/{f.name}"
        (root / line).parent.mkdir(parents=True, exist_ok=True)
        (root / line).write_bytes(f.read_bytes())
        lines.append(line)
    (root / "crawl-data" / "CC-DEMO" / "wet.paths.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return lines


def _ingest_rows(run_dir: Path) -> dict:
    from siftmix.pipeline.core.shards import read_shards

    st = committed(run_dir / "00_ingest")
    return {"data": read_shards(str(st / "data")).to_pylist(), "rejected": read_shards(str(st / "rejected"))}


def _ingest_config(tmp_path, name: str, source: dict) -> dict:
    return {"run_dir": str(tmp_path / name), "stages": ["ingest"], "ingest": {"min_chars": 50},
            "sources": [{"name": "common_crawl", "format": "wet", **source}]}


def _run_ingest(tmp_path, name: str, source: dict) -> subprocess.CompletedProcess:
    """``siftmix run`` of an ingest-only config (a Ray start each: for the CLI's own behaviour)."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(_ingest_config(tmp_path, name, source)))
    return subprocess.run([*SIFTMIX, "run", str(p)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})


def _ingest_here(tmp_path, name: str, source: dict) -> dict:
    """The same ingest in this process, on the session's Ray; its manifest."""
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.runner import run_stage

    return run_stage("ingest", config_from_dict(_ingest_config(tmp_path, name, source)), log=lambda *_: None,
                     progress=False)


@pytest.mark.integration
def test_listing_over_http_equals_the_same_files_on_disk(ray_local, demo_corpus, http_root, tmp_path):
    """A Common Crawl listing (wet.paths.gz) and its WET files served over HTTP (ranges, ETags)
    give the same documents as the local copy of the listing with a local base; ``limit`` and
    ``sample`` pick the files they say."""
    root, url = http_root
    lines = _crawl_copy(demo_corpus, root)
    listing = "crawl-data/CC-DEMO/wet.paths.gz"
    _ingest_here(tmp_path, "disk", {"paths": [str(root / listing)], "base": str(root)})
    _ingest_here(tmp_path, "http", {"paths": [f"{url}/{listing}"], "base": f"{url}/"})
    disk, web = _ingest_rows(tmp_path / "disk"), _ingest_rows(tmp_path / "http")
    assert disk["data"] == web["data"] and len(disk["data"]) > 100
    assert {json.loads(d["meta"])["file"] for d in disk["data"]} == set(lines)
    assert run_outputs(tmp_path / "disk") == run_outputs(tmp_path / "http")

    _ingest_here(tmp_path, "limited", {"paths": [f"{url}/{listing}"], "base": f"{url}/", "limit": 2})
    assert {json.loads(d["meta"])["file"] for d in _ingest_rows(tmp_path / "limited")["data"]} == set(lines[:2])
    from siftmix.pipeline.ingest.config import SourceConfig
    from siftmix.pipeline.ingest.readers import listing_lines

    src = SourceConfig(name="cc", paths=[str(root / listing)], sample={"n": 3, "seed": 4})
    picked = listing_lines(src, str(root / listing))
    assert len(picked) == 3 and picked == [ln for ln in lines if ln in picked] and picked == listing_lines(src, str(root / listing))
    assert picked != listing_lines(SourceConfig(name="cc", paths=[str(root / listing)], sample={"n": 3, "seed": 5}),
                                   str(root / listing)) or len(lines) <= 3


@pytest.mark.integration
def test_a_listed_file_that_is_missing_fails_or_is_a_rejected_row(ray_local, demo_corpus, http_root, tmp_path):
    root, url = http_root
    lines = _crawl_copy(demo_corpus, root)
    (root / lines[1]).unlink()
    listing = f"{url}/crawl-data/CC-DEMO/wet.paths.gz"
    r = _run_ingest(tmp_path, "fail", {"paths": [listing], "base": f"{url}/"})
    assert r.returncode == 1 and _one_line(r) == (f"error: source 'common_crawl': {url}/{lines[1]}: no such file "
                                                   "(set on_missing: reject to count it as a rejected row and go on)")
    _ingest_here(tmp_path, "reject", {"paths": [listing], "base": f"{url}/", "on_missing": "reject"})
    rej = _ingest_rows(tmp_path / "reject")["rejected"]
    missing = rej.filter(pa.compute.equal(rej["reason"], "missing_file")).to_pylist()
    assert len(missing) == 1 and json.loads(missing[0]["meta"]) == {"file": lines[1], "error": f"no such file: {url}/{lines[1]}"}
    m = json.loads((tmp_path / "reject" / "00_ingest" / "_manifest.json").read_text())
    assert m["counts"]["rejected_by_reason"]["missing_file"] == 1
    assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
