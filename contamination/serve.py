"""``siftmix serve INDEX``: a read-only contamination lookup service over a built n-gram index
(:mod:`.index`), on FastAPI + uvicorn.

- ``GET /``: a self-contained page (inline CSS and JS, a Content-Security-Policy that allows
  nothing else): paste text, see the 13-grams found in the training data highlighted, each
  linking to its training snippet. Text is inserted with ``textContent`` only.
- ``POST /v1/contains`` ``{"text": ..., "snippets": false, "max_docs": 10, "max_matches": 10000}``:
  every 13-gram (appendix C words) of the text found in the index (the first ``max_matches``
  listed, all counted), with its character span in the text, the training documents holding it
  (id, source, shard, row and the character offset there; the first ``max_docs`` of them, with
  the number of occurrences) and a link to each one's snippet; the merged spans to highlight,
  each with the link of its first match.
- ``GET /v1/doc/{doc}?offset=&size=13&chars=200``: the training text around an n-gram.
- ``POST /v1/audit?name=<file name>&format=json|html|md``: the body is one benchmark file in the
  format ``siftmix audit -b`` reads (JSONL; ``.json``/``.csv`` by the name's suffix); the answer is
  audit.json (or audit.html / audit.md) of the audit against the index, the same function
  (:func:`.index.audit_by_index`) the ``siftmix audit --index`` stage runs. Its ``config.benchmarks``
  records the given name.
- ``GET /health``, ``GET /v1/index`` (the manifest's index block, its source stage and config).

Bodies over the limits (default 1 MB for contains, 64 MB for audit) get 413; bad JSON, missing
fields and bad benchmark files get 400; snippets (and audits, which show them) of an index whose
stage changed since the build get 409; every error is ``{"error": "<one line>"}``. The index is
loaded once (partitions memory-mapped) when the app is made.
"""


import base64
import hashlib
import ipaddress
import json
import os
import tempfile
import time

import numpy as np
from siftmix.pipeline.core import storage
from siftmix.pipeline.core.errors import StageError
from siftmix.pipeline.core.text import ngram_hashes, words

from .appendix_c import TRAIN_N
from .benchmarks import BenchmarkError, benchmark_name, load_benchmark
from .config import DecontamConfig
from .index import Index, StaleIndexError, audit_by_index

MAX_CONTAINS_BYTES = 1 << 20
MAX_AUDIT_BYTES = 64 << 20
SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".jsonl.zst")


