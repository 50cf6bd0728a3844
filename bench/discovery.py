"""Topic discovery: Emerge vs BERTopic on the same documents, same MiniLM model, one run.

    pip install -e ".[bench]"      # BERTopic is a benchmark-only dependency
    python bench/discovery.py --docs ../shared/data/bbc_news/bbc_news.jsonl --label-field category \
        --out result.json
    python bench/discovery.py --docs ../shared/data/20newsgroups/train.jsonl --label-field label \
        --limit 4000 --out result.json

Both get the same de-duplicated documents. BERTopic: default pipeline (UMAP 5-d cosine + HDBSCAN
min_cluster_size 10 + c-TF-IDF) with the packaged all-MiniLM-L6-v2, which truncates each
document to its first 256 tokens; UMAP gets the same fixed seed as Emerge (reproducible, and
single-threaded in both). Emerge: the engine path of the Dagster assets on whole documents; a
document's label is the majority cluster of its selected spans. Reports, per method: NMI and
ARI against the gold labels (outliers = label -1 count as one class), outlier fraction, number
of clusters, wall time (model load excluded for both), tokens embedded and tokens per second.
The last stdout line is the JSON result.
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
from discovery_quality import agreement, load_corpus, run_emerge  # noqa: E402


def run_bertopic(texts: list[str], seed: int, encoder) -> tuple[list[int], dict]:
    """BERTopic's default pipeline: (topic per text, -1 = outlier; result dict with timings)."""
    model, topics, _, info = fit_bertopic(texts, seed, encoder)
    return topics, info


def fit_bertopic(texts: list[str], seed: int, encoder):
    """BERTopic's default pipeline on `encoder`'s device, with Emerge's UMAP settings and seed;
    its embedding pass runs under the encoder's autocast (the precision of Emerge's forward
    pass), so throughput compares like with like. Returns (model, topics, embeddings, info);
    all-MiniLM-L6-v2 ends in a Normalize module, so the embeddings are unit vectors."""
    from bertopic import BERTopic
    from sentence_transformers import SentenceTransformer
    from umap import UMAP

    from emerge.encoder import packaged_model_path

    st = SentenceTransformer(str(packaged_model_path()), device=encoder.device)
    t0 = time.perf_counter()
    with encoder.autocast():
        embeddings = st.encode(texts, batch_size=32, show_progress_bar=True)
    embeddings = embeddings.astype("float32")
    embed_s = time.perf_counter() - t0
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_corpus_arguments(p)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="forward-pass precision of both methods (auto: Emerge's default for this machine)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    texts, gold = load_corpus(args.docs, args.text_field, args.label_field, args.limit)
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder

    encoder = load_encoder(EncoderConfig(dtype=args.dtype))  # model load outside both timings
    warm_up_numba(args.seed)  # JIT compilation outside both timings, whichever runs first
    emerge_pred, emerge_info = run_emerge(texts, seed=args.seed, dtype=args.dtype)
    emerge_info["wall_s"] = round(emerge_info["wall_s"] - emerge_info["wall_s_by_stage"]["load_model"], 2)
    emerge_info["tokens_per_s"] = round(emerge_info["tokens_embedded"] / emerge_info["wall_s"], 1)
    bert_pred, bert_info = run_bertopic(texts, args.seed, encoder)
    result = {"config": {"docs": args.docs, "limit": args.limit, "documents": len(texts), "seed": args.seed,
                         "dtype": args.dtype, "forward_dtype": encoder.compute_dtype,
                         "gold_labels": len(set(gold))},
              "machine": machine(),
              "emerge": {**agreement(gold, emerge_pred), **emerge_info},
              "bertopic": {**agreement(gold, bert_pred), **bert_info}}
    result["throughput_ratio_emerge_over_bertopic"] = round(
        result["emerge"]["tokens_per_s"] / result["bertopic"]["tokens_per_s"], 3)
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
