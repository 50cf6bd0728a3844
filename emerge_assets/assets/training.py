"""Fine-tuned models: train on a curated dataset, evaluate base vs fine-tuned, track in MLflow.

`fine_tuned_model` trains on the cluster dataset (distillation by default), `fine_tuned_topic_model`
self-trains on the user's topics and the topic dataset's spans (`emerge.topics.self_training`). Both save a SentenceTransformer directory
under `models/` and log one MLflow run with params, metrics, dataset stats and the model.
"""

import time

import dagster as dg
import polars as pl

from emerge_assets.assets.clustering import LAZY_SOURCES
from emerge_assets.metadata import markdown_table
from emerge_assets.pools import GPU_POOL
from emerge_assets.run_config import FineTuneConfig, FineTuneTopicConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage, MlflowTracking, TopicsResource

def training_log_line(entry: dict) -> str:
    """One trainer log entry for the run log, floats to 4 significant digits (a learning rate of
    2e-05 must not read 0.0)."""
    shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in entry.items()}
    return f"training step {shown.pop('step')}/{shown.pop('max_steps')}: {shown}"


def _comparison(metrics: dict[str, float], task: str, names: tuple[str, ...]) -> dg.MarkdownMetadataValue:
    """Base | fine-tuned | delta per metric of one evaluation task, for the UI."""
    return markdown_table(pl.DataFrame([{"metric": m, **{model: metrics[f"{task}.{model}.{m}"]
                                                          for model in ("base", "fine_tuned", "delta")}}
                                        for m in names]))


def _train_and_track(context: dg.AssetExecutionContext, config: FineTuneConfig, dataset: pl.DataFrame,
                     label_col: str, recipe: str, storage: EmergeStorage, embedding_model: EmbeddingModelResource,
                     mlflow: MlflowTracking, texts: dict[str, str] | None = None,
                     **engine_kwargs) -> dg.MaterializeResult:
    """Both model assets: the engine's fine-tune and evaluation, one MLflow run, the UI's metadata."""
    started_at = time.time()
    beir = _evaluation_set(config)
    gate_queries = _gate_queries(context, config)
    report = _fine_tune(context, config, dataset, label_col, storage, embedding_model, beir, texts,
                        engine_kwargs | {"gate_queries": gate_queries})
    params, metrics = report.tracking(config.to_engine(), engine_kwargs.get("self_training"), recipe=recipe,
                                      base_model=embedding_model.display_name,
                                      device=embedding_model.resolved_device(), beir_dir=config.beir_dir or "")
    report.write_record(params)
    run = mlflow.log_run(run_name=f"{config.model_name}-{context.run_id[:8]}", params=params, metrics=metrics,
                         tags={"dagster.run_id": context.run_id, "dagster.asset": context.asset_key.to_user_string(),
                               "emerge.recipe": recipe},
                         artifacts={"model": report.model_dir} if report.promoted else {}, started_at=started_at)
    if not report.promoted:
        context.log.warning(f"the fine-tuned model is not better than its base; {report.current_model} model stays "
                            f"current ({report.promotion_reason})")
    context.log.info(f"model {'saved to ' + str(report.model_dir) if report.promoted else 'not published'}; "
                     f"MLflow run {run.url}")
    return dg.MaterializeResult(metadata=_model_metadata(report, beir, run, mlflow, embedding_model),
                                check_results=[_gate_result(report)])


def _evaluation_set(config: FineTuneConfig, split: str | None = None, role: str = "evaluation set"):
    """The user's BEIR collection (`beir_dir`, `split` or `beir_split`), or None; a broken one fails
    the run before training."""
    from emerge.errors import InputError
    from emerge.training.retrieval import load_beir

    if not config.beir_dir:
        return None
    try:
        return load_beir(config.beir_dir, split or config.beir_split)
    except InputError as exc:
        raise dg.Failure(f"{role}: {exc}") from exc


def _gate_queries(context, config: FineTuneConfig):
    """The judged queries the gate compares models on (`gate_beir_split` of `beir_dir`), or None
    (the label-free `gate_criterion` on held-out documents)."""
    if config.gate_beir_split is None:
        return None
    if not config.beir_dir:
        raise dg.Failure(f"gate_beir_split={config.gate_beir_split!r} needs beir_dir, the BEIR folder whose "
                         f"qrels/{config.gate_beir_split}.tsv holds the queries to gate on")
    if config.gate_beir_split == config.beir_split:
        context.log.warning(f"the gate and the reported evaluation both use split {config.beir_split!r}: the "
                            "reported fine-tuned numbers are those the interpolation weight was chosen on "
                            "(optimistic); gate on a split of its own (e.g. dev)")
    return _evaluation_set(config, config.gate_beir_split, "gate queries")


def dataset_texts(raw_texts: dict[str, pl.LazyFrame], dataset: pl.DataFrame) -> dict[str, str]:
    """doc_id -> text of the documents the dataset holds, and only those: every training input
    (pseudo-queries, the teacher's corpus, the gate's held-out documents) comes from them, so the
    other documents of every source are never loaded."""
    from emerge.ingest import document_texts

    wanted = dataset["doc_id"].unique().implode()
    return document_texts(*(f.filter(pl.col("doc_id").is_in(wanted)).collect() for f in raw_texts.values()))


