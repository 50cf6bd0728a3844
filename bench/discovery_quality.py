"""Discovery quality and stage timings of the Emerge engine on a labelled JSONL corpus.

    python bench/discovery_quality.py --docs ../shared/data/bbc_news/bbc_news.jsonl \
        --label-field category --limit 2225 --out result.json

Runs the same engine functions as the Dagster assets (ingest -> spans -> late-chunked
embeddings -> UMAP/HDBSCAN fit on a sample -> label all spans -> Pareto selection) with the
packaged all-MiniLM-L6-v2, and reports the wall time of each stage plus agreement of document
labels with the gold labels (a document's label = majority cluster of its selected spans;
documents with no selected span count as outliers). Exact duplicate documents are dropped first
(the first copy is kept). The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, jsonl_rows, machine  # noqa: E402


def load_corpus(path: str, text_field: str, label_field: str | None, limit: int | None):
    """(texts, labels) with exact duplicates and non-text rows dropped, first `limit` rows."""
    rows = jsonl_rows(path, limit)
    seen, texts, labels = set(), [], []
    for r in rows:
        text = r.get(text_field)
        if not isinstance(text, str) or not text.strip() or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(r.get(label_field) if label_field else None)
    return texts, labels


@dataclass
class Discovery:
    """Everything one discovery run made, for the benchmarks that measure different parts of it."""

    encoder: object
    docs: object
    span_cfg: object
    spans: object
    vectors: object
    pipeline: object
    sample: object
    labelled: object
    dataset: object
    timings: dict


def discover(texts: list[str], min_len: int = 16, max_len: int = 64, stride: int = 8, seed: int = 42,
             dtype: str = "auto", model: str | None = None) -> Discovery:
    """The engine's discovery stages on `texts`, as the assets run them, each stage timed."""
    from emerge.config import EncoderConfig, IngestConfig, SpanConfig
    from emerge.embedding import embed_spans
    from emerge.encoder import load_encoder
    from emerge.ingest import documents_from_texts
    from emerge.spans import build_spans

    timings = {}
    t = time.perf_counter()
    encoder = load_encoder(EncoderConfig(model_name_or_path=model, device="auto", dtype=dtype))
    timings["load_model"] = time.perf_counter() - t
    t = time.perf_counter()
    ingest = documents_from_texts(texts, source="bench", config=IngestConfig(id_field=None, deduplicate=False))
    docs = ingest.documents
    timings["ingest"] = time.perf_counter() - t
    t = time.perf_counter()
    span_cfg = SpanConfig(min_len=min_len, max_len=max_len, stride=stride)
    spans, _ = build_spans(docs, encoder.tokenizer, span_cfg)
    timings["spans"] = time.perf_counter() - t
    t = time.perf_counter()
    vectors = embed_spans(docs, spans, encoder, progress=True)
    timings["embed"] = time.perf_counter() - t
    return refit(Discovery(encoder, docs, span_cfg, spans, vectors, None, None, None, None, timings), seed)


def refit(run: Discovery, seed: int) -> Discovery:
    """`run`'s spans and embeddings (deterministic) clustered again with UMAP seed `seed`:
    the fit, labelling and selection stages, timed."""
    from emerge.config import ClusteringConfig, SelectionConfig
    from emerge.dataset import curate
    from emerge.discovery.fit import fit_clustering, label_spans

    timings = {k: run.timings[k] for k in ("load_model", "ingest", "spans", "embed")}
    t = time.perf_counter()
    pipeline, sample = fit_clustering(run.spans, run.vectors, ClusteringConfig(random_state=seed))
    timings["fit_clustering"] = time.perf_counter() - t
    t = time.perf_counter()
    labelled = label_spans(pipeline, run.spans, run.vectors)
    timings["label_all_spans"] = time.perf_counter() - t
    t = time.perf_counter()
    dataset = curate(labelled, run.vectors, dict(zip(run.docs["doc_id"], run.docs["text"])), SelectionConfig(),
                     run.span_cfg)
    timings["select"] = time.perf_counter() - t
    return Discovery(run.encoder, run.docs, run.span_cfg, run.spans, run.vectors, pipeline, sample, labelled,
                     dataset, timings)


