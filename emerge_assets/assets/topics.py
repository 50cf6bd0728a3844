"""Topic-guided path: score every span of a source against the user's topics."""

import dagster as dg
import polars as pl

from emerge_assets.assets.clustering import LABEL_MIN_QUALITY, label_candidates
from emerge_assets.automation import FOLLOW_INPUTS
from emerge_assets.metadata import topic_scores_metadata, unlabelled_share
from emerge_assets.partitions import SINGLE_RUN, SOURCE_IN, document_source, for_each_source
from emerge_assets.pools import GPU_POOL
from emerge_assets.run_config import TopicScoresConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage, TopicsResource


@dg.asset(partitions_def=document_source, group_name="topics", kinds={"pytorch", "polars"}, pool=GPU_POOL,
          backfill_policy=SINGLE_RUN, automation_condition=FOLLOW_INPUTS,
          ins={"raw_texts": SOURCE_IN, "spans": SOURCE_IN, "span_embeddings": SOURCE_IN},
          description="The spans of one source that can reach the curated topic dataset (quality at least "
                      "label_min_quality) scored against the topics file by late interaction (MaxSim, "
                      "calibrated to [0, 1]); late_chunking mode reuses the token embeddings of "
                      "span_embeddings, so no second transformer pass.")
def topic_scores(context: dg.AssetExecutionContext, config: TopicScoresConfig, raw_texts: pl.DataFrame | dict,
                 spans: pl.DataFrame | dict, span_embeddings: pl.DataFrame | dict, topics: TopicsResource,
                 embedding_model: EmbeddingModelResource, storage: EmergeStorage) -> dg.Output:
    from emerge.topics.late_interaction import LateInteractionCrossEncoder
    from emerge.topics.self_training import model_relevance_threshold

    options = config.scorer_options(model_relevance_threshold(embedding_model.model_path(), None))
    context.log.info(f"topic scores: relevance threshold {options['relevance_threshold']:.3f}")
    analyzer = LateInteractionCrossEncoder(config=config.to_engine(), topics=topics.load(), **options)
    return for_each_source(context, lambda source, raw_texts, spans, span_embeddings: score_source(
        context, config, analyzer, topics, embedding_model, storage, source, raw_texts, spans, span_embeddings),
        raw_texts=raw_texts, spans=spans, span_embeddings=span_embeddings)


def score_source(context, config: TopicScoresConfig, analyzer, topics: TopicsResource,
                 embedding_model: EmbeddingModelResource, storage: EmergeStorage, source: str,
                 raw_texts: pl.DataFrame, spans: pl.DataFrame, span_embeddings: pl.DataFrame) -> dg.Output:
    from emerge.embedding import TokenStore

    store = None
    if config.prediction_mode == "late_chunking":
        path = storage.token_store_path(source)
        if not path.exists():
            raise dg.Failure(f"no token embeddings at {path}; re-materialize span_embeddings for this source")
        store = TokenStore.load(path)
    candidates, vectors, counts = label_candidates(source, spans, span_embeddings, raw_texts,
                                                   config.label_min_quality)
    labelled = analyzer.analyze(candidates, vectors, token_store=store, encoder=embedding_model.get_encoder(),
                                progress=True)
    out = labelled.select("span_idx", "doc_id", "topic_id", "topic_name", "topic_description", "best_topic_id",
                          "relevance")
    context.log.info(f"{out.height} of {spans.height} spans (quality >= {counts[LABEL_MIN_QUALITY]}) scored "
                     f"against {len(analyzer.topics)} topics; unlabelled {unlabelled_share(out):.1%}")
    return dg.Output(out, metadata=topic_scores_metadata(labelled, out, analyzer) | counts | {
        "prediction_mode": config.prediction_mode, "topics_file": dg.MetadataValue.path(topics.topics_file)})
