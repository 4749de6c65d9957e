"""``siftmix serve`` (contamination/serve.py): the lookup service over an n-gram index, started on
loopback (uvicorn in a thread, port 0) over an index of the demo run's quality stage, built once.

The API contract and its bad requests (400 bad JSON / fields, 413 oversize with and without a
Content-Length, 404/405), ``contains`` on planted passages equal to a brute-force 13-gram match
against every indexed document (spans, documents, offsets, snippets) and on clean text, ``audit``
byte-equal to the scan-based audit of the same stage, escaping, the page in headless Chromium
(DevTools protocol over a pipe), a bounded load test, and the CLI's errors.
"""

import http.client
import json
import statistics
import threading
import time
from collections import defaultdict
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from conftest import committed, run_cli
from test_appendix_c import oracle_words

pytestmark = pytest.mark.integration

N = 13
CLEAN = " ".join(f"zqv{i}x glorp{i * 7}" for i in range(40))  # words in no training document


def _request(port: int, method: str, path: str, body=None, headers=None, chunked=False):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if chunked:
            c.putrequest(method, path)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            c.putheader("Transfer-Encoding", "chunked")
            c.endheaders()
            for i in range(0, len(body), 1 << 16):
                part = body[i:i + (1 << 16)]
                c.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            c.send(b"0\r\n\r\n")
        else:
            c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def _post_json(port, path, obj):
    status, headers, data = _request(port, "POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})
    return status, headers, json.loads(data)


@pytest.fixture(scope="module")
def served(ray_local, demo_reference, demo_corpus, tmp_path_factory):
    import uvicorn
    from siftmix.contamination.index import IndexConfig, IndexStage
    from siftmix.contamination.serve import make_app
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.runner import run_stage

    tmp = tmp_path_factory.mktemp("serve")
    stage_dir = str(demo_reference / "10_quality")  # 70 documents, planted near-duplicates among them
    cfg = config_from_dict({"run_dir": str(tmp), "stages": ["ingest"], "sources": [{"name": "x", "paths": [stage_dir]}]})
    idx_dir = str(tmp / "index")
    run_stage(IndexStage(stage_dir, IndexConfig(partitions=4)), cfg, log=lambda *_: None, progress=False, out_dir=idx_dir)
    docs = [(i, s, t) for p in sorted((committed(stage_dir) / "data").glob("*.parquet"))
            for i, s, t in zip(*pq.read_table(p, columns=["id", "source", "text"]).to_pydict().values())]
    grams = defaultdict(set)  # brute force: 13-gram word tuple -> {(document id, char offset)}
    for doc_id, _, text in docs:
        ws = oracle_words(text)
        for k in range(len(ws) - N + 1):
            grams[tuple(w for w, _, _ in ws[k:k + N])].add((doc_id, ws[k][1]))
    app = make_app(idx_dir, max_contains_bytes=64 * 1024, max_audit_bytes=1 << 20)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the service did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield SimpleNamespace(port=port, url=f"http://127.0.0.1:{port}", idx_dir=idx_dir, stage_dir=stage_dir, docs=docs,
                              grams=grams, tmp=tmp, corpus=demo_corpus, reference=demo_reference, cfg=cfg)
    finally:
        server.should_exit = True
        thread.join(30)


def _passage(text: str, start_word: int, n_words: int) -> str:
    ws = oracle_words(text)
    return text[ws[start_word][1]:ws[start_word + n_words - 1][2]]


def _planted(s) -> str:
    """Clean text with two passages of training documents (and markup) in it."""
    long = [t for _, _, t in s.docs if len(oracle_words(t)) > 80]
    a, b = long[0], long[len(long) // 2]
    return (f"<script>alert('x')</script> {CLEAN[:120]} {_passage(a, 20, 25)} <img src=x onerror=alert(1)> "
            f"{CLEAN[120:300]}\n{_passage(b, 40, 16)} {CLEAN[300:]}")


def _oracle_matches(s, text: str) -> list[tuple[int, int, frozenset]]:
    ws = oracle_words(text)
    out = []
    for k in range(len(ws) - N + 1):
        hit = s.grams.get(tuple(w for w, _, _ in ws[k:k + N]))
        if hit:
            out.append((ws[k][1], ws[k + N - 1][2], frozenset(hit)))
    return out


def test_contains_equals_brute_force(served):
    s = served
    text = _planted(s)
    status, headers, r = _post_json(s.port, "/v1/contains", {"text": text, "max_docs": 1000, "snippets": True})
    assert status == 200 and headers["x-content-type-options"] == "nosniff"
    want = _oracle_matches(s, text)
    assert len(want) == 13 + 4  # the windows of 13 words in the passages of 25 and 16 words
    got = [(m["start"], m["end"], frozenset((d["id"], d["offset"]) for d in m["documents"])) for m in r["matches"]]
    assert got == want
    assert all(m["occurrences"] == len(m["documents"]) for m in r["matches"])
    assert r["ngrams"] == len(oracle_words(text)) - N + 1 and r["matched_ngrams"] == len(want)
    # two planted passages: two highlighted spans, each the passage's extent
    assert [(sp["start"], sp["end"]) for sp in r["spans"]] == [(want[0][0], want[12][1]), (want[13][0], want[-1][1])]
    assert [sp["url"] for sp in r["spans"]] == [r["matches"][sp["match"]]["documents"][0]["url"] for sp in r["spans"]]
    # max_matches bounds the matches listed, not the count nor the spans
    _, _, short = _post_json(s.port, "/v1/contains", {"text": text, "max_matches": 3})
    assert len(short["matches"]) == 3 and short["truncated"] and not r["truncated"]
    assert short["matched_ngrams"] == len(want) and short["spans"] == r["spans"]
    texts = {i: (src, t) for i, src, t in s.docs}
    for m in r["matches"]:
        d = m["documents"][0]
        assert d["source"] == texts[d["id"]][0] and m["text"] == text[m["start"]:m["end"]]
        # the snippet's span is the same 13 words in the training document, at the offset given
        snip = d["snippet"][d["span"][0]:d["span"][1]]
        assert [w for w, _, _ in oracle_words(snip)] == [w for w, _, _ in oracle_words(m["text"])]
        assert texts[d["id"]][1].find(snip, d["offset"]) == d["offset"]
        status, _, doc = _request(s.port, "GET", d["url"] + "&chars=50")
        doc = json.loads(doc)
        assert status == 200 and doc["id"] == d["id"] and doc["snippet"][doc["span"][0]:doc["span"][1]] == snip
    # clean text and text with no 13-gram
    status, _, r = _post_json(s.port, "/v1/contains", {"text": CLEAN})
    assert status == 200 and r["matches"] == [] and r["spans"] == [] and r["ngrams"] == len(CLEAN.split()) - N + 1
    assert _post_json(s.port, "/v1/contains", {"text": ""})[2]["ngrams"] == 0
    # max_docs bounds the occurrences listed, not their count
    many = max((m for m in s.grams.values()), key=len)
    assert len({d for d, _ in many}) > 1
    doc_id, off = min(many)
    t = next(t for i, _, t in s.docs if i == doc_id)
    status, _, r = _post_json(s.port, "/v1/contains", {"text": _passage(t, [w[1] for w in oracle_words(t)].index(off), N),
                                                       "max_docs": 1})
    assert status == 200 and r["matches"][0]["occurrences"] == len(many) and len(r["matches"][0]["documents"]) == 1


def test_api_contract_and_bad_requests(served):
    s = served
    status, _, r = _request(s.port, "GET", "/health")
    m = json.loads((committed(s.idx_dir).parent / "_manifest.json").read_text())
    assert status == 200 and json.loads(r)["status"] == "ok" and json.loads(r)["documents"] == m["index"]["documents"]
    status, _, r = _request(s.port, "GET", "/v1/index")
    info = json.loads(r)
    assert status == 200 and info["index"] == m["index"] and info["source_stage"]["stage"] == "quality"

    def one_line_error(status_want, *args, **kw):
        status, headers, data = _request(s.port, *args, **kw)
        err = json.loads(data)["error"]
        assert status == status_want and headers["content-type"] == "application/json" and "\n" not in err and err
        return err

    js = {"Content-Type": "application/json"}
    assert "bad JSON" in one_line_error(400, "POST", "/v1/contains", b'{"text": "abc', js)
    assert "not UTF-8" in one_line_error(400, "POST", "/v1/contains", b'{"text": "\xff"}', js)
    assert '"text"' in one_line_error(400, "POST", "/v1/contains", b'{"txt": "abc"}', js)
    assert '"text"' in one_line_error(400, "POST", "/v1/contains", b'{"text": 5}', js)
    assert "JSON object" in one_line_error(400, "POST", "/v1/contains", b'["abc"]', js)
    assert "max_docs" in one_line_error(400, "POST", "/v1/contains", b'{"text": "a", "max_docs": 0}', js)
    assert "max_matches" in one_line_error(400, "POST", "/v1/contains", b'{"text": "a", "max_matches": "5"}', js)
    big = json.dumps({"text": "word " * 20_000}).encode()  # 100 KB > the 64 KiB limit given to make_app
    assert "limit is 65,536 bytes" in one_line_error(413, "POST", "/v1/contains", big, js)
    assert "over the limit" in one_line_error(413, "POST", "/v1/contains", big, js, chunked=True)
    assert "not allowed" in one_line_error(405, "GET", "/v1/contains")
    assert "not allowed" in one_line_error(405, "DELETE", "/v1/index")
    assert "not allowed" in one_line_error(405, "PUT", "/")
    assert "no such path" in one_line_error(404, "GET", "/v1/nothing")
    assert "no document" in one_line_error(404, "GET", "/v1/doc/99999999?offset=0")
    assert "integers" in one_line_error(400, "GET", "/v1/doc/abc")
    assert "starts at character" in one_line_error(400, "GET", "/v1/doc/0?offset=999999999")
    assert "empty" in one_line_error(400, "POST", "/v1/audit", b"")
    assert "line 2" in one_line_error(400, "POST", "/v1/audit?name=b.jsonl", b'{"text": "a b c"}\n{oops\n')
    assert "format" in one_line_error(400, "POST", "/v1/audit?format=xml", b'{"text": "a"}\n')
    assert "control characters" in one_line_error(400, "POST", "/v1/audit?name=a%00b.jsonl", b'{"text": "a"}\n')
    assert "over the limit" in one_line_error(413, "POST", "/v1/audit", b"x" * ((1 << 20) + 1), chunked=True)
    status, headers, page = _request(s.port, "GET", "/")
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    from browser import outside_resources

    assert outside_resources(page.decode()) == []


def test_audit_equals_scan_audit_and_escapes(served):
    from siftmix.contamination.stage import FolderAuditStage
    from siftmix.pipeline.config import config_from_dict
    from siftmix.pipeline.runner import run_stage

    s = served
    # the demo benchmark with the most dirty examples in this stage (decontam scanned it)
    ref = json.loads((s.reference / "30_decontam" / "_manifest.json").read_text())["benchmarks"]
    name = max(ref, key=lambda b: b["dirty"])["name"]
    bench = next(p for p in sorted((s.corpus / "benchmarks").iterdir()) if p.name.startswith(name + "."))
    cfg = config_from_dict({"run_dir": str(s.tmp / "scan"), "stages": ["ingest", "decontam"],
                            "sources": [{"name": "x", "paths": [s.stage_dir]}], "decontam": {"benchmarks": [str(bench)]}})
    run_stage(FolderAuditStage(s.stage_dir), cfg, log=lambda *_: None, progress=False)
    scan = committed(s.tmp / "scan" / "30_audit")
    want = (scan / "audit.json").read_bytes()
    recorded = json.loads(want)["config"]["benchmarks"][0]  # the name the service records is the one given
    assert sum(b["dirty"] for b in json.loads(want)["benchmarks"]) > 0
    for fmt in ("json", "html"):
        status, headers, got = _request(s.port, "POST", f"/v1/audit?name={recorded}&format={fmt}", bench.read_bytes())
        assert status == 200, got
        assert got == (scan / f"audit.{fmt}").read_bytes()
    # a dirty example with markup in it comes back escaped in audit.html
    t = next(t for _, _, t in s.docs if len(oracle_words(t)) > 40)
    body = json.dumps({"id": "x1", "text": f"<script>alert('pwned')</script> {_passage(t, 5, 20)}"}).encode() + b"\n"
    status, headers, html = _request(s.port, "POST", "/v1/audit?name=evil.jsonl&format=html", body)
    html = html.decode()
    assert status == 200 and "script-src 'unsafe-inline'" in headers["content-security-policy"]
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html and "<script>alert" not in html
    status, _, r = _request(s.port, "POST", "/v1/audit?name=evil.jsonl", body)
    assert status == 200 and json.loads(r)["benchmarks"][0]["dirty"] == 1


def test_page_in_headless_chromium(served):
    from browser import ARTIFACTS, DevTools, chromium

    s = served
    text = _planted(s)
    _, _, want = _post_json(s.port, "/v1/contains", {"text": text})
    with DevTools(chromium()) as page:
        page.navigate(s.url + "/")
        page.evaluate("document.getElementById('text').value = " + json.dumps(text))
        page.evaluate("document.getElementById('submit').click()")
        marks = page.wait_for("document.querySelectorAll('#out mark').length")
        assert marks == len(want["spans"]) == 2
        shown = page.evaluate("Array.from(document.querySelectorAll('#out mark')).map(m => m.textContent)")
        assert shown == [text[sp["start"]:sp["end"]] for sp in want["spans"]]
        assert page.evaluate("document.getElementById('out').textContent") == text  # the text itself, unchanged
        assert page.evaluate("document.querySelectorAll('#out script, #out img').length") == 0  # never parsed as HTML
        hrefs = page.evaluate("Array.from(document.querySelectorAll('#out mark a')).map(a => a.getAttribute('href'))")
        assert hrefs == [sp["url"] for sp in want["spans"]]
        page.evaluate("document.querySelector('#out mark a').click()")
        assert page.wait_for("document.querySelectorAll('#snippet mark').length") == 1
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "serve-page.png"
        shot.write_bytes(page.screenshot())
        assert shot.stat().st_size > 10_000
        assert page.errors == []


def test_load_2000_requests_8_clients(served):
    """A bounded load test: 2,000 contains requests (dirty and clean, in turn) from 8 threads,
    each on its own keep-alive connection; zero errors; p50 / p99 printed (no timed assertion)."""
    s = served
    bodies = [json.dumps({"text": _planted(s)}).encode(), json.dumps({"text": CLEAN}).encode()]
    total, clients = 2000, 8
    lat, errors, lock = [], [], threading.Lock()

    def client(k: int):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        mine = []
        for i in range(k, total, clients):
            t0 = time.perf_counter()
            try:
                c.request("POST", "/v1/contains", body=bodies[i % 2], headers={"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                if r.status != 200 or (json.loads(data)["matched_ngrams"] > 0) != (i % 2 == 0):
                    raise RuntimeError(f"status {r.status}")
            except Exception as e:  # counted, not raised: the test reports every error
                with lock:
                    errors.append(repr(e))
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
            mine.append(time.perf_counter() - t0)
        c.close()
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    print(f"\nload: {len(lat)} requests, {clients} clients, {wall:.1f} s, {len(lat) / wall:.0f} req/s, "
          f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, errors {len(errors)}")
    assert len(lat) == total and errors == []


def test_cli_serve_errors(served, tmp_path):
    r = run_cli("serve", tmp_path / "nothing")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: INDEX: {tmp_path / 'nothing'} does not exist"
    r = run_cli("serve", served.stage_dir)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(f"error: audit: {served.stage_dir} is not a finished index")
    r = run_cli("serve", "--help")
    assert r.returncode == 0 and "/v1/contains" in r.stdout


def test_cli_serve_warns_off_loopback(served):
    """The real command: it answers /health, and warns when bound to a non-loopback address."""
    import socket
    import subprocess

    from conftest import SIFTMIX

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    p = subprocess.Popen([*SIFTMIX, "serve", served.idx_dir, "--host", "0.0.0.0", "--port", str(port)],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.time() + 60, None
        while time.time() < deadline and p.poll() is None:
            try:
                status, _, body = _request(port, "GET", "/health")
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert "warning: binding 0.0.0.0" in err


def test_stale_index_answers_409(served, tmp_path):
    """An index whose stage changed since the build: lookups still answer; snippets and audits
    answer 409 with one line (document references would name other rows); the CLI warns."""
    import shutil
    import socket

    from siftmix.contamination.index import StaleIndexError
    from siftmix.contamination.serve import (
        RequestError,
        audit_file,
        contains,
        doc_snippet,
        make_app,
    )

    stale = tmp_path / "index"
    shutil.copytree(served.idx_dir, stale)
    m = json.loads((stale / "_manifest.json").read_text())
    m["source_stage"]["output_fingerprint"] = "0" * 16  # as if the stage had been rerun on other data
    (stale / "_manifest.json").write_text(json.dumps(m))
    app = make_app(str(stale))
    assert "rebuild the index" in app.state.warning
    idx, text = app.state.index, _planted(served)
    assert contains(idx, text)["matched_ngrams"] == 13 + 4

    def refused(call) -> tuple[int, str]:
        try:
            call()
        except RequestError as e:  # what the routes answer
            return e.status, e.message
        except StaleIndexError as e:  # contains() itself; its route answers 409
            return 409, str(e)
        return 200, ""

    for call in (lambda: doc_snippet(idx, 0, 0, N, 50), lambda: contains(idx, text, snippets=True),
                 lambda: audit_file(idx, json.dumps({"text": text}).encode() + b"\n", "b.jsonl")):
        status, msg = refused(call)
        assert status == 409 and f"{served.stage_dir} has output fingerprint" in msg and "\n" not in msg
    with socket.socket() as busy:  # the command warns at start-up, then cannot bind a port in use: exit 1
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", stale, "--port", port, timeout=120)
    assert r.returncode == 1 and f"warning: index: the indexed stage {served.stage_dir} has output fingerprint" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: serve: cannot listen on 127.0.0.1:{port}")
