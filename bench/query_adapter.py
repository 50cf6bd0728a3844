"""Can a linear map on the base's query vectors do what query-side training does? (a dev exploration)

    python bench/query_adapter.py --beir ../shared/data/nfcorpus --cache /tmp/da_cache --seed 0 --out r.json

The query side (`trained_side: query`) fine-tunes the whole query encoder on keyword pseudo-queries
against the teacher's softmax over every training document. This script fits only a map on the
base's query vectors, q' = normalize(A(q)), to the same queries, teacher, documents and loss
(`corpus_kl`): a full 384x384 matrix from the identity, or a residual rank-64 map from zero; no
transformer is trained, so it costs seconds. One tenth of the training documents' queries are held
out of the fit: their KL says whether what the map learnt carries over to documents it was not
fitted on (a label-free signal). The real queries are read only for the per-epoch metrics. The
curation is `bench/domain_adaptation.py`'s (the same `--cache` entry). Last stdout line: the JSON.

`--query-log-fraction F` asks what a log of real user queries (texts only, no judgments) would teach:
a fraction F of the collection's queries becomes the "log" (their texts scored by the same teacher
against the training documents, like any pseudo-query), every metric is then computed on the other
queries only, and each map is fitted three ways: keyword queries (the product's), the log alone, and
both. This is a product question, not the issue's benchmark: Emerge's default reads no query.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine, warm_up_numba  # noqa: E402
from domain_adaptation import cached_curation, collection_key  # noqa: E402


def fit_adapter(kind: str, queries, documents, teacher, train, held, scale: float, lr: float, epochs: int,
                seed: int, evaluate) -> list[dict]:
    """Fit a `kind` ("linear" or "lowrank") map on `queries[train]` with Adam (batches of 32); after
    every epoch, the KL of the train and held-out queries and `evaluate(map)`'s metrics."""
    import numpy as np
    import torch

    from emerge.training.query_side import corpus_kl

    generator = torch.Generator().manual_seed(seed)
    dim = queries.shape[1]
    if kind == "linear":
        matrix = torch.nn.Parameter(torch.eye(dim))
        params = [matrix]

        def apply(x):
            return x @ matrix.T
    else:
        down = torch.nn.Parameter(torch.randn(dim, 64, generator=generator) * 0.01)
        up = torch.nn.Parameter(torch.zeros(64, dim))
        params = [down, up]

        def apply(x):
            return x + (x @ down) @ up
    optimizer = torch.optim.Adam(params, lr=lr)
    rows = np.flatnonzero(train)
    curve = []
    for epoch in range(epochs):
        order = rows[torch.randperm(len(rows), generator=generator).numpy()]
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            optimizer.zero_grad()
            corpus_kl(apply(queries[batch]), documents, teacher[batch], scale).backward()
            optimizer.step()
        with torch.no_grad():
            curve.append({"epoch": epoch + 1,
                          "train_kl": round(corpus_kl(apply(queries[train]), documents, teacher[train], scale).item(), 4),
                          "held_kl": round(corpus_kl(apply(queries[held]), documents, teacher[held], scale).item(), 4),
                          **evaluate(apply)})
    return curve


