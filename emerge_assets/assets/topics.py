"""Topic-guided path: score every span of a source against the user's topics."""

import dagster as dg
import numpy as np
import polars as pl

from emerge_assets.automation import FOLLOW_INPUTS
from emerge_assets.metadata import markdown_table
from emerge_assets.partitioned import SINGLE_RUN, SOURCE_IN, for_each_source
from emerge_assets.partitions import document_source
from emerge_assets.pools import GPU_POOL
from emerge_assets.run_config import TopicScoresConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage, TopicsResource


def score_histograms(frame: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """Relevance histogram of each topic's best-scoring spans, one row per topic."""
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for topic, group in frame.group_by("best_topic_id", maintain_order=True):
        counts, _ = np.histogram(group["relevance"].to_numpy(), bins=edges)
        bar = " ".join(str(int(c)) for c in counts)
        rows.append({"topic": topic[0], "spans": group.height, "counts per 0.1 of relevance (0 -> 1)": bar})
    return pl.DataFrame(rows).sort("topic") if rows else pl.DataFrame()


@dg.asset(partitions_def=document_source, group_name="topics", kinds={"pytorch", "polars"}, pool=GPU_POOL,
          backfill_policy=SINGLE_RUN, automation_condition=FOLLOW_INPUTS,
          ins={"spans": SOURCE_IN, "span_embeddings": SOURCE_IN},
          description="Every span of one source scored against the topics file by late interaction "
                      "(MaxSim, calibrated to [0, 1]); late_chunking mode reuses the token embeddings of "
                      "span_embeddings, so no second transformer pass.")
def topic_scores(context: dg.AssetExecutionContext, config: TopicScoresConfig, spans: pl.DataFrame | dict,
                 span_embeddings: pl.DataFrame | dict, topics: TopicsResource,
                 embedding_model: EmbeddingModelResource, storage: EmergeStorage) -> dg.Output:
    from emerge.late_interaction import LateInteractionCrossEncoder
    from emerge.self_training import model_relevance_threshold

    options = config.scorer_options(model_relevance_threshold(embedding_model.model_path(), None))
    context.log.info(f"topic scores: relevance threshold {options['relevance_threshold']:.3f}")
    analyzer = LateInteractionCrossEncoder(config=config.to_engine(), topics=topics.load(), **options)
    return for_each_source(context, lambda source, spans, span_embeddings: score_source(
        context, config, analyzer, topics, embedding_model, storage, source, spans, span_embeddings),
        spans=spans, span_embeddings=span_embeddings)


def score_source(context, config: TopicScoresConfig, analyzer, topics: TopicsResource,
                 embedding_model: EmbeddingModelResource, storage: EmergeStorage, source: str,
                 spans: pl.DataFrame, span_embeddings: pl.DataFrame) -> dg.Output:
    from emerge.embedding import TokenStore, vectors_of

    store = None
    if config.prediction_mode == "late_chunking":
        path = storage.token_store_path(source)
        if not path.exists():
            raise dg.Failure(f"no token embeddings at {path}; re-materialize span_embeddings for this source")
        store = TokenStore.load(path)
    if not span_embeddings["span_idx"].equals(spans["span_idx"]):
        raise dg.Failure("span_embeddings are stale relative to spans; re-materialize span_embeddings")
    labelled = analyzer.analyze(spans, vectors_of(span_embeddings), token_store=store,
                                encoder=embedding_model.get_encoder(), progress=True)
    out = labelled.select("span_idx", "doc_id", "topic_id", "topic_name", "topic_description", "best_topic_id",
                          "relevance")
    per_topic = (out.group_by("topic_id", "topic_name").agg(pl.len().alias("spans"),
                                                            pl.col("relevance").mean().alias("mean_relevance"))
                 .sort("spans", descending=True))
    top = (labelled.filter(pl.col("topic_id").is_not_null()).sort("relevance", descending=True)
           .group_by("topic_id", maintain_order=True).head(3).select("topic_id", "relevance", "text_span"))
    unlabelled = float(out["topic_id"].is_null().mean()) if out.height else 0.0
    context.log.info(f"{out.height} spans scored against {len(analyzer.topics)} topics; unlabelled {unlabelled:.1%}")
    return dg.Output(out, metadata={
        "dagster/row_count": out.height,
        "topics": len(analyzer.topics),
        "unlabelled_fraction": round(unlabelled, 4),
        "spans_per_topic": markdown_table(per_topic),
        "relevance_histograms": markdown_table(score_histograms(out)),
        "top_spans_per_topic": markdown_table(top),
        "topic_parts_truncated": analyzer.truncated_parts,
        "calibration": markdown_table(pl.DataFrame({
            "topic_id": [str(t.id) for t in analyzer.topics],
            "raw_score_of_unrelated_text": analyzer.calibration.lo.round(4),
            "raw_score_of_own_examples": analyzer.calibration.hi.round(4)})),
        "prediction_mode": config.prediction_mode,
        "topics_file": dg.MetadataValue.path(topics.topics_file),
    })
