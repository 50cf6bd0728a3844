"""Discovery quality and stage timings of the Emerge engine on a labelled JSONL corpus.

    python bench/discovery_quality.py --docs ../shared/data/bbc_news/bbc_news.jsonl \
        --label-field category --limit 2225 --out result.json

Runs the same engine functions as the Dagster assets (ingest -> spans -> late-chunked
embeddings -> UMAP/HDBSCAN fit on a sample -> label all spans -> Pareto selection) with the
packaged all-MiniLM-L6-v2, and reports the wall time of each stage plus agreement of document
labels with the gold labels (a document's label = majority cluster of its selected spans;
documents with no selected span count as outliers). The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", required=True, help="JSONL with a text field")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--min-len", type=int, default=16)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import numpy as np
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from emerge.config import ClusteringConfig, EncoderConfig, IngestConfig, SelectionConfig, SpanConfig
    from emerge.dataset import curate
    from emerge.discovery import fit_clustering, label_spans
    from emerge.embedding import embed_spans
    from emerge.encoder import load_encoder
    from emerge.ingest import documents_from_texts
    from emerge.spans import build_spans

    rows = [json.loads(line) for line in Path(args.docs).read_text().splitlines() if line.strip()]
    rows = rows[:args.limit] if args.limit else rows
    texts = [r.get(args.text_field) for r in rows]
    timings = {}

    t = time.perf_counter()
    encoder = load_encoder(EncoderConfig(device="auto"))
    timings["load_model"] = time.perf_counter() - t
    t = time.perf_counter()
    ingest = documents_from_texts(texts, source="bench", config=IngestConfig(id_field=None))
    docs = ingest.documents
    timings["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    span_cfg = SpanConfig(min_len=args.min_len, max_len=args.max_len, stride=args.stride)
    spans, too_short = build_spans(docs, encoder.tokenizer, span_cfg)
    timings["spans"] = time.perf_counter() - t
    t = time.perf_counter()
    vectors = embed_spans(docs, spans, encoder, progress=True)
    timings["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    pipeline, sample = fit_clustering(spans, vectors, ClusteringConfig(random_state=args.seed))
    timings["fit_clustering"] = time.perf_counter() - t
    t = time.perf_counter()
    labelled = label_spans(pipeline, spans, vectors)
    timings["label_all_spans"] = time.perf_counter() - t
    t = time.perf_counter()
    texts_by_doc = dict(zip(docs["doc_id"], docs["text"]))
    dataset = curate(labelled, vectors, texts_by_doc, SelectionConfig(), span_cfg)
    timings["select"] = time.perf_counter() - t

    tokens = int(sum(len(x) for x in encoder.tokenizer(docs["text"].to_list(), add_special_tokens=False)["input_ids"]))
    result = {
        "config": {"docs": args.docs, "limit": args.limit, "span": vars(span_cfg), "seed": args.seed,
                   "model": encoder.name, "device": encoder.device},
        "machine": machine(),
        "documents": docs.height, "skipped_inputs": ingest.skip_counts, "spans": spans.height,
        "fit_spans": int(len(sample)), "selected_spans": dataset.height, "tokens_embedded": tokens,
        "n_clusters": len(pipeline.cluster_ids),
        "span_noise_fraction": round(float((labelled["cluster_id"] < 0).mean()), 4),
        "titles": {int(c): pipeline.titles[c] for c in pipeline.cluster_ids},
        "wall_s": {k: round(v, 2) for k, v in timings.items()},
        "wall_s_total": round(sum(timings.values()), 2),
        "embed_tokens_per_s": round(tokens / timings["embed"], 1),
    }
    if args.label_field:
        gold_by_text = {}
        for r in rows:
            if isinstance(r.get(args.text_field), str):
                gold_by_text.setdefault(r[args.text_field], r.get(args.label_field))
        doc_gold = [gold_by_text.get(x) for x in docs["text"].to_list()]  # ingest normalises; fall back below
        if any(g is None for g in doc_gold):
            import unicodedata

            norm = {unicodedata.normalize("NFC", k.replace("\r\n", "\n")): v for k, v in gold_by_text.items()}
            doc_gold = [norm.get(x) for x in docs["text"].to_list()]
        top = (dataset.group_by("doc_id", "cluster_id").len()
               .sort(["doc_id", "len", "cluster_id"], descending=[False, True, False]).unique("doc_id", keep="first"))
        majority = dict(top.select("doc_id", "cluster_id").iter_rows())
        pred = [majority.get(d, -1) for d in docs["doc_id"].to_list()]
        result["doc_outlier_fraction"] = round(float(np.mean([p_ == -1 for p_ in pred])), 4)
        result["nmi"] = round(float(normalized_mutual_info_score(doc_gold, pred)), 4)
        result["ari"] = round(float(adjusted_rand_score(doc_gold, pred)), 4)
        inl = [i for i, p_ in enumerate(pred) if p_ != -1]
        result["nmi_non_outliers"] = round(float(normalized_mutual_info_score(
            [doc_gold[i] for i in inl], [pred[i] for i in inl])), 4) if inl else 0.0
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
