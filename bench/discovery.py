"""Topic discovery: Emerge vs BERTopic on the same documents, same MiniLM model, over UMAP seeds.

    pip install -e ".[bench]"      # BERTopic is a benchmark-only dependency
    python bench/discovery.py --docs ../shared/data/bbc_news/bbc_news.jsonl --label-field category \
        --seeds 3 --out result.json
    python bench/discovery.py --docs ../shared/data/20newsgroups/train.jsonl --label-field label \
        --limit 4000 --seeds 3 --out result.json

Both get the same de-duplicated documents. BERTopic: default pipeline (UMAP 5-d cosine + HDBSCAN
min_cluster_size 10 + c-TF-IDF) with the packaged all-MiniLM-L6-v2, which truncates each
document to its first 256 tokens; UMAP gets the same seeds as Emerge (reproducible, and
single-threaded in both). Emerge: the engine path of the Dagster assets on whole documents; a
document's label is the majority cluster of its selected spans.

Matched variants, so neither method gains from how it treats outliers: `bertopic_reduce_outliers`
(BERTopic's own `reduce_outliers`, every document gets a topic) and `emerge_document_vectors`
(one vector per document, the mean of its span vectors, labelled by the same fitted pipeline).
Per method: NMI and ARI against the gold labels over all documents (outliers = label -1 count
as one class) and over non-outliers, outlier fraction, clusters, wall time (model load
excluded; each seed counts the embedding pass it reuses), tokens embedded, tokens/s and
documents/s, as means over `--seeds` with their sd and per-seed rows. A difference within 2 sd
is called a tie (`differences_emerge_minus_bertopic`). The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_corpus_arguments, emit, machine, warm_up_numba  # noqa: E402
from discovery_quality import agreement, discover, load_corpus, refit, summarize  # noqa: E402

import numpy as np  # noqa: E402


def fit_bertopic(texts: list[str], seed: int, encoder, embedded: tuple[np.ndarray, float] | None = None):
    """BERTopic's default pipeline on `encoder`'s device, with Emerge's UMAP settings and seed;
    its embedding pass runs under the encoder's autocast (the precision of Emerge's forward
    pass), so throughput compares like with like. Returns (model, topics, embeddings, info);
    all-MiniLM-L6-v2 ends in a Normalize module, so the embeddings are unit vectors.
    `embedded` = (embeddings, seconds) of an earlier call on the same texts: reused, and its
    seconds counted in this fit's wall time."""
    from bertopic import BERTopic
    from sentence_transformers import SentenceTransformer
    from umap import UMAP

    from emerge.encoder import packaged_model_path

    st = SentenceTransformer(str(packaged_model_path()), device=encoder.device)
    if embedded is None:
        t0 = time.perf_counter()
        with encoder.autocast():
            embeddings = st.encode(texts, batch_size=32, show_progress_bar=True)
        embeddings = embeddings.astype("float32")
        embed_s = time.perf_counter() - t0
    else:
        embeddings, embed_s = embedded
    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed)
    t0 = time.perf_counter()
    model = BERTopic(embedding_model=st, umap_model=umap_model, calculate_probabilities=False)
    topics, _ = model.fit_transform(texts, embeddings=embeddings)
    fit_s = time.perf_counter() - t0
    limit = st.max_seq_length - 2
    tokens = int(sum(min(len(ids), limit) for ids in st.tokenizer(texts, add_special_tokens=False)["input_ids"]))
    wall = embed_s + fit_s
    info = {"n_clusters": len({t for t in topics if t != -1}),
            "outlier_fraction": round(sum(t == -1 for t in topics) / len(topics), 4),
            "wall_s_by_stage": {"embed": round(embed_s, 2), "fit_topics": round(fit_s, 2)},
            "wall_s": round(wall, 2), "tokens_embedded": tokens, "tokens_per_s": round(tokens / wall, 1),
            "max_seq_length": st.max_seq_length, "forward_dtype": encoder.compute_dtype}
    return model, [int(t) for t in topics], embeddings, info


def bertopic_runs(texts: list[str], gold: list, seeds: list[int], encoder) -> tuple[list[dict], list[dict]]:
    """BERTopic per UMAP seed (one embedding pass; each seed's wall time counts it, as a user's
    run would): its own topics, and the same fit with `reduce_outliers` (embeddings strategy), so
    every document has a topic as Emerge's document-vector variant does."""
    plain, reduced, embedded = [], [], None
    for seed in seeds:
        model, topics, embeddings, info = fit_bertopic(texts, seed, encoder, embedded)
        embedded = (embeddings, info["wall_s_by_stage"]["embed"])
        plain.append({"seed": seed, **agreement(gold, topics), **_throughput(info, len(texts))})
        t = time.perf_counter()
        assigned = topics if -1 not in topics else [  # BERTopic refuses to reduce when there is no outlier
            int(x) for x in model.reduce_outliers(texts, topics, strategy="embeddings", embeddings=embeddings)]
        extra = time.perf_counter() - t
        reduced.append({"seed": seed, **agreement(gold, assigned), **_throughput(
            info | {"wall_s": info["wall_s"] + extra, "n_clusters": len({x for x in assigned if x != -1}),
                    "outlier_fraction": round(sum(x == -1 for x in assigned) / len(assigned), 4)}, len(texts))})
    return plain, reduced