def log_teacher_scores(qset, log_texts: list[str], log_vectors, texts: dict[str, str], lexical_weight: float):
    """The hybrid teacher's scores of real query texts against the training documents, as
    `query_side_set` scores the keyword queries (BM25 z-scaled to the dense spread per query)."""
    import numpy as np

    from emerge.training.lexical import BM25Index
    from emerge.training.query_side import lexical_scale

    bm25 = BM25Index.build([texts[d] for d in qset.doc_ids])
    dense = log_vectors @ qset.document_vectors.T
    lexical = (bm25.query_terms(log_texts) @ bm25.weights.T).toarray()
    return (dense + lexical_scale(dense, lexical, lexical_weight)[:, None] * lexical).astype(np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--model", default=None, help="base model directory (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--cache", default=None, help="bench/domain_adaptation.py's cache: its curation is reused")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", nargs="+", default=["linear", "lowrank"], choices=["linear", "lowrank"])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--query-log-fraction", type=float, default=None,
                   help="this fraction of the real queries' texts is a user's query log, the rest the evaluation")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from emerge.config import TrainingConfig
    from emerge.encoder import resolve_model_path
    from emerge.training.pairs import split_by_document
    from emerge.training.query_side import corpus_kl, query_side_set
    from emerge.training.retrieval import encode, load_beir, retrieval_metrics, top_k
    from emerge.training.trainer import load_sentence_transformer

    t0 = time.perf_counter()
    base_model = resolve_model_path(args.model)
    collection = load_beir(args.beir, args.split)
    if args.limit:
        collection = collection.limited(args.limit)
    warm_up_numba(0)
    dataset, _, texts = cached_curation(args.cache, collection_key(args.beir, args.split, args.limit, base_model),
                                        collection, (16, 64, 8), [])  # domain_adaptation.py's default spans
    base = load_sentence_transformer(base_model, "cpu")  # its own window, as evaluation reads
    documents = encode(base, collection.corpus_texts, 64, True, role="document")
    real = torch.from_numpy(encode(base, collection.query_texts, 64, role="query"))
    log_rows = np.zeros(len(real), dtype=bool)
    if args.query_log_fraction:  # a fixed split (not the seed's): every seed is scored on the same queries
        log_rows[np.random.default_rng(12345).permutation(len(real))[:round(args.query_log_fraction * len(real))]] = True
    scored = np.flatnonzero(~log_rows)
    qrels = [collection.qrels[collection.query_ids[i]] for i in scored]

    def evaluate(apply) -> dict:
        vectors = torch.nn.functional.normalize(apply(real[scored]), dim=-1).numpy()
        ranked = [[collection.corpus_ids[i] for i in row] for row in top_k(vectors @ documents.T, 100)]
        metrics = retrieval_metrics(ranked, qrels)
        return {k: round(metrics[k], 5) for k in ("ndcg@10", "mrr@10", "recall@100")}

    config = TrainingConfig(seed=args.seed)
    train_rows, _ = split_by_document(dataset, config.eval_fraction, args.seed)
    qset = query_side_set(train_rows, texts, base, queries_per_document=config.train_queries_per_document,
                          window_chars=config.context_chars, lexical_weight=config.lexical_weight, seed=args.seed,
                          keyword_terms=tuple(config.keyword_terms), max_queries=config.train_query_cap)
    teacher = torch.from_numpy(qset.teacher_scores(np.arange(qset.height)))
    queries, docs = torch.from_numpy(qset.query_vectors), torch.from_numpy(qset.document_vectors)
    rng = np.random.default_rng(args.seed)
    held_docs = rng.choice(len(qset.doc_ids), len(qset.doc_ids) // 10, replace=False)
    held = np.isin(qset.query_docs, held_docs)
    with torch.no_grad():
        base_kl = {"train_kl": round(corpus_kl(queries[~held], docs, teacher[~held], config.scale).item(), 4),
                   "held_kl": round(corpus_kl(queries[held], docs, teacher[held], config.scale).item(), 4)}
    fits = {"": ~held}
    if log_rows.any():  # the log's texts, scored by the same hybrid teacher against the training documents
        log_teacher = torch.from_numpy(log_teacher_scores(qset, [collection.query_texts[i] for i in
                                                                 np.flatnonzero(log_rows)],
                                                          real[log_rows].numpy(), texts, config.lexical_weight))
        queries, teacher = torch.cat([queries, real[log_rows]]), torch.cat([teacher, log_teacher])
        log = np.r_[np.zeros(len(held), dtype=bool), np.ones(int(log_rows.sum()), dtype=bool)]
        held = np.r_[held, np.zeros(int(log_rows.sum()), dtype=bool)]
        fits = {"keywords_": ~held & ~log, "log_": log, "keywords+log_": ~held}
    runs = {}
    for name, train in fits.items():
        for kind in args.kinds:
            for lr in args.lrs:
                runs[f"{name}{kind}_lr{lr:g}"] = curve = fit_adapter(kind, queries, docs, teacher, train, held,
                                                                     config.scale, lr, args.epochs, args.seed, evaluate)
                print(f"{name}{kind} lr {lr:g}: " + ", ".join(
                    f"ep{c['epoch']} held {c['held_kl']:.3f} nDCG {c['ndcg@10']:.4f}" for c in curve),
                    file=sys.stderr, flush=True)
    return emit({"benchmark": "query_adapter", "collection": str(args.beir), "seed": args.seed,
                 "queries": qset.height, "held_out_queries": int(held.sum()), "log_queries": int(log_rows.sum()),
                 "scored_queries": len(scored),
                 "base": evaluate(lambda x: x) | base_kl, "runs": runs,
                 "wall_s": round(time.perf_counter() - t0, 1), "machine": machine()}, args.out)


if __name__ == "__main__":
    sys.exit(main())
