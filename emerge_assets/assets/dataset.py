"""The curated datasets: Pareto selection over all sources, exported as Parquet + CSV + card.

`curated_dataset` uses discovered clusters, `curated_topic_dataset` the user's topics; both
run the same engine selection, only the label columns differ.
"""

import dagster as dg
import polars as pl

from emerge.label_scheme import CLUSTERS, TOPICS
from emerge_assets.assets.clustering import ALL_SOURCES, concat_sources
from emerge_assets.assets.documents import recorded_span_config
from emerge_assets.automation import FOLLOW_INPUTS
from emerge_assets.metadata import dataset_metadata
from emerge_assets.run_config import CuratedDatasetConfig, CuratedTopicDatasetConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage

LABEL_INPUTS = {"raw_texts": ALL_SOURCES, "spans": ALL_SOURCES, "span_embeddings": ALL_SOURCES}


def build_dataset(context, config: CuratedDatasetConfig, raw_texts: dict, spans: dict, span_embeddings: dict,
                  labels: dict, scheme, storage: EmergeStorage, model_name: str) -> dg.Output:
    """Hand every source's spans, vectors and labels to the engine; report what it made."""
    from emerge.dataset import build_curated_dataset
    from emerge.errors import InputError
    from emerge.ingest import document_texts

    sources, all_spans, vectors = concat_sources(spans, span_embeddings)
    if missing := [s for s in sources if s not in labels]:
        raise dg.Failure(f"sources {missing} have spans but no {scheme.labels_asset}; "
                         f"materialize {scheme.labels_asset} for them")
    try:
        made = build_curated_dataset(
            name=config.dataset_name, out_dir=storage.datasets_dir, scheme=scheme, spans=all_spans,
            vectors=vectors, labels=pl.concat([labels[s].with_columns(source=pl.lit(s)) for s in sources]),
            inventories=list(raw_texts.values()), texts=document_texts(*(raw_texts[s] for s in sources)),
            selection=config.to_engine(), span_config=span_config_of(context, sources, all_spans),
            model_name=model_name)
    except InputError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"{config.dataset_name}: {made.frame.height} spans from "
                     f"{made.counts['documents_in_dataset']} documents -> {made.paths['parquet']}")
    return dg.Output(made.frame, metadata=dataset_metadata(made, scheme))


def span_config_of(context, sources: list[str], all_spans: pl.DataFrame):
    """The span config the sources were cut with (recorded by `spans`), for the length fit."""
    from emerge.config import SpanConfig

    span_cfg = recorded_span_config(context.instance, sources)
    if span_cfg is None:  # spans of an older materialization, or sources cut with different settings
        span_cfg = SpanConfig(min_len=int(all_spans["n_tokens"].min()), max_len=int(all_spans["n_tokens"].max()))
        context.log.warning(f"the sources' spans do not record one span config; length fit uses the observed "
                            f"{span_cfg.min_len}..{span_cfg.max_len} tokens")
    return span_cfg


@dg.asset(group_name="dataset", kinds={"parquet", "csv"}, ins={**LABEL_INPUTS, "span_clusters": ALL_SOURCES},
          automation_condition=FOLLOW_INPUTS,
          description="Pareto-selected, non-overlapping, de-duplicated spans with cluster labels, relevance "
                      "and quality; written as Parquet, CSV and a Markdown dataset card.")
def curated_dataset(context: dg.AssetExecutionContext, config: CuratedDatasetConfig, raw_texts: dict,
                    spans: dict, span_embeddings: dict, span_clusters: dict,
                    storage: EmergeStorage, embedding_model: EmbeddingModelResource) -> dg.Output:
    return build_dataset(context, config, raw_texts, spans, span_embeddings, span_clusters, CLUSTERS, storage,
                         embedding_model.display_name)


@dg.asset(group_name="dataset", kinds={"parquet", "csv"}, ins={**LABEL_INPUTS, "topic_scores": ALL_SOURCES},
          automation_condition=FOLLOW_INPUTS,
          description="The curated dataset in topic mode: spans labelled with the user's topics (topic_id, "
                      "topic_name, topic_description), same Pareto selection; spans that fit no topic are out.")
def curated_topic_dataset(context: dg.AssetExecutionContext, config: CuratedTopicDatasetConfig, raw_texts: dict,
                          spans: dict, span_embeddings: dict, topic_scores: dict,
                          storage: EmergeStorage, embedding_model: EmbeddingModelResource) -> dg.Output:
    return build_dataset(context, config, raw_texts, spans, span_embeddings, topic_scores, TOPICS, storage,
                         embedding_model.display_name)
