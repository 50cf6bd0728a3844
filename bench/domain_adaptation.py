"""Does a model fine-tuned on Emerge's dataset retrieve better in the user's domain?

    python bench/domain_adaptation.py --beir ../shared/data/cranfield --out result.json

Curates the collection's corpus with Emerge (late-chunked spans -> UMAP/HDBSCAN clusters ->
Pareto selection), fine-tunes all-MiniLM-L6-v2 on the dataset (recipe A: MNRL on span pairs,
group-exclusive batches), and evaluates base and fine-tuned models on the collection's queries
and judgments (`qrels/<split>.tsv`). Queries and judgments are read only for that final
evaluation: curation and training see the corpus alone. The last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, warm_up_numba  # noqa: E402


def curate_corpus(texts: list[str], min_len: int, max_len: int, stride: int, seed: int):
    """Emerge's cluster dataset for the corpus texts (the same engine calls as the assets)."""
    from emerge import ClusteringConfig, Curator, CuratorConfig, IngestConfig, LocalClusterAnalyzer

    curator = Curator(config=CuratorConfig(min_length=min_len, max_length=max_len, stride=stride,
                                           ingest=IngestConfig(id_field=None)),
                      analyzer=LocalClusterAnalyzer(clustering=ClusteringConfig(random_state=seed)))
    labelled = curator.process_batch(texts, source="corpus")
    return curator.prepare_final_dataset(labelled), curator.last_report, curator.texts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="first N corpus documents (all judged docs kept)")
    p.add_argument("--out", default=None)
    p.add_argument("--model", default=None, help="base model directory (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--pairing", default="span_context", choices=["span_context", "same_document", "same_cluster"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--pairs-per-label", type=int, default=2000)
    p.add_argument("--eval-fraction", type=float, default=0.1)
    p.add_argument("--hard-negatives", action="store_true")
    p.add_argument("--context-chars", type=int, default=1200)
    p.add_argument("--span-min", type=int, default=16)
    p.add_argument("--span-max", type=int, default=64)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    from emerge.config import TrainingConfig
    from emerge.encoder import resolve_device, resolve_model_path
    from emerge.finetune import fine_tune_and_evaluate
    from emerge.retrieval import load_beir

    config = TrainingConfig(pairing=args.pairing, epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.lr, max_seq_length=args.max_seq_length,
                            pairs_per_label=args.pairs_per_label, eval_fraction=args.eval_fraction,
                            hard_negatives=args.hard_negatives, seed=args.seed,
                            context_chars=args.context_chars)
    device = resolve_device(args.device)
    base_model = resolve_model_path(args.model)
    timings = {}
    t = time.perf_counter()
    collection = load_beir(args.beir, args.split)
    if args.limit:
        collection = collection.limited(args.limit)
    timings["load"] = time.perf_counter() - t
    warm_up_numba(args.seed)

    t = time.perf_counter()
    dataset, report, texts = curate_corpus(collection.corpus_texts, args.span_min, args.span_max, args.stride, args.seed)
    timings["curate"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = fine_tune_and_evaluate(dataset, "cluster_id", base_model, Path(tmp) / "model", config,
                                        device=device, beir=collection, texts=texts)
        timings["fine_tune_and_evaluate"] = time.perf_counter() - t
    timings |= {f"  {k}": v for k, v in result.stage_seconds.items()}
    keys = ("ndcg@10", "mrr@10", "recall@100")
    out = {
        "benchmark": "domain_adaptation", "collection": str(args.beir), "split": args.split,
        "base": {k: result.metrics[f"beir.base.{k}"] for k in keys},
        "fine_tuned": {k: result.metrics[f"beir.fine_tuned.{k}"] for k in keys},
        "delta": {k: result.metrics[f"beir.delta.{k}"] for k in keys},
        "heldout_cluster_retrieval": {k: v for k, v in result.metrics.items() if k.startswith("heldout.")},
        "wall_s": {k.strip(): round(v, 1) for k, v in timings.items()},
        "total_wall_s": round(sum(v for k, v in timings.items() if not k.startswith(" ")), 1),
        "collection_stats": collection.stats(), "curation": report | {"dataset_rows": dataset.height,
                                                                      "clusters": int(dataset["cluster_id"].n_unique())},
        "dataset_stats": result.dataset_stats, "train_loss": result.training.train_loss,
        "training": asdict(config), "device": device, "machine": machine(),
    }
    return emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
