"""Recipe A measured: does fine-tuning on same-cluster pairs make a corpus cluster better by its gold labels?

    python bench/clustering_gain.py --docs ../shared/data/bbc_news/bbc_news.jsonl --label-field category \
        --out result.json
    python bench/clustering_gain.py --docs ../shared/data/20newsgroups/train.jsonl --label-field label \
        --limit 4000 --out result.json

Discovery runs on the unlabelled texts exactly as the assets run it (spans -> late-chunked
embeddings -> UMAP/HDBSCAN -> Pareto selection); the curated dataset's same-cluster pairs (top
`--pairs-per-cluster` by relevance, spans of different documents, cluster-exclusive batches,
MNRL) fine-tune the base model. Gold labels are read only by the final scoring: each document's
mean-pooled vector (all its tokens, long documents in overlapping windows) from the base and the
fine-tuned model, k-means with k = number of gold labels (5 seeds, 10 inits each: mean NMI and V-measure) and
UMAP + HDBSCAN (NMI, noise as one class). Last stdout line = JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_corpus_arguments, add_model_argument, emit, machine  # noqa: E402
from discovery_quality import discover, load_corpus  # noqa: E402

from emerge.config import TrainingConfig  # noqa: E402


def document_vectors(model_dir, texts: list[str]):
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    return load_encoder(EncoderConfig(model_name_or_path=str(model_dir), batch_size=32)).embed_texts(texts)


def cluster_scores(vectors, gold: list, seed: int) -> dict:
    import hdbscan
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score, v_measure_score
    from umap import UMAP

    from emerge.discovery.umap_kernels import cache_umap_kernels

    cache_umap_kernels()

    k = len(set(gold))
    nmi, vm = [], []
    for s in range(5):  # n_init 10: with 3, one of the base's five BBC News seeds fell into a poor optimum
        pred = KMeans(n_clusters=k, n_init=10, random_state=seed + s).fit_predict(vectors)
        nmi.append(normalized_mutual_info_score(gold, pred))
        vm.append(v_measure_score(gold, pred))
    coords = UMAP(n_components=5, n_neighbors=15, min_dist=0.0, metric="cosine", random_state=seed).fit_transform(vectors)
    pred = hdbscan.HDBSCAN(min_cluster_size=max(5, int(len(vectors) ** 0.5 / 2))).fit_predict(coords)
    return {"nmi": round(float(np.mean(nmi)), 4), "nmi_sd": round(float(np.std(nmi)), 4),
            "nmi_per_kmeans_seed": [round(float(x), 4) for x in nmi],
            "v_measure": round(float(np.mean(vm)), 4),
            "hdbscan_nmi": round(float(normalized_mutual_info_score(gold, pred)), 4),
            "hdbscan_clusters": int(len(set(pred.tolist()) - {-1})),
            "hdbscan_noise_fraction": round(float((pred == -1).mean()), 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_corpus_arguments(p)
    add_model_argument(p)
    p.add_argument("--pairs-per-cluster", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--near-cluster-fraction", type=float, nargs="+", default=[TrainingConfig.near_cluster_fraction],
                   help="share of the other clusters, nearest by centroid, kept out of a row's in-batch negatives; "
                        "several values train one model each on the same discovery (`fine_tuned` = the first)")
    p.add_argument("--pairing", choices=["same_cluster", "same_document"], default="same_cluster",
                   help="same_cluster: recipe A (spans of different documents in one cluster); same_document: two "
                        "neighbouring selected spans of one document and cluster, batches still cluster-exclusive "
                        "with the same near-cluster mask (a document never mixes gold topics, a cluster may)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-pairs", type=int, default=TrainingConfig.min_pairs,
                   help="fewer training pairs than this is an error (the smoke test's tiny model selects few spans)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import polars as pl

    from emerge.encoder import resolve_model_path
    from emerge.training.pairs import build_pairs
    from emerge.training.trainer import train

    t_start = time.perf_counter()
    texts, gold = load_corpus(args.docs, args.text_field, args.label_field, args.limit)
    keep = [i for i, g in enumerate(gold) if g is not None]
    texts, gold = [texts[i] for i in keep], [str(gold[i]) for i in keep]
    timings = {}
    t = time.perf_counter()
    found = discover(texts, seed=args.seed, model=args.model)  # the same discovery as bench/discovery_quality.py
    dataset, n_clusters = found.dataset, len(found.pipeline.cluster_ids)
    timings["discovery"] = time.perf_counter() - t
    base_dir = resolve_model_path(args.model)
    t = time.perf_counter()
    results = {"base": cluster_scores(document_vectors(base_dir, texts), gold, args.seed)}
    timings["evaluate_base"] = time.perf_counter() - t
    variants = {}
    for fraction in args.near_cluster_fraction:
        config = TrainingConfig(pairing="same_cluster", pairs_per_label=args.pairs_per_cluster,
                                learning_rate=args.learning_rate, epochs=args.epochs, batch_size=args.batch_size,
                                near_cluster_fraction=fraction, seed=args.seed, min_pairs=args.min_pairs)
        if args.pairing == "same_document":
            pairs = build_pairs(dataset, "cluster_id", dataclasses.replace(config, pairing="same_document"))
            pairs = pairs.with_columns(pl.col("label").alias("group"))  # cluster-exclusive batches, near mask
        else:
            pairs = build_pairs(dataset, "cluster_id", config)
        with tempfile.TemporaryDirectory(prefix="emerge-clustering-gain-") as tmp:
            t = time.perf_counter()
            trained = train(pairs, base_dir, Path(tmp) / "model", config)
            timings[f"train_{fraction}"] = time.perf_counter() - t
            t = time.perf_counter()
            variants[str(fraction)] = cluster_scores(document_vectors(trained.model_dir, texts), gold, args.seed)
            timings[f"evaluate_{fraction}"] = time.perf_counter() - t
        print(f"near_cluster_fraction {fraction}: k-means NMI {variants[str(fraction)]['nmi']:.4f} "
              f"(base {results['base']['nmi']:.4f})", file=sys.stderr, flush=True)
    results["fine_tuned"] = variants[str(args.near_cluster_fraction[0])]
    result = {"config": {"docs": args.docs, "limit": args.limit, "documents": len(texts), "labels": len(set(gold)),
                         "model": str(base_dir),
                         "seed": args.seed, "pairs_per_cluster": args.pairs_per_cluster, "pairing": args.pairing,
                         "learning_rate": args.learning_rate, "epochs": args.epochs, "batch_size": args.batch_size,
                         "near_cluster_fraction": args.near_cluster_fraction[0]},
              "machine": machine(), "discovered_clusters": n_clusters, "curated_spans": dataset.height,
              "train_pairs": pairs.height, "train_steps": trained.steps, **results,
              "delta": {k: round(results["fine_tuned"][k] - results["base"][k], 4)
                        for k in ("nmi", "v_measure", "hdbscan_nmi")},
              "variants": {f: {"scores": v, "delta": {k: round(v[k] - results["base"][k], 4)
                                                      for k in ("nmi", "v_measure", "hdbscan_nmi")}}
                           for f, v in variants.items()},
              "wall_s_by_stage": {k: round(v, 1) for k, v in timings.items()},
              "wall_s": round(time.perf_counter() - t_start, 1)}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
