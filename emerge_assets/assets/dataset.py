"""The curated datasets: Pareto selection over all sources, exported as Parquet + CSV + card.

Spans and span vectors are read lazily, one source at a time (`emerge.dataset.SourceSpans`): only
the vectors of spans that survive the per-document selection are loaded.

`curated_dataset` uses discovered clusters, `curated_topic_dataset` the user's topics; both
run the same engine selection, only the label columns differ.
"""

import dagster as dg
import polars as pl

from emerge.label_scheme import CLUSTERS, TOPICS
from emerge_assets.assets.clustering import LABEL_MIN_QUALITY, LAZY_SOURCES, lazy_sources
from emerge_assets.assets.documents import recorded_span_config
from emerge_assets.automation import FOLLOW_INPUTS
from emerge_assets.metadata import dataset_metadata
from emerge_assets.partitions import latest_partition_metadata
from emerge_assets.run_config import CuratedDatasetConfig, CuratedTopicDatasetConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage

# every input a scan: the engine reads one source at a time and only the vectors it keeps, so the
# dataset step's memory stays flat in the number of sources
LABEL_INPUTS = {"raw_texts": LAZY_SOURCES, "spans": LAZY_SOURCES, "span_embeddings": LAZY_SOURCES}


def build_dataset(context, config: CuratedDatasetConfig, raw_texts: dict, spans: dict, span_embeddings: dict,
                  labels: dict, scheme, storage: EmergeStorage, model_name: str) -> dg.Output:
    """Hand every source's spans, vectors and labels to the engine; report what it made."""
    from emerge.dataset import SourceSpans, build_curated_dataset
    from emerge.errors import InputError

    sources = lazy_sources(spans, span_embeddings)
    if missing := [s for s in sources if s not in labels]:
        raise dg.Failure(f"sources {missing} have spans but no {scheme.labels_asset}; "
                         f"materialize {scheme.labels_asset} for them")
    if missing := [s for s in sources if s not in raw_texts]:
        raise dg.Failure(f"sources {missing} have spans but no raw_texts; materialize raw_texts for them")
    try:
        made = build_curated_dataset(
            name=config.dataset_name, out_dir=storage.datasets_dir, scheme=scheme, selection=config.to_engine(),
            sources=[SourceSpans(s, spans[s], span_embeddings[s], labels[s], raw_texts[s]) for s in sources],
            inventories=list(raw_texts.values()),
            span_config=span_config_of(context, sources, [spans[s] for s in sources]), model_name=model_name)
    except InputError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"{config.dataset_name}: {made.frame.height} spans from "
                     f"{made.counts['documents_in_dataset']} documents -> {made.paths['parquet']}")
    return dg.Output(made.frame, metadata=dataset_metadata(made, scheme))


def require_labelled_down_to(context, quality_threshold: float, sources: list[str], labels_asset: str) -> None:
    """Fail when `labels_asset` (span_clusters, topic_scores) left spans of some source unlabelled
    that this threshold would select (it labels only spans of at least its `label_min_quality`,
    recorded per partition)."""
    short = {}
    for source in sources:
        metadata = latest_partition_metadata(context.instance, labels_asset, source)
        floor = float(metadata[LABEL_MIN_QUALITY].value) if LABEL_MIN_QUALITY in metadata else 0.0
        if quality_threshold < floor:
            short[source] = floor
    if short:
        raise dg.Failure(
            f"quality_threshold {quality_threshold} is below the quality {labels_asset} labelled down to for "
            f"{len(short)} source(s) ({', '.join(f'{s}: {f}' for s, f in sorted(short.items()))}); spans in between "
            f"have no label. Re-materialize {labels_asset} with label_min_quality <= {quality_threshold} "
            "(or null), or raise quality_threshold.")


def span_config_of(context, sources: list[str], source_spans: list[pl.LazyFrame]):
    """The span config the sources were cut with (recorded by `spans`), for the length fit."""
    from emerge.config import SpanConfig

    span_cfg = recorded_span_config(context.instance, sources)
    if span_cfg is None:  # spans of an older materialization, or sources cut with different settings
        bounds = pl.concat([f.lazy().select(lo=pl.col("n_tokens").min(), hi=pl.col("n_tokens").max())
                            for f in source_spans]).collect()
        span_cfg = SpanConfig(min_len=int(bounds["lo"].min()), max_len=int(bounds["hi"].max()))
        context.log.warning(f"the sources' spans do not record one span config; length fit uses the observed "
                            f"{span_cfg.min_len}..{span_cfg.max_len} tokens")
    return span_cfg


@dg.asset(group_name="dataset", kinds={"parquet", "csv"}, ins={**LABEL_INPUTS, "span_clusters": LAZY_SOURCES},
          automation_condition=FOLLOW_INPUTS,
          description="Pareto-selected, non-overlapping, de-duplicated spans with cluster labels, relevance "
                      "and quality; written as Parquet, CSV and a Markdown dataset card.")
def curated_dataset(context: dg.AssetExecutionContext, config: CuratedDatasetConfig, raw_texts: dict,
                    spans: dict[str, pl.LazyFrame], span_embeddings: dict[str, pl.LazyFrame], span_clusters: dict,
                    storage: EmergeStorage, embedding_model: EmbeddingModelResource) -> dg.Output:
    require_labelled_down_to(context, config.quality_threshold, sorted(span_clusters), "span_clusters")
    return build_dataset(context, config, raw_texts, spans, span_embeddings, span_clusters, CLUSTERS, storage,
                         embedding_model.display_name)


@dg.asset(group_name="dataset", kinds={"parquet", "csv"}, ins={**LABEL_INPUTS, "topic_scores": LAZY_SOURCES},
          automation_condition=FOLLOW_INPUTS,
          description="The curated dataset in topic mode: spans labelled with the user's topics (topic_id, "
                      "topic_name, topic_description), same Pareto selection; spans that fit no topic are out.")
def curated_topic_dataset(context: dg.AssetExecutionContext, config: CuratedTopicDatasetConfig, raw_texts: dict,
                          spans: dict[str, pl.LazyFrame], span_embeddings: dict[str, pl.LazyFrame],
                          topic_scores: dict,
                          storage: EmergeStorage, embedding_model: EmbeddingModelResource) -> dg.Output:
    require_labelled_down_to(context, config.quality_threshold, sorted(topic_scores), "topic_scores")
    return build_dataset(context, config, raw_texts, spans, span_embeddings, topic_scores, TOPICS, storage,
                         embedding_model.display_name)