class RequestError(Exception):
    """A request the service refuses: its HTTP status and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(str(message).split())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- pure lookup logic

def contains(idx: Index, text: str, max_docs: int = 10, snippets: bool = False, chars: int = 200,
             max_matches: int = 10_000) -> dict:
    """Every 13-gram of ``text`` found in the index (the first ``max_matches`` listed): its span in
    the text and its training documents (the first ``max_docs`` by document number, and how many
    occurrences there are)."""
    w = words([text])
    h, first = ngram_hashes(w, TRAIN_N)
    out = {"words": int(len(w.start)), "ngrams": int(len(h)), "n": TRAIN_N, "matched_ngrams": 0, "documents": 0,
           "matches": [], "truncated": False, "spans": []}
    if not len(h):
        return out
    ph, pd, po = idx.postings(TRAIN_N, np.unique(h))  # by hash, then document, then offset
    if not len(ph):
        return out
    hit, at, n = np.unique(ph, return_index=True, return_counts=True)
    pos = np.nonzero(np.isin(h, hit))[0]  # the text's matching n-grams, in text order
    j = np.searchsorted(hit, h[pos])
    starts, ends = w.start[first[pos]].astype(np.int64), w.end[first[pos] + TRAIN_N - 1].astype(np.int64)
    cache: dict = {}
    matches = []
    listed = slice(0, max_matches)
    for s, e, hv, a, c in zip(starts[listed].tolist(), ends[listed].tolist(), hit[j][listed].tolist(),
                              at[j][listed].tolist(), n[j][listed].tolist()):
        docs = []
        for d, o in zip(pd[a:a + min(c, max_docs)].tolist(), po[a:a + min(c, max_docs)].tolist()):
            ref = {**idx.ref(d), "offset": o, "url": f"/v1/doc/{d}?offset={o}&size={TRAIN_N}"}
            if snippets and not docs:  # the first document's snippet, inline
                if (d, o) not in cache:
                    cache[(d, o)] = idx.snippet(d, o, TRAIN_N, chars)
                ref.update(cache[(d, o)])
            docs.append(ref)
        matches.append({"start": s, "end": e, "text": text[s:e], "hash": f"{hv:016x}", "occurrences": c,
                        "documents": docs})
    # merged spans to highlight (overlapping 13-grams form one span), each with its first match
    new = np.ones(len(starts), bool)
    new[1:] = starts[1:] > np.maximum.accumulate(ends)[:-1]
    first_m = np.nonzero(new)[0]
    span_end = np.maximum.reduceat(ends, first_m)
    first_doc, first_off = pd[at[j[first_m]]].tolist(), po[at[j[first_m]]].tolist()
    out.update(matched_ngrams=len(pos), documents=int(len(np.unique(pd))), matches=matches,
               truncated=len(pos) > len(matches),
               spans=[{"start": int(starts[m]), "end": int(e), "match": int(m),
                       "url": f"/v1/doc/{d}?offset={o}&size={TRAIN_N}"}
                      for m, e, d, o in zip(first_m.tolist(), span_end.tolist(), first_doc, first_off)])
    return out


def doc_snippet(idx: Index, doc: int, offset: int, size: int, chars: int) -> dict:
    if not 0 <= doc < len(idx.docs()["id"]):
        raise RequestError(404, f"no document {doc} in the index (it has {len(idx.docs()['id']):,})")
    try:
        snip = idx.snippet(doc, offset, size, chars)
    except ValueError as e:
        raise RequestError(400, str(e)) from None
    except StaleIndexError as e:
        raise RequestError(409, str(e)) from None
    return {**idx.ref(doc), "offset": offset, "size": size, **snip}


def audit_file(idx: Index, body: bytes, name: str, fmt: str = "json", cfg: DecontamConfig | None = None) -> bytes:
    """The audit of one benchmark file (its bytes, its file name) against the index: the bytes of
    audit.json, audit.html or audit.md."""
    if any(not c.isprintable() for c in name):
        raise RequestError(400, "audit: name has control characters")
    base = storage.basename(name.replace("\\", "/")) or "benchmark.jsonl"
    if not base.lower().endswith(SUFFIXES):
        base += ".jsonl"
    if base.startswith("."):
        raise RequestError(400, f"name: {name!r} is not a benchmark file name")
    cfg = (cfg or DecontamConfig()).model_copy(update={"benchmarks": [name]})
    with tempfile.TemporaryDirectory(prefix="siftmix-serve-") as tmp:
        path = os.path.join(tmp, "in", base)
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as fh:
            fh.write(body)
        try:
            bench = load_benchmark(path, name=benchmark_name(base), fields=cfg.fields)
        except (BenchmarkError, UnicodeDecodeError) as e:
            raise RequestError(400, str(e).replace(path, base)) from None
        if not bench.texts:
            raise RequestError(400, f"{base}: no examples")
        try:
            audit_by_index(idx, [bench], cfg, os.path.join(tmp, "out"), subsets=False)  # a report is the answer
        except StaleIndexError as e:
            raise RequestError(409, str(e)) from None
        except StageError as e:
            raise RequestError(400, str(e)) from None
        with open(os.path.join(tmp, "out", f"audit.{fmt}"), "rb") as fh:
            return fh.read()


# --------------------------------------------------------------------------- the page

PAGE_CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:70em;padding:0 1em;color:#222}
textarea{width:100%;height:14em;font:13px/1.4 monospace;box-sizing:border-box}
#out,#snippet{white-space:pre-wrap;border:1px solid #ddd;background:#fafafa;padding:.6em;margin:.6em 0;min-height:2em}
mark{background:#ffd54f}mark a{color:inherit}#status{color:#555}#snippet:empty,#out:empty{display:none}
.meta{color:#666;font-size:13px;margin:.2em 0}"""

