"""How Emerge's engine scales with the number of documents: wall time and peak RSS per stage.

    python bench/scale.py --sizes 1000 4000 16000 --out result.json
    python bench/scale.py --docs ../shared/data/bbc_news/bbc_news.jsonl --sizes 1000 4000 --out r.json

Documents of ~150 tokens are assembled from sentences (by default the bundled sample corpus's
sentence pools; with --docs, sentences of that JSONL's texts), seeded. Each size runs in a fresh
subprocess (so peak RSS is that size's own), through the engine path of the Dagster assets:
spans (16..64, stride 8) -> late-chunked embeddings -> UMAP/HDBSCAN fit on <= 10k spans ->
label every span -> Pareto selection. Peak RSS is the process maximum after each stage
(monotonic). Growth exponents are least-squares slopes of log(value) on log(documents).
The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit, jsonl_rows, machine, warm_up_numba  # noqa: E402


def sentences_from(docs: str | None) -> list[str]:
    if docs is None:
        sys.path.insert(0, str(HERE.parent / "sample_data"))
        from generate import TOPICS

        return [s for pool in TOPICS.values() for s in pool]
    out = []
    for row in jsonl_rows(docs):
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", row.get("text", "")) if 20 <= len(s.strip()) <= 300]
    return out


def make_documents(n: int, sentences: list[str], seed: int, target_words: int = 110) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words, parts = 0, []
        while words < target_words:
            s = rng.choice(sentences)
            parts.append(s)
            words += len(s.split())
        docs.append(f"Document {i}. " + " ".join(parts))
    return docs


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(n: int, docs_path: str | None, seed: int) -> dict:
    from emerge.config import ClusteringConfig, EncoderConfig, SelectionConfig, SpanConfig
    from emerge.dataset import curate
    from emerge.discovery.fit import fit_clustering, label_spans
    from emerge.embedding import embed_spans
    from emerge.encoder import load_encoder
    from emerge.ingest import documents_from_texts
    from emerge.spans import build_spans

    texts = make_documents(n, sentences_from(docs_path), seed)
    encoder = load_encoder(EncoderConfig(device="auto"))
    warm_up_numba(seed)  # JIT compilation is a one-off per process, not a cost that scales
    stages, rss = {}, {"after_load": rss_mb()}

    def stage(name, fn):
        t = time.perf_counter()
        value = fn()
        stages[name] = round(time.perf_counter() - t, 2)
        rss[name] = round(rss_mb(), 1)
        return value

    docs = stage("ingest", lambda: documents_from_texts(texts).documents)
    span_cfg = SpanConfig(16, 64, 8)
    spans, _ = stage("spans", lambda: build_spans(docs, encoder.tokenizer, span_cfg))
    vectors = stage("embed", lambda: embed_spans(docs, spans, encoder))
    pipeline, _ = stage("fit_clustering", lambda: fit_clustering(spans, vectors, ClusteringConfig(random_state=seed)))
    labelled = stage("label_all_spans", lambda: label_spans(pipeline, spans, vectors))
    texts_by_doc = dict(zip(docs["doc_id"], docs["text"]))
    dataset = stage("select", lambda: curate(labelled, vectors, texts_by_doc, SelectionConfig(), span_cfg))
    tokens = int(sum(len(x) for x in encoder.tokenizer(docs["text"].to_list(), add_special_tokens=False)["input_ids"]))
    return {"documents": docs.height, "tokens": tokens, "spans": spans.height, "selected": dataset.height,
            "clusters": len(pipeline.cluster_ids), "wall_s": stages, "wall_s_total": round(sum(stages.values()), 2),
            "peak_rss_mb": rss}


def slope(xs, ys) -> float:
    import numpy as np

    return round(float(np.polyfit(np.log(xs), np.log(np.maximum(ys, 1e-3)), 1)[0]), 3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--docs", default=None, help="JSONL whose sentences build the documents (default: built-in)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one size
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.docs, args.seed)))
        return 0
    runs = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)] + (
            ["--docs", args.docs] if args.docs else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {n} failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"[scale] {n} documents: {runs[-1]['wall_s_total']} s, peak {max(runs[-1]['peak_rss_mb'].values())} MB",
              file=sys.stderr, flush=True)
    sizes = [r["documents"] for r in runs]
    result = {"config": {"sizes": args.sizes, "docs": args.docs, "seed": args.seed, "span": [16, 64, 8]},
              "machine": machine(), "runs": runs}
    if len(runs) >= 2:
        result["time_exponent"] = {s: slope(sizes, [r["wall_s"][s] for r in runs]) for s in runs[0]["wall_s"]}
        result["time_exponent"]["total"] = slope(sizes, [r["wall_s_total"] for r in runs])
        result["peak_rss_exponent"] = slope(sizes, [max(r["peak_rss_mb"].values()) for r in runs])
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
