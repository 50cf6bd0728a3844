"""The whole fine-tuning loop on a curated dataset: split, pair, train, evaluate base vs fine-tuned.

The Dagster `fine_tuned_model` asset and `bench/domain_adaptation.py` both call
`fine_tune_and_evaluate`, so the numbers in MLflow and in BENCHMARKS.md come from one code path.
Both models are evaluated on the same held-out documents (and the same optional BEIR
collection) in the same run.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from emerge.config import TrainingConfig
from emerge.pairs import build_pairs, split_by_document
from emerge.retrieval import (BeirCollection, evaluate_beir, evaluate_label_retrieval, label_retrieval_task,
                              sanity_table)
from emerge.training import TrainingResult, load_sentence_transformer, train

log = logging.getLogger(__name__)


@dataclass
class FineTuneReport:
    model_dir: Path
    metrics: dict[str, float]
    dataset_stats: dict[str, int | float | str]
    training: TrainingResult
    sanity: pl.DataFrame
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def params(self, config: TrainingConfig) -> dict:
        return {f"train.{k}": v for k, v in asdict(config).items()}


def dataset_hash(dataset: pl.DataFrame) -> str:
    """Content hash of the rows that decide training (text, document, label), order-independent."""
    cols = [c for c in ("text_span", "doc_id", "cluster_id", "topic_id") if c in dataset.columns]
    row_hashes = dataset.select(cols).hash_rows(seed=0).sort()
    return hashlib.sha256(row_hashes.to_numpy().tobytes()).hexdigest()[:16]


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": round(float(v), 5) for k, v in metrics.items()}


def fine_tune_and_evaluate(dataset: pl.DataFrame, label_col: str, base_model: str | Path, output_dir: str | Path,
                           config: TrainingConfig, device: str = "cpu", beir: BeirCollection | None = None,
                           texts: dict[str, str] | None = None, on_log: Callable[[dict], None] | None = None) -> FineTuneReport:
    """Train on the training documents' pairs; score base and fine-tuned on held-out documents.

    `texts` (doc_id -> document text) is needed by the `span_context` pairing. Metrics are named `<task>.<model>.<metric>` (task `heldout` or `beir`, model `base` or
    `fine_tuned`) plus `<task>.delta.<metric>` = fine-tuned minus base.
    """
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    train_rows, eval_rows = split_by_document(dataset, config.eval_fraction, config.seed)
    pairs = build_pairs(train_rows, label_col, config, texts)
    task = label_retrieval_task(eval_rows, label_col, seed=config.seed)
    seconds["pairs"] = time.perf_counter() - t
    stats = {"dataset_rows": dataset.height, "dataset_hash": dataset_hash(dataset),
             "train_documents": train_rows["doc_id"].n_unique(), "eval_documents": eval_rows["doc_id"].n_unique(),
             "train_spans": train_rows.height, "eval_spans": eval_rows.height, "train_pairs": pairs.height,
             "train_groups": pairs["group"].n_unique(), "labels": int(dataset[label_col].n_unique()),
             "heldout_queries": len(task.query_texts), "heldout_corpus": len(task.corpus_texts)}
    log.info("fine-tuning on %d pairs from %d documents; %d held-out documents", pairs.height,
             stats["train_documents"], stats["eval_documents"])

    metrics: dict[str, float] = {}
    scores = {}
    t = time.perf_counter()
    base = load_sentence_transformer(base_model, device, config.max_seq_length)
    base_heldout, scores["base"] = evaluate_label_retrieval(base, task)
    metrics |= _prefixed("heldout.base", base_heldout)
    if beir is not None:
        metrics |= _prefixed("beir.base", evaluate_beir(base, beir, progress=True))
    del base
    seconds["evaluate_base"] = time.perf_counter() - t

    t = time.perf_counter()
    result = train(pairs, base_model, output_dir, config, device=device, on_log=on_log)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    tuned = load_sentence_transformer(result.model_dir, device, config.max_seq_length)
    tuned_heldout, scores["fine_tuned"] = evaluate_label_retrieval(tuned, task)
    metrics |= _prefixed("heldout.fine_tuned", tuned_heldout)
    if beir is not None:
        metrics |= _prefixed("beir.fine_tuned", evaluate_beir(tuned, beir, progress=True))
    seconds["evaluate_fine_tuned"] = time.perf_counter() - t
    for name in list(metrics):
        if ".fine_tuned." in name:
            task_name, metric = name.split(".fine_tuned.")
            metrics[f"{task_name}.delta.{metric}"] = round(metrics[name] - metrics[f"{task_name}.base.{metric}"], 5)
    stats["hard_negative_pairs"] = result.train_pairs if config.hard_negatives else 0
    return FineTuneReport(result.model_dir, metrics, stats, result, sanity_table(task, scores), seconds)