PAGE_JS = """"use strict";
const $ = (id) => document.getElementById(id);
function cps(s) { return Array.from(s); }  // the service counts characters (code points), not UTF-16 units
async function showSnippet(url) {
  const box = $("snippet");
  box.replaceChildren();
  const r = await fetch(url);
  const j = await r.json();
  if (!r.ok) { box.textContent = j.error; return; }
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `training document ${j.id} (source ${j.source}, ${j.shard} row ${j.row}, character ${j.offset})`;
  const c = cps(j.snippet), m = document.createElement("mark");
  m.textContent = c.slice(j.span[0], j.span[1]).join("");
  box.append(meta, document.createTextNode(c.slice(0, j.span[0]).join("")), m,
             document.createTextNode(c.slice(j.span[1]).join("")));
}
function render(text, j) {
  const out = $("out"), c = cps(text);
  out.replaceChildren();
  let pos = 0;
  for (const sp of j.spans) {
    const m = document.createElement("mark"), a = document.createElement("a");
    a.href = sp.url;
    a.title = "the training text holding this span";
    a.textContent = c.slice(sp.start, sp.end).join("");
    a.addEventListener("click", (ev) => { ev.preventDefault(); showSnippet(sp.url); });
    m.append(a);
    out.append(document.createTextNode(c.slice(pos, sp.start).join("")), m);
    pos = sp.end;
  }
  out.append(document.createTextNode(c.slice(pos).join("")));
  $("status").textContent = `${j.matched_ngrams} of ${j.ngrams} 13-grams occur in the training data ` +
    `(${j.documents} documents); ${j.spans.length} highlighted spans`;
}
$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  $("status").textContent = "checking…";
  $("snippet").replaceChildren();
  const r = await fetch("v1/contains", {method: "POST", headers: {"content-type": "application/json"},
                                          body: JSON.stringify({text})});
  const j = await r.json();
  if (!r.ok) { $("out").replaceChildren(); $("status").textContent = j.error; return; }
  render(text, j);
});
"""


def _csp_hash(src: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(src.encode()).digest()).decode() + "'"


