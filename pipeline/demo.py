"""Demo corpus generator (``siftmix demo-data``): our own code, deterministic from a seed.

Writes a small but realistic corpus in the formats real users have:

* ``cc/CC-DEMO-*.warc.wet.gz`` — Common Crawl-like WET files (gzip member per record, warcinfo
  first): mostly keyword spam, navigation/cookie boilerplate and machine-like junk, with about 5%
  well-written articles; planted near-duplicates and exact duplicates of articles, WebText2 copies
  and benchmark passages;
* ``webtext2/*.jsonl.gz``, ``books1/*.txt``, ``books2/*.jsonl.zst``, ``wikipedia/*.jsonl`` — curated;
* ``benchmarks/*.jsonl`` — three small benchmark sets;
* ``truth.json`` — what was planted (for tests and reports); ``demo.yaml`` — a run config.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import uuid
from collections.abc import Callable

import zstandard

# ----------------------------------------------------------------------------- word banks

_NOUNS = """river city council engine garden harbour library market museum mountain village
forest island school bridge railway university museum orchestra festival hospital factory
theory experiment language kingdom empire treaty parliament election economy industry
painter novelist scientist engineer farmer merchant soldier teacher student doctor sailor
season century decade province valley coast desert lake castle cathedral monastery temple
manuscript archive painting sculpture symphony opera poem chronicle letter diary newspaper
network algorithm protein molecule galaxy planet comet telescope microscope satellite
harvest drought flood storm winter summer autumn spring journey voyage expedition battle
company bank contract budget policy reform court judge witness verdict law constitution
bird wolf horse whale salmon oak willow meadow orchard vineyard mill quarry mine canal road""".split()
_ADJS = """ancient modern northern southern eastern western quiet busy famous obscure wealthy
poor large small narrow broad early late local national foreign rural urban coastal
remarkable important significant careful brief lengthy detailed bitter gentle sudden
steady rapid slow cold warm dark bright young elderly public private industrial
agricultural medieval contemporary classical experimental ordinary unusual""".split()
_VERBS_PAST = """built founded described visited crossed studied opened closed defended
restored expanded replaced recorded published painted composed measured discovered
observed explained supported opposed governed crossed reached abandoned rebuilt
examined reported introduced organised designed inherited purchased""".split()
_PREPS = "near beside across along beyond within during after before under over".split()
_NAMES = """Adams Baker Carter Dalton Ellis Foster Grant Hughes Irving Jensen Keller Lambert
Morgan Nolan Owens Porter Quinn Reyes Sutton Turner Underwood Vance Walsh Young Zimmer
Alvarez Becker Castillo Duarte Eriksen Fischer Gallo Hoffmann Ivanova Kowalski""".split()
_PLACES = """Ashford Brindle Coldwater Dunmore Elmstead Fairhaven Glenrock Harrowgate
Ivybridge Kingsmere Larkfield Millbrook Northwood Oakridge Penhallow Redcliffe
Stonehaven Thornbury Westmere Yarrow""".split()
_SPAM_PRODUCTS = """casino slots poker loans pills replica watches crypto bitcoin forex
viagra bonus jackpot betting dating followers backlinks""".split()
_NAV = ["Home", "About Us", "Contact", "Blog", "Shop", "Login", "Register", "FAQ", "Privacy Policy",
        "Terms of Service", "Sitemap", "Careers", "Press", "Help", "Cart (0)", "Search"]

_WORD_RE = re.compile(r"\w+")


class Writer:
    """Sentence and document generators over a seeded RNG."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def _c(self, seq):
        return seq[int(self.r.random() * len(seq))]

    def sentence(self) -> str:
        c, r = self._c, self.r
        k = r.random()
        if k < 0.25:
            s = f"The {c(_ADJS)} {c(_NOUNS)} {c(_VERBS_PAST)} the {c(_NOUNS)} {c(_PREPS)} the {c(_ADJS)} {c(_NOUNS)}"
        elif k < 0.45:
            s = f"In {r.randint(1200, 2020)}, {c(_NAMES)} {c(_VERBS_PAST)} a {c(_ADJS)} {c(_NOUNS)} in {c(_PLACES)}"
        elif k < 0.6:
            s = (f"Although the {c(_NOUNS)} was {c(_ADJS)}, the {c(_NOUNS)} of {c(_PLACES)} "
                 f"{c(_VERBS_PAST)} its {c(_NOUNS)} and {c(_VERBS_PAST)} the {c(_ADJS)} {c(_NOUNS)}")
        elif k < 0.75:
            s = (f"Many {c(_NOUNS)}s {c(_PREPS)} the {c(_NOUNS)} were {c(_VERBS_PAST)} by {c(_NAMES)}, "
                 f"who later {c(_VERBS_PAST)} the {c(_NOUNS)} of {c(_PLACES)}")
        elif k < 0.9:
            s = (f"Its {c(_ADJS)} {c(_NOUNS)}, {c(_VERBS_PAST)} {c(_PREPS)} a {c(_NOUNS)}, "
                 f"is still {c(_ADJS)} {c(_PREPS)} the {c(_NOUNS)} today")
        else:
            s = f"According to {c(_NAMES)}, the {c(_NOUNS)} {c(_VERBS_PAST)} {r.randint(2, 900)} {c(_NOUNS)}s"
        return s[0].upper() + s[1:] + "."

    def paragraph(self, lo: int = 3, hi: int = 7) -> str:
        return " ".join(self.sentence() for _ in range(self.r.randint(lo, hi)))

    def prose(self, chars: int) -> str:
        parts, n = [], 0
        while n < chars:
            p = self.paragraph()
            parts.append(p)
            n += len(p) + 2
        return "\n\n".join(parts)

    def wiki(self, chars: int) -> tuple[str, str]:
        title = f"{self._c(_PLACES)} {self._c(_NOUNS).title()}"
        lead = (f"{title} is a {self._c(_ADJS)} {self._c(_NOUNS)} in the {self._c(_ADJS)} province of "
                f"{self._c(_PLACES)}. It was {self._c(_VERBS_PAST)} in {self.r.randint(900, 1990)}.")
        sections = [lead]
        n = len(lead)
        while n < chars:
            head = self._c(["History", "Geography", "Economy", "Culture", "Notable people", "Transport"])
            body = self.paragraph(4, 8)
            sections.append(f"== {head} ==\n{body}")
            n += len(body) + len(head) + 8
        return title, "\n\n".join(sections)

    def book(self, chars: int) -> tuple[str, str]:
        hero, place = self._c(_NAMES), self._c(_PLACES)
        title = f"The {self._c(_ADJS).title()} {self._c(_NOUNS).title()} of {place}"
        parts, n, ch = [title.upper(), ""], 0, 1
        while n < chars:
            parts.append(f"CHAPTER {ch}\n")
            for _ in range(self.r.randint(6, 14)):
                if self.r.random() < 0.35:
                    p = (f"\u201c{self.sentence()[:-1]},\u201d said {hero}. \u201c{self.sentence()}\u201d")
                else:
                    p = self.paragraph(3, 9)
                parts.append(p)
                n += len(p)
            ch += 1
        return title, "\n\n".join(parts)

    def spam(self, chars: int) -> str:
        p = self._c(_SPAM_PRODUCTS)
        lines, n = [], 0
        while n < chars:
            q = self._c(_SPAM_PRODUCTS)
            line = self._c([
                f"BEST {p.upper()} ONLINE!!! cheap {p} {q} free {p} bonus click here now",
                f"Buy {p} online | {p} {q} | cheap {p} | best {p} prices 2024 | {p} no prescription",
                f"{p} {p} {p} {q} {q} >>> WIN BIG TODAY <<< visit our {p} site",
                f"Top 10 {p} sites - {p} reviews - {q} deals - limited offer - sign up free",
            ])
            lines.append(line)
            n += len(line)
        return "\n".join(lines)

    def boilerplate(self, chars: int) -> str:
        lines, n = [], 0
        while n < chars:
            k = self.r.random()
            if k < 0.3:
                line = " | ".join(self.r.sample(_NAV, self.r.randint(4, 9)))
            elif k < 0.5:
                line = "We use cookies to improve your experience. By continuing to browse you agree to our use of cookies. Accept"
            elif k < 0.7:
                line = f"Copyright \u00a9 {self.r.randint(2005, 2024)} {self._c(_PLACES)} Media Ltd. All rights reserved."
            elif k < 0.85:
                line = f"Posted by admin on {self.r.randint(1, 28)}/{self.r.randint(1, 12)}/{self.r.randint(2010, 2024)} | {self.r.randint(0, 99)} comments | Share: Facebook Twitter Email"
            else:
                line = "Subscribe to our newsletter! Enter your email address: [ Subscribe ]"
            lines.append(line)
            n += len(line)
        return "\n".join(lines)

    def junk(self, chars: int) -> str:
        lines, n = [], 0
        while n < chars:
            k = self.r.random()
            if k < 0.35:
                line = " ".join(f"{self.r.getrandbits(32):08x}" for _ in range(8))
            elif k < 0.6:
                line = "\t".join(str(self.r.randint(0, 99999)) for _ in range(10))
            elif k < 0.8:
                line = f"SKU-{self.r.randint(10000, 99999)} {self._c(_NOUNS).upper()}-{self.r.randint(1, 99)} qty:{self.r.randint(1, 500)} ${self.r.randint(1, 999)}.{self.r.randint(10, 99)}"
            else:
                line = "".join(self._c("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(76))
            lines.append(line)
            n += len(line)
        return "\n".join(lines)

    def question(self) -> tuple[str, str]:
        a = self._c(_PLACES)
        q = (f"Question: Which town's {self._c(_ADJS)} {self._c(_NOUNS)} was {self._c(_VERBS_PAST)} by "
             f"{self._c(_NAMES)} {self._c(_PREPS)} the {self._c(_NOUNS)} in {self.r.randint(1200, 2020)}, "
             f"according to the {self._c(_ADJS)} {self._c(_NOUNS)} of the {self._c(_NOUNS)}? Answer: {a}")
        return q, a


def edit_words(text: str, rng: random.Random, rate: float) -> str:
    """A near-duplicate: each word replaced, dropped or kept (rate = edit probability)."""
    out = []
    for w in text.split(" "):
        k = rng.random()
        if k < rate / 2:
            out.append(rng.choice(_NOUNS))
        elif k < rate:
            continue
        else:
            out.append(w)
    return " ".join(out)


# ----------------------------------------------------------------------------- writers

def _warc_record(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    """One WARC/1.0 record as its own gzip member (as Common Crawl writes them), mtime 0."""
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(payload)}\r\n\r\n"
    return gzip.compress(head.encode() + payload + b"\r\n\r\n", mtime=0)


def write_wet(path: str, docs: list[dict], date: str = "2024-05-30T00:00:00Z") -> None:
    """A WET file: a warcinfo record, then one ``conversion`` record per document."""
    name = os.path.basename(path)
    with open(path, "wb") as fh:
        info = b"software: siftmix demo-data\r\nisPartOf: CC-DEMO\r\n"
        fh.write(_warc_record([("WARC-Type", "warcinfo"), ("WARC-Date", date), ("WARC-Filename", name),
                               ("WARC-Record-ID", f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}>"),
                               ("Content-Type", "application/warc-fields")], info))
        for d in docs:
            fh.write(_warc_record([
                ("WARC-Type", "conversion"), ("WARC-Target-URI", d["url"]), ("WARC-Date", d["date"]),
                ("WARC-Record-ID", f"<urn:uuid:{d['uuid']}>"),
                ("WARC-Refers-To", f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, d['url'] + d['uuid'])}>"),
                ("WARC-Identified-Content-Language", "eng"), ("Content-Type", "text/plain"),
            ], d["text"].encode("utf-8")))


def parse_size(s: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?I?B?)?\s*", s.upper())
    if not m:
        raise ValueError(f"--size: cannot read {s!r} (use e.g. 10MB, 500KB, 1GB)")
    mult = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KI": 2**10, "MI": 2**20, "GI": 2**30}[m.group(2) or ""]
    n = int(float(m.group(1)) * mult)
    if n < 100_000:
        raise ValueError(f"--size: {s} is too small (at least 100KB)")
    return n


# ----------------------------------------------------------------------------- the corpus

#: Shares of the text budget. The crawl is most of it, as it is of a real corpus; after the quality
#: filter it is still the largest source. WebText2, Books1 and Wikipedia are small, so the mix
#: (configs/demo.yaml: GPT-3's weights, at most 3.5 epochs per source) repeats them several times
#: while it sees the crawl less than once (GPT-3 Table 2.2: Wikipedia 3.4, WebText2 2.9, Books1 1.9
#: epochs; Common Crawl 0.44, Books2 0.43). Books2 is the large curated source: most of the
#: quality classifier's positives come from it.
SHARES = {"common_crawl": 0.7915, "webtext2": 0.0052, "books1": 0.0029, "books2": 0.20, "wikipedia": 0.0004}

#: The synthetic crawl, by share of documents: mostly boilerplate, spam and machine junk (and
#: fragments too short to keep); about 5% well-written articles ("prose": 4.5% of all documents,
#: 4.8% of those long enough to keep), from the same writer as the curated sources. Every crawl
#: document is a negative example for the classifier; with so few articles among them it still
#: scores articles high.
CRAWL_KINDS = (("prose", 0.045), ("spam", 0.28), ("boilerplate", 0.32), ("junk", 0.295), ("short", 0.06))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(out: str, nbytes: int, seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Write the demo corpus into ``out``; returns a summary (bytes, files, planted truth)."""
    rng = random.Random(seed)
    w = Writer(rng)
    os.makedirs(out, exist_ok=True)
    for d in ("cc", "webtext2", "books1", "books2", "wikipedia", "benchmarks"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    truth: dict = {"seed": seed, "near_duplicates": [], "exact_duplicates": [], "webtext_in_cc": [], "contamination": []}
    files: list[str] = []

    # --- benchmarks (small, fixed size)
    benches = {}
    for name, n in (("demo_qa", 300), ("demo_cloze", 200), ("demo_facts", 150)):
        rows = []
        for i in range(n):
            if name == "demo_qa":
                text, ans = w.question()
            elif name == "demo_cloze":
                text = w.paragraph(2, 3)
                ans = text.rsplit(" ", 1)[-1].rstrip(".")
            else:
                text = w.sentence() + " " + w.sentence()
                ans = "true" if rng.random() < 0.5 else "false"
            rows.append({"id": f"{name}-{i}", "text": text, "answer": ans, "split": "test"})
        benches[name] = rows
        p = os.path.join(out, "benchmarks", f"{name}.jsonl")
        with open(p, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        files.append(p)

    # --- webtext2: JSONL.gz, a few files
    webtext = []
    budget = nbytes * SHARES["webtext2"]
    while budget > 0:
        t = w.prose(rng.randint(1000, 6000))
        webtext.append({"id": f"webtext2-{len(webtext):07d}", "text": t, "url": f"https://reddit-linked.example/{_uuid(rng)[:8]}"})
        budget -= len(t)
    # a few benchmark passages in WebText2 too: curated text is not quality-filtered, so these
    # survive to the decontamination stage of a full run
    for name, rows in sorted(benches.items()):
        for ex in rng.sample(rows, max(1, len(rows) // 100)):
            host = rng.choice(webtext)
            paras = host["text"].split("\n\n")
            paras.insert(rng.randint(0, len(paras)), ex["text"])
            host["text"] = "\n\n".join(paras)
            truth["contamination"].append({"benchmark": name, "example": ex["id"], "doc": host["id"]})
    per = max(1, len(webtext) // 4 + 1)
    for k in range(0, len(webtext), per):
        p = os.path.join(out, "webtext2", f"webtext2-{k // per:03d}.jsonl.gz")
        with gzip.GzipFile(p, "wb", mtime=0) as fh:
            fh.write("".join(json.dumps(d) + "\n" for d in webtext[k:k + per]).encode())
        files.append(p)

    # --- wikipedia: plain JSONL
    wiki, budget = [], nbytes * SHARES["wikipedia"]
    while budget > 0:
        title, t = w.wiki(rng.randint(1500, 8000))
        wiki.append({"id": f"enwiki-{len(wiki):07d}", "title": title, "text": t,
                     "url": "https://en.wikipedia.example/wiki/" + title.replace(" ", "_")})
        budget -= len(t)
    p = os.path.join(out, "wikipedia", "wiki-000.jsonl")
    with open(p, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in wiki)
    files.append(p)

    # --- books1: folder of .txt; books2: JSONL.zst
    book_len = max(20_000, min(400_000, nbytes // 200))
    budget, i = nbytes * SHARES["books1"], 0
    while budget > 0:
        title, t = w.book(rng.randint(book_len // 2, book_len))
        p = os.path.join(out, "books1", f"book-{i:05d}.txt")
        with open(p, "w", encoding="utf-8") as fh:
            fh.write(t + "\n")
        files.append(p)
        budget -= len(t)
        i += 1
    budget, books2 = nbytes * SHARES["books2"], []
    while budget > 0:
        title, t = w.book(rng.randint(book_len // 2, book_len))
        books2.append({"id": f"books2-{len(books2):06d}", "title": title, "text": t})
        budget -= len(t)
    p = os.path.join(out, "books2", "books2-000.jsonl.zst")
    with open(p, "wb") as fh:
        fh.write(zstandard.ZstdCompressor(level=3).compress("".join(json.dumps(d) + "\n" for d in books2).encode()))
    files.append(p)

    # --- Common Crawl: WET files
    cc: list[dict] = []
    budget = nbytes * SHARES["common_crawl"]
    cum = [(kind, sum(f for _, f in CRAWL_KINDS[:i + 1])) for i, (kind, _) in enumerate(CRAWL_KINDS)]
    while budget > 0:
        k = rng.random()
        kind = next((kd for kd, c in cum if k < c), "short")
        if kind == "prose":
            text = w.prose(rng.randint(2000, 6000))
        elif kind == "spam":
            text = w.spam(rng.randint(400, 3000))
        elif kind == "boilerplate":  # navigation, cookie banners, footers around a one-line teaser
            text = w.boilerplate(rng.randint(300, 2500)) + "\n" + w.sentence()
        elif kind == "junk":
            text = w.junk(rng.randint(400, 3000))
        else:
            text = w.sentence()  # too short to keep
        cc.append({"uuid": _uuid(rng), "kind": kind, "text": text})
        budget -= len(text)
    prose_idx = [i for i, d in enumerate(cc) if d["kind"] == "prose"]
    # planted near-duplicates of articles (15% of them, at least 8: mirrors, reposts, syndicated
    # copies with a few words changed, Jaccard ~0.85-0.95, so they survive quality and dedup finds
    # them), exact duplicates (5%, at least 3), WebText2 copies (2% of WebText2)
    extra = []
    for i in rng.sample(prose_idx, min(len(prose_idx), max(8, len(prose_idx) * 15 // 100))):
        rate = rng.choice([0.005, 0.01, 0.015])
        d = {"uuid": _uuid(rng), "kind": "near_duplicate", "text": edit_words(cc[i]["text"], rng, rate)}
        extra.append(d)
        truth["near_duplicates"].append({"original": cc[i]["uuid"], "copy": d["uuid"], "edit_rate": rate})
    for i in rng.sample(prose_idx, min(len(prose_idx), max(3, len(prose_idx) * 5 // 100))):
        d = {"uuid": _uuid(rng), "kind": "exact_duplicate", "text": cc[i]["text"]}
        extra.append(d)
        truth["exact_duplicates"].append({"original": cc[i]["uuid"], "copy": d["uuid"]})
    for wt in rng.sample(webtext, max(1, len(webtext) * 2 // 100)):
        d = {"uuid": _uuid(rng), "kind": "webtext_copy", "text": edit_words(wt["text"], rng, 0.02)}
        extra.append(d)
        truth["webtext_in_cc"].append({"webtext_id": wt["id"], "copy": d["uuid"]})
    cc.extend(extra)
    # planted benchmark passages: ~4% of each benchmark, each into one prose document
    hosts = rng.sample([d for d in cc if d["kind"] == "prose"], k=min(len(prose_idx), 60))
    hi = 0
    for name, rows in sorted(benches.items()):
        for ex in rng.sample(rows, max(2, len(rows) * 4 // 100)):
            if hi >= len(hosts):
                break
            host = hosts[hi]
            hi += 1
            paras = host["text"].split("\n\n")
            pos = rng.randint(0, len(paras))
            paras.insert(pos, ex["text"])
            host["text"] = "\n\n".join(paras)
            truth["contamination"].append({"benchmark": name, "example": ex["id"], "doc": host["uuid"]})
    rng.shuffle(cc)
    for j, d in enumerate(cc):
        d["url"] = f"http://{rng.choice(_PLACES).lower()}-{d['kind']}.example.com/page/{j}"
        d["date"] = f"2024-05-{rng.randint(18, 30):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    per_file = max(50, len(cc) // max(4, int(nbytes * SHARES["common_crawl"] // 8_000_000)) + 1)
    for k in range(0, len(cc), per_file):
        p = os.path.join(out, "cc", f"CC-DEMO-2024-22-{k // per_file:05d}.warc.wet.gz")
        write_wet(p, cc[k:k + per_file])
        files.append(p)
        if log and (k // per_file) % 20 == 19:
            log(f"demo-data: {k + per_file}/{len(cc)} crawl documents")
    truth["cc_kinds"] = {d["uuid"]: d["kind"] for d in cc}

    # near-duplicates inside WebText2 (GPT-3 deduplicated each dataset): curated text is not
    # quality-filtered, so these reach the dedup stage of a full run. Their own random stream
    # keeps the rest of the corpus what it was before they were added.
    dup_rng = random.Random(seed + 1)
    copies = []
    for wt in dup_rng.sample(webtext, max(1, len(webtext) * 4 // 100)):
        rate = dup_rng.choice([0.0, 0.005, 0.01, 0.02])
        copies.append({"id": f"{wt['id']}-copy", "text": edit_words(wt["text"], dup_rng, rate) if rate else wt["text"],
                       "url": wt["url"]})
        truth.setdefault("webtext_duplicates", []).append({"original": wt["id"], "copy": copies[-1]["id"], "edit_rate": rate})
    p = os.path.join(out, "webtext2", "webtext2-copies.jsonl.gz")
    with gzip.GzipFile(p, "wb", mtime=0) as fh:
        fh.write("".join(json.dumps(d) + "\n" for d in copies).encode())
    files.append(p)

    with open(os.path.join(out, "truth.json"), "w", encoding="utf-8") as fh:
        json.dump(truth, fh)
    with open(os.path.join(out, "demo.yaml"), "w", encoding="utf-8") as fh:
        fh.write(DEMO_CONFIG.format(run_dir=os.path.join("..", "runs", os.path.basename(os.path.abspath(out)))))
    total = sum(os.path.getsize(f) for f in files)
    return {"bytes": total, "text_bytes": nbytes, "files": len(files), "documents": len(cc) + len(webtext) + len(copies) + len(wiki) + len(books2),
            "truth": {k: len(v) for k, v in truth.items() if isinstance(v, list)}}


DEMO_CONFIG = """\
# siftmix run config for the demo corpus written by `siftmix demo-data` (paths relative to this file).
run_dir: {run_dir}
seed: 0
sources:
  - name: common_crawl
    paths: cc/*.warc.wet.gz
    filter: true
  - name: webtext2
    paths: webtext2/
  - name: books1
    paths: books1/
    format: txt
  - name: books2
    paths: books2/
  - name: wikipedia
    paths: wikipedia/
ingest:
  min_chars: 200
decontam:
  benchmarks: [benchmarks]
mix:
  max_epochs: 3.5   # no source more than 3.5 times (GPT-3's most repeated, Wikipedia, 3.4)
"""


# ----------------------------------------------------------------------------- the story of a demo run

def _ids(stage_dir: str, sub: str, columns: list[str]) -> dict[str, dict]:
    """{id: row} of every committed shard of one stage's data/ or rejected/ folder."""
    from .core import storage
    from .core.manifest import read_manifest, stage_path

    m = read_manifest(stage_dir)
    if m is None:
        return {}
    key = "shards" if sub == "data" else "rejected_shards"
    out = {}
    for f in m.get("files", []):
        for sh in f.get(key, []):
            t = storage.read_table(stage_path(stage_dir, m, sub, sh["file"]), columns=columns)
            for r in t.to_pylist():
                out[r["id"]] = r
    return out


def story(run_dir: str, corpus: str) -> dict:
    """What a demo run did with what the generator planted (``truth.json``): the classifier's
    held-out AUC, the share of good crawl articles and of crawl junk that quality kept, the planted
    crawl duplicates that survived quality and whether dedup joined them, the planted benchmark
    passages that reached decontam and whether it found them, and the mix's epochs per source."""
    from .core import storage
    from .core.manifest import read_manifest, stage_path

    truth = storage.read_json(storage.join(corpus, "truth.json"))
    d = {s: storage.join(run_dir, s) for s in ("10_quality", "20_dedup", "30_decontam", "40_mix")}
    qm = read_manifest(d["10_quality"])
    ev = storage.read_json(stage_path(d["10_quality"], qm, "eval.json"))["heldout"]
    q_in = {**_ids(d["10_quality"], "data", ["id"]), **_ids(d["10_quality"], "rejected", ["id"])}
    q_kept = _ids(d["10_quality"], "data", ["id"])
    kinds = truth["cc_kinds"]
    cc = "urn:uuid:"

    def share(kind_set):
        ids = [cc + u for u, k in kinds.items() if k in kind_set and cc + u in q_in]
        return {"in": len(ids), "kept": sum(i in q_kept for i in ids),
                "share_kept": sum(i in q_kept for i in ids) / len(ids) if ids else 0.0}

    dd_kept = _ids(d["20_dedup"], "data", ["id", "dup_cluster"])
    dd_rej = _ids(d["20_dedup"], "rejected", ["id", "reason"])
    cluster = {i: r["dup_cluster"] for i, r in dd_kept.items() if r.get("dup_cluster")}
    for i, r in dd_rej.items():
        keeper = r["reason"].split(":", 1)[1] if "duplicate_of:" in r["reason"] else None
        if keeper in dd_kept:
            cluster[i] = dd_kept[keeper].get("dup_cluster") or keeper
    from siftmix.dedup.minhash import shingle_strings  # the shingles dedup compares

    dcfg = read_manifest(d["20_dedup"])["config"]["dedup"]
    texts = {i: r["text"] for i, r in _ids(d["10_quality"], "data", ["id", "text"]).items()}
    pairs = []
    for kind in ("near_duplicates", "exact_duplicates"):
        for p in truth[kind]:
            a, b = cc + p["original"], cc + p["copy"]
            if a in q_kept and b in q_kept:
                sa, sb = (set(shingle_strings(texts[x], dcfg["ngram"])) for x in (a, b))
                pairs.append({"kind": kind, "original": a, "copy": b, "edit_rate": p.get("edit_rate", 0.0),
                              "jaccard": len(sa & sb) / max(1, len(sa | sb)),
                              "found": cluster.get(a) is not None and cluster.get(a) == cluster.get(b)})
    dup = [p for p in pairs if p["jaccard"] >= dcfg["threshold"]]
    m = read_manifest(d["30_decontam"])
    audit = storage.read_json(stage_path(d["30_decontam"], m, "audit.json"))
    dirty = {(b["name"], e["id"]) for b in audit["benchmarks"] for e in b["dirty_examples"]}
    reached = set(dd_kept)
    planted = [{**c, "reached_decontam": (cc + c["doc"] if c["doc"] not in q_in else c["doc"]) in reached,
                "found": (c["benchmark"], c["example"]) in dirty} for c in truth["contamination"]]
    planted = [{**c, "reached_decontam": c["reached_decontam"] or (cc + c["doc"]) in reached} for c in planted]
    mm = read_manifest(d["40_mix"])
    return {
        "classifier": {"roc_auc": ev["fasttext"]["roc_auc"], "accuracy": ev["fasttext"]["accuracy"],
                       "heldout_examples": ev["fasttext"]["n"]},
        "good_crawl": share({"prose"}), "crawl_junk": share({"spam", "boilerplate", "junk"}),
        "crawl_duplicates_surviving_quality": len(pairs), "dedup_threshold": dcfg["threshold"],
        "crawl_duplicates_at_threshold": len(dup), "crawl_duplicates_found": sum(p["found"] for p in dup),
        "crawl_pairs_below_threshold_joined": sum(p["found"] for p in pairs if p["jaccard"] < dcfg["threshold"]),
        "duplicate_pairs": pairs,
        "contamination_planted": len(planted), "contamination_reached_decontam": sum(c["reached_decontam"] for c in planted),
        "contamination_found": sum(c["found"] for c in planted if c["reached_decontam"]),
        "contamination": planted,
        "epochs": {s: v["epochs"] for s, v in mm["counts"]["by_source"].items()},
        "table_2_2": mm["table_2_2"],
    }


def format_story(s: dict) -> str:
    g, j = s["good_crawl"], s["crawl_junk"]
    return "\n".join([
        f"classifier: held-out ROC AUC {s['classifier']['roc_auc']:.3f}, accuracy {s['classifier']['accuracy']:.3f} "
        f"({s['classifier']['heldout_examples']} examples)",
        f"quality kept {g['kept']}/{g['in']} good crawl articles ({g['share_kept']:.1%}) and "
        f"{j['kept']}/{j['in']} crawl spam, boilerplate and junk pages ({j['share_kept']:.1%})",
        f"dedup: {s['crawl_duplicates_surviving_quality']} planted crawl duplicate pairs survived quality; "
        f"{s['crawl_duplicates_found']} of the {s['crawl_duplicates_at_threshold']} with Jaccard >= "
        f"{s['dedup_threshold']} joined ({s['crawl_pairs_below_threshold_joined']} below it)",
        f"decontam: {s['contamination_found']} of the {s['contamination_reached_decontam']} planted benchmark passages "
        f"that reached it found ({s['contamination_planted']} planted)",
        "mix epochs: " + ", ".join(f"{k} {v:.2f}" for k, v in s["epochs"].items()),
    ])


if __name__ == "__main__":  # python -m siftmix.pipeline.demo RUN_DIR CORPUS: the story of a demo run
    import sys

    print(format_story(story(sys.argv[1], sys.argv[2])))
