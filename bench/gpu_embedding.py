"""Embedding scorer on a GPU: siftmix's scoring path vs a bare SentenceTransformer.encode.

Run on the device machine (no Ray, no fastText there), from the repository root:

    python3 bench/gpu_embedding.py --model .gpu/model --quality-model .gpu/qmodel \\
        --texts .gpu/texts.parquet --out $OUT

``--model`` is all-MiniLM-L6-v2 with its weights stored in fp16 (to fit the 64 MiB transfer) and
loaded back to fp32. The siftmix path is ``QualityModel(scorer="embedding").score`` over Arrow
batches: exactly what each quality actor runs per batch (slice to max chars, encode, max cosine
to the reference centroids, calibration).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--quality-model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", type=int, default=7000)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import pyarrow.parquet as pq
    import torch
    from sentence_transformers import SentenceTransformer
    from siftmix.filters.quality import QualityModel

    texts_arr = pq.read_table(args.texts)["text"].combine_chunks().slice(0, args.docs)
    texts = texts_arr.to_pylist()
    n = len(texts)
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    res = {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
           "torch": torch.__version__, "python": platform.python_version(), "docs": n,
           "mean_chars": sum(map(len, texts)) / n, "runs": []}
    qm = QualityModel(args.quality_model, "embedding", embedding_model=args.model, device=args.device)
    max_len = qm.meta["embedding"]["max_seq_length"]
    bare = SentenceTransformer(args.model, device=args.device, local_files_only=True).float()
    bare.max_seq_length = max_len
    qm._st.float()
    res["siftmix_device"] = qm.device
    for bs in (64, 256):
        qm._batch = bs
        bare.encode(texts[:512], batch_size=bs, normalize_embeddings=True)  # warm-up
        qm.score(texts_arr.slice(0, 512))
        sync()
        t0 = time.perf_counter()
        bare.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False)
        sync()
        t_bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        for start in range(0, n, 1024):  # the actor's batches (quality.batch_rows = 1024)
            qm.score(texts_arr.slice(start, 1024))
        sync()
        t_ours = time.perf_counter() - t0
        r = {"batch_size": bs, "bare_encode_docs_s": round(n / t_bare, 1), "siftmix_docs_s": round(n / t_ours, 1),
             "overhead": round(t_ours / t_bare, 3)}
        res["runs"].append(r)
        print(r, flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "quality_embedding_gpu.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