def _fine_tune(context: dg.AssetExecutionContext, config: FineTuneConfig, dataset: pl.DataFrame, label_col: str,
               storage: EmergeStorage, embedding_model: EmbeddingModelResource, beir, texts, engine_kwargs):
    from emerge.errors import InputError
    from emerge.training.finetune import fine_tune_and_evaluate

    if dataset.height == 0:
        raise dg.Failure("the curated dataset is empty: nothing to train on (see its document_outcomes metadata)")
    try:  # a missing base model folder fails in the engine with its path
        return fine_tune_and_evaluate(dataset, label_col, embedding_model.model_path(),
                                      storage.models_dir / config.model_name, config.to_engine(),
                                      device=embedding_model.resolved_device(), beir=beir, texts=texts,
                                      on_log=lambda entry: context.log.info(training_log_line(entry)),
                                      progress=context.log.info, **engine_kwargs)
    except InputError as exc:
        raise dg.Failure(str(exc)) from exc


def _model_metadata(report, beir, run, mlflow: MlflowTracking, embedding_model: EmbeddingModelResource) -> dict:
    """What the UI shows for a model materialization: publication, tracking, training and evaluation."""
    current = report.current_model
    meta = {
        "promoted": report.promoted,
        "current_model": current,
        "promotion": report.promotion_reason,
        "model_path": dg.MetadataValue.path(str(report.model_dir if current != "base" else embedding_model.model_path())),
        "mlflow_run": dg.MetadataValue.url(run.url),
        "mlflow_run_id": run.run_id,
        "mlflow_tracking_uri": mlflow.tracking_uri,
        "device": embedding_model.resolved_device(),
        "trained_side": report.trained_side,
        "usage": ("queries: model.encode_query(...); documents: model.encode_document(...), the base model's vectors"
                  if report.trained_side == "query" else "model.encode(...) for queries and documents"),
        "retrieval_sanity": markdown_table(report.sanity, max_rows=40),
        "train_loss": report.training.train_loss or 0.0,
        "train_steps": report.training.steps,
        "seconds": dg.MetadataValue.json({k: round(v, 1) for k, v in report.stage_seconds.items()}),
        **report.dataset_stats,
    }
    if "heldout.base.ndcg@10" in report.metrics:
        meta["heldout_retrieval"] = _comparison(report.metrics, "heldout", ("hits@1", "hits@5", "hits@10", "ndcg@10",
                                                                            "mrr@10"))
        meta["heldout_ndcg@10_delta"] = report.metrics["heldout.delta.ndcg@10"]
    if beir is not None:
        meta["beir_retrieval"] = _comparison(report.metrics, "beir", ("ndcg@10", "mrr@10", "recall@100"))
        meta |= {f"beir_{k}": v for k, v in beir.stats().items()}
    return meta


def _gate_result(report) -> dg.AssetCheckResult:
    gate = report.promotion
    scores = ({f"{m}_weight_{w:g}": s for w, measured in gate.measures_by_weight.items() for m, s in measured.items()}
              | {f"{m}_base": s for m, s in gate.base_measures.items()} | {"criterion": gate.description}
              ) if gate else {}
    return dg.AssetCheckResult(check_name="fine_tuned_beats_base", passed=report.promoted,
                               severity=dg.AssetCheckSeverity.WARN,
                               metadata={"reason": gate.reason if gate else "ungated",
                                         "current_model": report.current_model, **scores})


def _gate_check(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec("fine_tuned_beats_base", asset=asset, description="The candidate beat its base on "
                              "held-out documents (gate_criterion, no labels; or the judged queries of "
                              "gate_beir_split) and was published; a failure means the base or the previous model "
                              "stays current.")]


@dg.asset(group_name="model", kinds={"pytorch", "mlflow"}, pool=GPU_POOL, check_specs=_gate_check("fine_tuned_model"),
          ins={"curated_dataset": dg.AssetIn(), "raw_texts": LAZY_SOURCES},
          description="all-MiniLM-L6-v2 (or the embedding_model resource's model) fine-tuned on the curated "
                      "cluster dataset: each document's opening sentence as a pseudo-query, the student trained to "
                      "rank every text of its batch as a base-model + BM25 teacher does (pairing distill, default), "
                      "interpolated with its base (WiSE-FT) and published only if it beats the base on held-out "
                      "documents; base vs fine-tuned in MLflow.")
def fine_tuned_model(context: dg.AssetExecutionContext, config: FineTuneConfig, curated_dataset: pl.DataFrame,
                     raw_texts: dict[str, pl.LazyFrame], storage: EmergeStorage,
                     embedding_model: EmbeddingModelResource, mlflow: MlflowTracking) -> dg.MaterializeResult:
    return _train_and_track(context, config, curated_dataset, "cluster_id", f"clusters/{config.pairing}",
                            storage, embedding_model, mlflow, dataset_texts(raw_texts, curated_dataset))


@dg.asset(group_name="model", kinds={"pytorch", "mlflow"}, pool=GPU_POOL,
          check_specs=_gate_check("fine_tuned_topic_model"),
          ins={"curated_topic_dataset": dg.AssetIn(), "raw_texts": LAZY_SOURCES},
          description="The base model self-trained on the user's topics: the curated topic dataset's spans are "
                      "scored against the topics, confident ones become MNRL pairs with the topic's text and "
                      "examples and with each other (topic-exclusive batches), for `rounds` rounds; gated, "
                      "evaluated and tracked like fine_tuned_model.")
def fine_tuned_topic_model(context: dg.AssetExecutionContext, config: FineTuneTopicConfig,
                           curated_topic_dataset: pl.DataFrame, raw_texts: dict[str, pl.LazyFrame],
                           storage: EmergeStorage, embedding_model: EmbeddingModelResource, mlflow: MlflowTracking,
                           topics: TopicsResource) -> dg.MaterializeResult:
    return _train_and_track(context, config, curated_topic_dataset, "topic_id", "topics/self_training",
                            storage, embedding_model, mlflow, dataset_texts(raw_texts, curated_topic_dataset),
                            topics=topics.load(), self_training=config.self_training())