PAGE_CSP = (f"default-src 'none'; script-src {_csp_hash(PAGE_JS)}; style-src {_csp_hash(PAGE_CSS)}; "
            "connect-src 'self'; img-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
# audit.html: inline styles and scripts (sortable tables, charts), nothing from anywhere
AUDIT_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


def page(info: dict) -> str:
    from .report import esc

    src = info.get("source_stage") or {}
    what = (f"{info['index']['documents']:,} documents of the {src.get('stage', '?')} stage, "
            f"{info['index']['ngrams'].get(str(TRAIN_N), 0):,} 13-grams")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>siftmix: contamination lookup</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{PAGE_CSS}</style></head>
<body><h1>Is this text in the training data?</h1>
<p class="meta">Index: {esc(what)}. Each highlighted span is a 13-gram (GPT-3 appendix C words) found in
a training document; click it for the training text.</p>
<form id="form"><textarea id="text" name="text" placeholder="Paste a passage here" spellcheck="false"></textarea>
<p><button id="submit" type="submit">Check</button> <span id="status"></span></p></form>
<div id="out"></div><div id="snippet"></div>
<script>{PAGE_JS}</script></body></html>
"""


# --------------------------------------------------------------------------- the app

def make_app(index_dir: str, max_contains_bytes: int = MAX_CONTAINS_BYTES, max_audit_bytes: int = MAX_AUDIT_BYTES):
    """The FastAPI app over the index at ``index_dir`` (loaded now: a bad path raises StageError)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    idx = Index(index_dir)
    idx.open_all()
    try:  # the lookups work without the indexed stage; the snippets need it unchanged
        idx.check_stage()
        stage_warning = None
    except StaleIndexError as e:
        stage_warning = f"{e}; lookups work, snippets answer 409"
    started = time.time()
    info = {"index": idx.info, "source_stage": idx.manifest["source_stage"], "config": idx.manifest.get("config"),
            "output_fingerprint": idx.manifest.get("output_fingerprint"), "dir": idx.dir,
            "limits": {"contains_bytes": max_contains_bytes, "audit_bytes": max_audit_bytes},
            "stage_warning": stage_warning}
    html = page(info).encode()
    app = FastAPI(title="siftmix contamination lookup", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.index, app.state.warning = idx, stage_warning
    nosniff = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}

    def err(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=nosniff)

    @app.exception_handler(RequestError)
    async def _request_error(_req, e: RequestError):
        return err(e.status, e.message)

    @app.exception_handler(Exception)
    async def _internal(_req, e: Exception):
        return err(500, f"internal error: {type(e).__name__}: {e}")

    @app.exception_handler(HTTPException)
    async def _http_error(req, e: HTTPException):
        words_ = {404: f"no such path: {req.url.path}", 405: f"{req.method} is not allowed on {req.url.path}"}
        return err(e.status_code, words_.get(e.status_code, str(e.detail)))

    async def body(req: Request, limit: int, what: str) -> bytes:
        size = req.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limit:
            raise RequestError(413, f"{what}: the body is {int(size):,} bytes; the limit is {limit:,} bytes")
        chunks, n = [], 0
        async for chunk in req.stream():
            n += len(chunk)
            if n > limit:
                raise RequestError(413, f"{what}: the body is over the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def json_body(raw: bytes, what: str) -> dict:
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as e:
            raise RequestError(400, f"{what}: the body is not UTF-8 ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise RequestError(400, f"{what}: bad JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        if not isinstance(data, dict):
            raise RequestError(400, f"{what}: the body must be a JSON object like {{\"text\": \"...\"}}")
        return data

    @app.get("/health")
    def health():
        return JSONResponse({"status": "ok", "documents": idx.info["documents"], "ngrams": idx.info["ngrams_total"],
                             "uptime_s": round(time.time() - started, 1)}, headers=nosniff)

    @app.get("/v1/index")
    def index_info():
        return JSONResponse(info, headers=nosniff)

    @app.get("/")
    def home():
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={**nosniff, "Content-Security-Policy": PAGE_CSP, "Referrer-Policy": "no-referrer"})

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    @app.post("/v1/contains")
    async def contains_route(req: Request):
        data = json_body(await body(req, max_contains_bytes, "contains"), "contains")
        text = data.get("text")
        if not isinstance(text, str):
            raise RequestError(400, "contains: the field \"text\" (a string) is missing")
        max_docs, snippets = data.get("max_docs", 10), data.get("snippets", False)
        max_matches = data.get("max_matches", 10_000)
        for key, v, hi in (("max_docs", max_docs, 1000), ("max_matches", max_matches, 1_000_000)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
                raise RequestError(400, f"contains: \"{key}\" must be an integer from 1 to {hi:,}")
        if not isinstance(snippets, bool):
            raise RequestError(400, "contains: \"snippets\" must be true or false")
        try:
            res = await run_in_threadpool(contains, idx, text, max_docs, snippets, 200, max_matches)
        except StaleIndexError as e:
            raise RequestError(409, str(e)) from None
        return JSONResponse(res, headers=nosniff)

    @app.get("/v1/doc/{doc}")
    def doc_route(doc: str, offset: str = "0", size: str = str(TRAIN_N), chars: str = "200"):
        try:
            d, o, s, c = int(doc), int(offset), int(size), int(chars)
        except ValueError:
            raise RequestError(400, "doc: the document, offset, size and chars must be integers") from None
        if not (0 <= o and 1 <= s <= 64 and 0 <= c <= 10_000):
            raise RequestError(400, "doc: offset >= 0, size 1 to 64, chars 0 to 10000")
        return JSONResponse(doc_snippet(idx, d, o, s, c), headers=nosniff)

    @app.post("/v1/audit")
    async def audit_route(req: Request, name: str = "benchmark.jsonl", format: str = "json"):
        if format not in ("json", "html", "md"):
            raise RequestError(400, f"audit: format is json, html or md (got {format!r})")
        raw = await body(req, max_audit_bytes, "audit")
        if not raw.strip():
            raise RequestError(400, "audit: the body is empty (send a benchmark file: JSONL, one example a line)")
        out = await run_in_threadpool(audit_file, idx, raw, name, format)
        media = {"json": "application/json", "html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8"}
        extra = {"Content-Security-Policy": AUDIT_CSP} if format == "html" else {}
        return Response(out, media_type=media[format], headers={**nosniff, **extra})

    return app