def summarize(run: Discovery, texts: list[str], seed: int):
    """(label per text, -1 = none; result dict with timings) of one discovery run."""
    import numpy as np

    encoder, docs, span_cfg, spans, pipeline = run.encoder, run.docs, run.span_cfg, run.spans, run.pipeline
    sample, labelled, dataset, timings = run.sample, run.labelled, run.dataset, run.timings

    top = (dataset.group_by("doc_id", "cluster_id").len()
           .sort(["doc_id", "len", "cluster_id"], descending=[False, True, False]).unique("doc_id", keep="first"))
    majority = dict(top.select("doc_id", "cluster_id").iter_rows())
    by_text = dict(zip(docs["text"].to_list(), docs["doc_id"].to_list()))
    from emerge.ingest import normalise_text

    doc_labels = [majority.get(by_text.get(normalise_text(t_, "NFC")), -1) for t_ in texts]
    tokens = int(sum(len(x) for x in encoder.tokenizer(docs["text"].to_list(), add_special_tokens=False)["input_ids"]))
    wall = sum(timings.values())
    info = {
        "model": encoder.name, "device": encoder.device, "forward_dtype": encoder.compute_dtype, "span": vars(span_cfg), "seed": seed,
        "documents": docs.height, "spans": spans.height, "fit_spans": int(len(sample)),
        "selected_spans": dataset.height, "tokens_embedded": tokens, "n_clusters": len(pipeline.cluster_ids),
        "largest_cluster_fraction": round(max(pipeline.sizes.values(), default=0) / max(len(sample), 1), 4),
        "max_cluster_size": pipeline.size_cap_,
        "span_noise_fraction": round(float((labelled["cluster_id"] < 0).mean()), 4),
        "outlier_fraction": round(float(np.mean([x == -1 for x in doc_labels])), 4),
        "titles": {int(c): pipeline.titles[c] for c in pipeline.cluster_ids},
        "wall_s_by_stage": {k: round(v, 2) for k, v in timings.items()}, "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1), "embed_tokens_per_s": round(tokens / timings["embed"], 1),
    }
    return doc_labels, info


def agreement(gold: list, pred: list) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    inliers = [i for i, p in enumerate(pred) if p != -1]
    g, q = [gold[i] for i in inliers], [pred[i] for i in inliers]
    return {"nmi": round(float(normalized_mutual_info_score(gold, pred)), 4),
            "ari": round(float(adjusted_rand_score(gold, pred)), 4),
            "nmi_non_outliers": round(float(normalized_mutual_info_score(g, q)), 4) if inliers else 0.0,
            "ari_non_outliers": round(float(adjusted_rand_score(g, q)), 4) if inliers else 0.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", required=True, help="JSONL with a text field")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--min-len", type=int, default=16)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--seed", type=int, default=42, help="UMAP seed (the first, with --seeds)")
    p.add_argument("--seeds", type=int, default=1, help="UMAP seeds seed, seed+1, ...: the embeddings are made "
                   "once, fit, labelling and selection run per seed; top-level keys are the first seed's")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="forward-pass precision (EncoderConfig.dtype)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    texts, gold = load_corpus(args.docs, args.text_field, args.label_field, args.limit)
    run = discover(texts, args.min_len, args.max_len, args.stride, args.seed, args.dtype)
    per_seed = []
    for seed in range(args.seed, args.seed + args.seeds):
        pred, info = summarize(run if seed == args.seed else refit(run, seed), texts, seed)
        per_seed.append(info | (agreement(gold, pred) if args.label_field else {}))
    result = {"config": {"docs": args.docs, "limit": args.limit, "seeds": args.seeds}, "machine": machine(),
              **per_seed[0], "per_seed": [{k: r[k] for k in SEED_KEYS if k in r} for r in per_seed],
              "over_seeds": over_seeds(per_seed)}
    return emit(result, args.out)


SEED_KEYS = ("seed", "nmi", "ari", "nmi_non_outliers", "outlier_fraction", "n_clusters", "span_noise_fraction",
             "largest_cluster_fraction", "max_cluster_size", "wall_s")


def over_seeds(per_seed: list[dict]) -> dict:
    """Mean and sample sd of each numeric per-seed measure (sd 0 for one seed)."""
    import numpy as np

    out = {}
    for key in SEED_KEYS[1:]:
        if key in per_seed[0]:
            values = np.array([r[key] for r in per_seed], float)
            out[key] = {"mean": round(float(values.mean()), 4),
                        "sd": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4)}
    return out


if __name__ == "__main__":
    sys.exit(main())
