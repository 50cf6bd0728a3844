"""The whole fine-tuning loop on a curated dataset: split, pair, train, evaluate base vs fine-tuned.

The Dagster `fine_tuned_model` asset and `bench/domain_adaptation.py` both call
`fine_tune_and_evaluate`, so the numbers in MLflow and in BENCHMARKS.md come from one code path.
Both models are evaluated on the same held-out documents (and the same optional BEIR
collection) in the same run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from emerge.atomic import atomic_write_dir, atomic_write_text
from emerge.config import TrainingConfig
from emerge.training.distillation import DistillationSet, distillation_triplets
from emerge.errors import InputError
from emerge.label_scheme import SCHEMES, scheme_of
from emerge.training.pairs import build_pairs, split_by_document
from emerge.training.query_side import QuerySideSet, query_side_set, train_query_side
from emerge.training.promotion import (PromotionDecision, choose_and_gate, judged_queries_criterion,
                                      label_free_criterion)
from emerge.topics.self_training import SelfTrainingConfig, default_scorer, self_train, write_matched_threshold
from emerge.training.retrieval import (BeirCollection, evaluate_beir, evaluate_label_retrieval, label_retrieval_task,
                              sanity_table)
from emerge.training.trainer import TrainingResult, load_sentence_transformer, train

log = logging.getLogger(__name__)


@dataclass
class FineTuneReport:
    model_dir: Path
    metrics: dict[str, float]
    dataset_stats: dict[str, int | float | str]
    training: TrainingResult
    sanity: pl.DataFrame
    stage_seconds: dict[str, float] = field(default_factory=dict)
    promotion: PromotionDecision | None = None
    trained_side: str = "both"  # "query": an asymmetric model, documents read by the base's encoder

    def params(self, config: TrainingConfig) -> dict:
        return {f"train.{k}": v for k, v in config.in_force.items()}

    @property
    def promoted(self) -> bool:
        """Published to `model_dir`: the gate passed, or there was nothing to gate on."""
        return self.promotion is None or self.promotion.promoted

    @property
    def current_model(self) -> str:
        """What a user of `model_dir` gets now: this run's model, the one an earlier run published, or
        (no model there at all) the base."""
        if self.promoted:
            return "fine_tuned"
        return "previous" if (self.model_dir / "modules.json").exists() else "base"

    @property
    def promotion_reason(self) -> str:
        return self.promotion.reason if self.promotion else "no document texts: published without a gate"

    def tracking(self, config: TrainingConfig, self_training: SelfTrainingConfig | None = None,
                 **context) -> tuple[dict, dict[str, float]]:
        """(params, metrics) of the run's tracking record. Params: `context` (recipe, base model,
        device, ...), the training config, the self-training selection, the dataset hash (an id, not a
        number) and the publication outcome; metrics: every evaluation metric, the dataset counts, the
        seconds per stage and the final training loss."""
        params = {**context, "dataset_hash": self.dataset_stats["dataset_hash"], **self.params(config),
                  "promoted": self.promoted, "current_model": self.current_model,
                  "interpolation_weight": self.promotion.weight if self.promotion else 1.0}
        if self_training is not None:  # its training settings are the run's (`config`)
            params |= {f"self_training.{k}": getattr(self_training, k)
                       for k in ("rounds", "per_topic", "min_relevance", "pairs_per_text")}
        metrics = (self.metrics
                   | {f"dataset.{k}": float(v) for k, v in self.dataset_stats.items() if k != "dataset_hash"}
                   | {f"seconds.{k}": round(v, 2) for k, v in self.stage_seconds.items()})
        if self.training.train_loss is not None:
            metrics["train.loss"] = self.training.train_loss
        return params, metrics

    def write_record(self, params: dict) -> None:
        """`emerge_training.json` beside a published model, so the folder says what it was trained on
        and how it scored without the tracking server; nothing is written for an unpublished one."""
        if self.promoted:
            atomic_write_text(self.model_dir / "emerge_training.json", json.dumps(
                {"params": params, "metrics": self.metrics, "dataset": self.dataset_stats}, indent=2))


def dataset_hash(dataset: pl.DataFrame) -> str:
    """Content hash of the rows that decide training (text, document, label), order-independent."""
    cols = [c for c in ("text_span", "doc_id", *(s.label_col for s in SCHEMES)) if c in dataset.columns]
    row_hashes = dataset.select(cols).hash_rows(seed=0).sort()
    return hashlib.sha256(row_hashes.to_numpy().tobytes()).hexdigest()[:16]


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": round(float(v), 5) for k, v in metrics.items()}


def _train_rows(train_rows: pl.DataFrame, label_col: str, config: TrainingConfig, texts, base_model, device,
                say) -> pl.DataFrame:
    """The recipe's training rows for a cluster dataset: teacher-scored triplets (`distill`), keyword
    queries to rank every training document (`distill`, `trained_side="query"`) or labelled pairs
    (topic datasets self-train instead and never come here)."""
    if config.pairing != "distill":
        return build_pairs(train_rows, label_col, config, texts)
    if texts is None:
        raise InputError("pairing='distill' needs the documents' texts")
    if config.side == "query":  # documents at the base's own window, as its index holds them
        qset = query_side_set(train_rows, texts, load_sentence_transformer(base_model, device),
                              queries_per_document=config.train_queries_per_document, window_chars=config.context_chars,
                              lexical_weight=config.lexical_weight, seed=config.seed,
                              keyword_terms=tuple(config.keyword_terms), max_queries=config.train_query_cap,
                              progress=say, from_sentences=config.query_source == "sentence_keywords")
        if qset.height < config.min_pairs:
            raise InputError(f"only {qset.height} keyword queries; min_pairs={config.min_pairs}. "
                             "Curate more documents or lower min_pairs")
        return qset
    base = load_sentence_transformer(base_model, device, config.max_seq_length)
    teacher = None
    if config.teacher_model is not None:  # reads the student-length texts at its own window
        teacher = load_sentence_transformer(config.teacher_model, device, role="teacher_model")
        teacher.emerge_name = Path(config.teacher_model).name
    generator = None
    if config.query_source == "generated":
        from emerge.training.query_generation import GeneratorConfig, QueryGenerator

        generator = QueryGenerator(GeneratorConfig(config.query_generator, config.query_generator_gguf,
                                                   time_budget_s=config.query_generation_budget_s))
    triplets = distillation_triplets(train_rows, texts, base, queries_per_document=config.train_queries_per_document,
                                     negatives_per_query=config.negatives_per_query,
                                     negative_depth=config.negative_depth, window_chars=config.context_chars,
                                     lexical_weight=config.lexical_weight, seed=config.seed,
                                     max_queries=config.train_query_cap, query_source=config.query_source,
                                     keyword_terms=tuple(config.keyword_terms), teacher_model=teacher,
                                     generator=generator,
                                     consistency_top_k=config.query_consistency_top_k, progress=say)
    if triplets.height < config.min_pairs:
        raise InputError(f"only {triplets.height} distillation queries; min_pairs={config.min_pairs}. "
                         "Curate more documents or lower min_pairs")
    return triplets


def fine_tune_and_evaluate(dataset: pl.DataFrame, label_col: str, base_model: str | Path, output_dir: str | Path,
                           config: TrainingConfig, device: str = "cpu", beir: BeirCollection | None = None,
                           texts: dict[str, str] | None = None, on_log: Callable[[dict], None] | None = None,
                           progress: Callable[[str], None] | None = None,
                           base_beir_metrics: dict[str, float] | None = None, topics=None,
                           self_training: SelfTrainingConfig | None = None,
                           inspect_candidate: Callable[[object, object], None] | None = None,
                           gate_queries: BeirCollection | None = None) -> FineTuneReport:
    """Train a candidate, choose its interpolation with the base, gate it, evaluate base vs published.

    The candidate is trained into `<output_dir>.candidate`; only a model that beats its base on
    held-out self-retrieval (`emerge.training.promotion`, no labels) replaces `output_dir`, so a worse model
    never becomes current. `texts` (doc_id -> document text) is needed by the `distill` and
    `span_context` pairings and the gate. Metrics are named `<task>.<model>.<metric>` (task
    `heldout`, `self_retrieval` or `beir`; model `base` or `fine_tuned`) plus
    `<task>.delta.<metric>` = fine-tuned minus base. Evaluation runs at `eval_max_seq_length`
    (default: the model's own window) whatever length training used. `base_beir_metrics` reuses a
    base evaluation of the same collection (it does not depend on the seed).

    Topic datasets (`label_col="topic_id"`) train by self-training (`emerge.topics.self_training`) on the
    training documents' spans with `topics` (name, description, examples; without them, the
    names and descriptions found in the dataset) and the `self_training` config.

    `gate_queries`, when given, replaces self-retrieval in the gate: nDCG@10 on the user's own judged
    queries (keep them apart from `beir`, or the reported numbers are the ones the weight was chosen
    on). Self-retrieval catches forgetting and collapse, not every loss on real queries.

    `inspect_candidate(base, trained)`, when given, sees both models (at the evaluation window)
    before the trained weights are discarded: benchmarks use it for diagnostics that must not
    feed back into the run (e.g. how other interpolation weights would have scored).
    """
    say = progress or log.info
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    train_rows, eval_rows = split_by_document(dataset, config.eval_fraction, config.seed)
    topic_mode = scheme_of(label_col).self_trains
    rows = None if topic_mode else _train_rows(train_rows, label_col, config, texts, base_model, device, say)
    task = _label_task(eval_rows, label_col, config.seed, say)
    label_free_gate = (label_free_criterion(config.gate_criterion, eval_rows, train_rows, texts,
                                            config.context_chars, config.seed, config.keyword_terms, say)
                       if texts is not None and gate_queries is None else None)
    seconds["pairs"] = time.perf_counter() - t
    stats = {"dataset_rows": dataset.height, "dataset_hash": dataset_hash(dataset),
             "train_documents": train_rows["doc_id"].n_unique(), "eval_documents": eval_rows["doc_id"].n_unique(),
             "train_spans": train_rows.height, "eval_spans": eval_rows.height,
             "labels": int(dataset[label_col].n_unique()),
             "heldout_queries": len(task.query_texts) if task else 0,
             "gate_queries": label_free_gate.queries if label_free_gate else 0}
    say(f"fine-tuning ({'self-training on topics' if topic_mode else config.pairing}) from "
        f"{stats['train_documents']} documents; {stats['eval_documents']} held-out documents")

    t = time.perf_counter()
    if topic_mode:
        trained_topics = topics or topics_from_dataset(dataset)
        trained = self_train(trained_topics, train_rows["text_span"].to_list(), base_model,
                             candidate_dir(output_dir), _self_training_config(config, self_training),
                             docs=train_rows["doc_id"].cast(pl.String).to_list(), device=device, progress=say,
                             on_log=on_log)
        result = trained.training
        stats |= {"train_pairs": trained.rounds[-1].train_pairs, "train_groups": trained.rounds[-1].topics_covered,
                  "self_training_rounds": len(trained.rounds),
                  "pseudo_labelled_spans": trained.rounds[-1].pseudo_labelled}
    elif isinstance(rows, QuerySideSet):
        stats |= {"train_pairs": rows.height, "train_groups": len(set(rows.query_docs.tolist()))}
        result = train_query_side(rows, base_model, candidate_dir(output_dir), config, device=device, on_log=on_log)
    else:
        frame = rows.rows if isinstance(rows, DistillationSet) else rows  # a DistillationSet carries its teacher
        stats |= {"train_pairs": frame.height, "train_groups": frame["group"].n_unique()}
        result = train(rows, base_model, candidate_dir(output_dir), config, device=device, on_log=on_log)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    base = load_sentence_transformer(base_model, device, config.max_seq_length)
    tuned = load_sentence_transformer(result.model_dir, device, config.max_seq_length)
    criterion = (judged_queries_criterion(gate_queries, config.eval_max_seq_length) if gate_queries is not None
                 else label_free_gate)
    if criterion is not None:
        chosen, decision = choose_and_gate(base, tuned, criterion, tuple(config.interpolation_weights),
                                           config.promotion_min_gain, progress=say, gate=config.gate)
    else:  # no document texts: nothing label-free to gate on, so the trained weights are published
        chosen, decision = tuned, None
    if decision is None or decision.promoted:
        chosen.max_seq_length = chosen.emerge_window  # publish with the model's own window, not training's
        atomic_write_dir(Path(output_dir), lambda tmp: chosen.save(str(tmp)))
        if topic_mode:  # the published model (perhaps an interpolation) gets its own "none" threshold
            stats["relevance_threshold"] = write_matched_threshold(
                output_dir, default_scorer(trained_topics, device)(output_dir), trained.threshold_texts,
                trained.none_share, trained.base_relevance_threshold)
    shutil.rmtree(result.model_dir, ignore_errors=True)
    seconds["gate"] = time.perf_counter() - t
    if decision is not None:
        say(decision.reason)

    t = time.perf_counter()
    metrics, scores = _evaluate_base_and_published(base, chosen, config, task, decision, beir, base_beir_metrics, say)
    seconds["evaluate"] = time.perf_counter() - t
    if inspect_candidate is not None:
        tuned.max_seq_length = _eval_length(tuned, config)
        inspect_candidate(base, tuned)
    stats["hard_negative_pairs"] = result.train_pairs if config.hard_negatives else 0
    stats["gradient_cached_steps"] = result.gradient_cached_steps  # steps above max_tokens_per_forward
    sanity = sanity_table(task, scores) if task is not None else pl.DataFrame()
    return FineTuneReport(Path(output_dir), metrics, stats, result, sanity, seconds, decision,
                          "both" if topic_mode else config.side)


def _evaluate_base_and_published(base, chosen, config: TrainingConfig, task, decision: PromotionDecision | None,
                                 beir: BeirCollection | None, base_beir_metrics: dict[str, float] | None,
                                 say) -> tuple[dict[str, float], dict]:
    """Both models on the same held-out label retrieval, self-retrieval (the gate's scores) and
    BEIR collection, at the evaluation window; `<task>.delta.<metric>` = fine-tuned minus base.
    Returns (metrics, per-model held-out scores for the sanity table)."""
    metrics: dict[str, float] = {}
    scores = {}
    for name, model in (("base", base), ("fine_tuned", chosen)):
        model.max_seq_length = _eval_length(model, config)
        if task is not None:
            heldout, scores[name] = evaluate_label_retrieval(model, task)
            metrics |= _prefixed(f"heldout.{name}", heldout)
        if decision is not None:  # every measure the gate took, under the same names whichever criterion it was
            measured = decision.base_measures if name == "base" else decision.measures_by_weight[decision.weight]
            metrics |= {f"{measure}.{name}.{decision.metric}": round(v, 5) for measure, v in measured.items()}
        if beir is not None:
            if name == "base" and base_beir_metrics is not None:
                metrics |= _prefixed("beir.base", base_beir_metrics)
            else:
                say(f"evaluating the {name} model on {len(beir.corpus_ids)} documents, {len(beir.query_ids)} queries")
                metrics |= _prefixed(f"beir.{name}", evaluate_beir(model, beir, progress=True))
    for name in list(metrics):
        if ".fine_tuned." in name:
            task_name, metric = name.split(".fine_tuned.")
            metrics[f"{task_name}.delta.{metric}"] = round(metrics[name] - metrics[f"{task_name}.base.{metric}"], 5)
    return metrics, scores


def topics_from_dataset(dataset: pl.DataFrame):
    """The topics named in a topic dataset (id, name, description; no examples)."""
    from emerge.topics.topic import Topic

    rows = (dataset.filter(pl.col("topic_id").is_not_null())
            .unique("topic_id", keep="first", maintain_order=True).sort("topic_id"))
    return [Topic(id=r["topic_id"], name=r["topic_name"] or str(r["topic_id"]),
                  description=r.get("topic_description") or "") for r in rows.iter_rows(named=True)]


def _self_training_config(config: TrainingConfig, self_training: SelfTrainingConfig | None) -> SelfTrainingConfig:
    """The topic recipe's selection settings, trained with the run's epochs, batch, length and seed
    (and its learning rate when one is set; else self-training's own)."""
    base = self_training or SelfTrainingConfig()
    return base.with_training(epochs=config.epochs or base.training.epochs, batch_size=config.batch_size,
                              max_seq_length=config.max_seq_length,
                              seed=config.seed, learning_rate=config.learning_rate or base.training.learning_rate)


def candidate_dir(output_dir: str | Path) -> Path:
    output_dir = Path(output_dir)
    return output_dir.with_name(f"{output_dir.name}.candidate")


def _eval_length(model, config: TrainingConfig) -> int:
    """The evaluation window: `eval_max_seq_length`, else the model's own (256 for MiniLM)."""
    return config.eval_max_seq_length or model.emerge_window


def _label_task(eval_rows: pl.DataFrame, label_col: str, seed: int, say):
    """Held-out label retrieval, a secondary measure: skipped (and said) where the held-out part
    cannot form it, since the gate does not depend on it."""
    try:
        return label_retrieval_task(eval_rows, label_col, seed=seed)
    except InputError as exc:
        say(f"held-out {label_col} retrieval skipped: {exc}")
        return None