def emerge_runs(texts: list[str], gold: list, seeds: list[int], dtype: str) -> tuple[list[dict], list[dict]]:
    """Emerge per UMAP seed (one embedding pass, each seed's wall time counts it; model load
    excluded): document label = majority cluster of its selected spans, and the matched variant
    that labels one vector per document (the normalised mean of all its span vectors) with the
    same fitted pipeline, so document-level clustering is compared directly."""
    from emerge.vectors import l2_normalise
    from emerge.ingest import normalise_text

    run, plain, doc_level = None, [], []
    for seed in seeds:
        run = discover(texts, seed=seed, dtype=dtype) if run is None else refit(run, seed)
        pred, info = summarize(run, texts, seed)
        info["wall_s"] = round(info["wall_s"] - info["wall_s_by_stage"]["load_model"], 2)
        plain.append({"seed": seed, **agreement(gold, pred), **_throughput(info, len(texts))})
        t = time.perf_counter()
        doc_ids = run.docs["doc_id"].to_list()
        index = {d: i for i, d in enumerate(doc_ids)}
        rows = np.array([index[d] for d in run.spans["doc_id"].to_list()])
        sums = np.zeros((len(doc_ids), run.vectors.shape[1]), np.float64)
        np.add.at(sums, rows, run.vectors)
        labels, _ = run.pipeline.predict(l2_normalise(sums.astype(np.float32)))
        by_text = dict(zip(run.docs["text"].to_list(), labels.tolist()))
        doc_pred = [int(by_text.get(normalise_text(x, "NFC"), -1)) for x in texts]
        extra = time.perf_counter() - t
        doc_level.append({"seed": seed, **agreement(gold, doc_pred), **_throughput(
            info | {"wall_s": info["wall_s"] - info["wall_s_by_stage"]["label_all_spans"]
                    - info["wall_s_by_stage"]["select"] + extra,
                    "outlier_fraction": round(float(np.mean([x == -1 for x in doc_pred])), 4)}, len(texts))})
    return plain, doc_level


def _throughput(info: dict, documents: int) -> dict:
    return {"n_clusters": info["n_clusters"], "outlier_fraction": info["outlier_fraction"],
            "wall_s": round(info["wall_s"], 2), "tokens_embedded": info["tokens_embedded"],
            "tokens_per_s": round(info["tokens_embedded"] / info["wall_s"], 1),
            "docs_per_s": round(documents / info["wall_s"], 2)}


KEYS = ("nmi", "ari", "nmi_non_outliers", "ari_non_outliers", "outlier_fraction", "n_clusters", "wall_s",
        "tokens_embedded", "tokens_per_s", "docs_per_s")


def over_seeds(per_seed: list[dict]) -> dict:
    """Means of every measure over seeds at the top level, their sample sd under `sd`, the rows under `per_seed`."""
    values = {k: np.array([r[k] for r in per_seed], float) for k in KEYS}
    return {**{k: round(float(v.mean()), 4) for k, v in values.items()},
            "sd": {k: round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4) for k, v in values.items()},
            "per_seed": per_seed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_corpus_arguments(p)
    p.add_argument("--seeds", type=int, default=3, help="UMAP seeds seed, seed+1, ... for both methods")
    p.add_argument("--no-bertopic", action="store_true", help="Emerge only (BERTopic is a bench extra)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="forward-pass precision of both methods (auto: Emerge's default for this machine)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    texts, gold = load_corpus(args.docs, args.text_field, args.label_field, args.limit)
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    seeds = list(range(args.seed, args.seed + args.seeds))
    encoder = load_encoder(EncoderConfig(dtype=args.dtype))  # model load outside both timings
    warm_up_numba(args.seed)  # JIT compilation outside both timings, whichever runs first
    emerge, emerge_docs = emerge_runs(texts, gold, seeds, args.dtype)
    result = {"config": {"docs": args.docs, "limit": args.limit, "documents": len(texts), "seeds": seeds,
                         "dtype": args.dtype, "forward_dtype": encoder.compute_dtype, "gold_labels": len(set(gold))},
              "machine": machine(), "emerge": over_seeds(emerge), "emerge_document_vectors": over_seeds(emerge_docs),
              "bertopic": None, "bertopic_reduce_outliers": None}
    try:
        import bertopic  # noqa: F401
    except ImportError:
        bertopic = None
    if args.no_bertopic or bertopic is None:
        result["bertopic_skipped"] = "--no-bertopic" if args.no_bertopic else "bertopic is not installed"
        return emit(result, args.out)
    plain, reduced = bertopic_runs(texts, gold, seeds, encoder)
    result |= {"bertopic": over_seeds(plain), "bertopic_reduce_outliers": over_seeds(reduced)}
    result["differences_emerge_minus_bertopic"] = {
        k: {"mean": round(result["emerge"][k] - result["bertopic"][k], 4),
            "tie_within_2sd": abs(result["emerge"][k] - result["bertopic"][k])
            <= 2 * max(result["emerge"]["sd"][k], result["bertopic"]["sd"][k])}
        for k in ("nmi", "ari", "nmi_non_outliers", "ari_non_outliers")}
    result["throughput_ratio_emerge_over_bertopic"] = round(
        result["emerge"]["tokens_per_s"] / result["bertopic"]["tokens_per_s"], 3)
    result["wall_ratio_emerge_over_bertopic"] = round(result["emerge"]["wall_s"] / result["bertopic"]["wall_s"], 3)
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
