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
from emerge_assets.metadata import counts_table, markdown_table
from emerge_assets.run_config import CuratedDatasetConfig, CuratedTopicDatasetConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage

LABEL_INPUTS = {"raw_texts": ALL_SOURCES, "spans": ALL_SOURCES, "span_embeddings": ALL_SOURCES}


def build_dataset(context, config: CuratedDatasetConfig, raw_texts: dict, spans: dict, span_embeddings: dict,
                  labels: dict, scheme, storage: EmergeStorage, model_name: str) -> dg.Output:
    """Join per-source labels onto spans, select, export, and describe every input's outcome."""
    from emerge.config import SpanConfig
    from emerge.dataset import curate, dataset_card, document_accounting, join_labels, label_balance, write_dataset
    from emerge.ingest import document_texts

    selection = config.to_engine()
    label_col, title_col, labels_asset = scheme.label_col, scheme.title_col, scheme.labels_asset
    sources, all_spans, vectors = concat_sources(spans, span_embeddings)
    missing = [s for s in sources if s not in labels]
    if missing:
        raise dg.Failure(f"sources {missing} have spans but no {labels_asset}; materialize {labels_asset} for them")
    label_frame = pl.concat([labels[s].select(pl.lit(s).alias("source"), "span_idx", *scheme.label_columns)
                             for s in sources])
    labelled, positions = join_labels(all_spans, label_frame)
    if labelled.height == 0 and all_spans.height:
        raise dg.Failure(f"no span has a {labels_asset} row; re-materialize {labels_asset} after spans changed")
    span_cfg = recorded_span_config(context.instance, sources)
    if span_cfg is None:  # spans of an older materialization, or sources cut with different settings
        span_cfg = SpanConfig(min_len=int(all_spans["n_tokens"].min()), max_len=int(all_spans["n_tokens"].max()))
        context.log.warning(f"the sources' spans do not record one span config; length fit uses the observed "
                            f"{span_cfg.min_len}..{span_cfg.max_len} tokens")
    texts = document_texts(*(raw_texts[s] for s in sources))
    dataset = curate(labelled, vectors[positions], texts, selection, span_cfg, label_col=label_col,
                     columns=scheme.dataset_columns)
    accounting = document_accounting(list(raw_texts.values()), all_spans, dataset)
    outcomes = dict(accounting.group_by("outcome").len().sort("outcome").iter_rows())
    counts = {"sources": len(sources), "inputs": accounting.height,
              "documents_in_dataset": outcomes.get("in_dataset", 0), "spans_considered": labelled.height,
              "labels": int(dataset[label_col].n_unique()) if dataset.height else 0}
    card = dataset_card(dataset, title=f"Emerge dataset: {config.dataset_name}", model=model_name,
                        config={"selection": selection.__dict__, "spans": span_cfg.__dict__},
                        counts=counts | {f"inputs_{k}": v for k, v in outcomes.items()},
                        label_col=label_col, title_col=title_col)
    paths = write_dataset(dataset, storage.datasets_dir / config.dataset_name, card)
    per_label = dataset.group_by(label_col, title_col).agg(
        pl.len().alias("spans"), pl.col("relevance").mean().alias("mean_relevance"),
        pl.col("quality").mean().alias("mean_quality")).sort(label_col)
    unlabelled = scheme.unlabelled_count(labelled)
    context.log.info(f"{config.dataset_name}: {dataset.height} spans from {counts['documents_in_dataset']} "
                     f"documents -> {paths['parquet']}")
    return dg.Output(dataset, metadata={
        "dagster/row_count": dataset.height,
        **counts,
        "document_outcomes": counts_table(outcomes),
        "spans_per_label": markdown_table(per_label),
        "label_balance": round(label_balance(dataset, label_col), 4),
        "unlabelled_fraction_all_spans": round(unlabelled / labelled.height, 4) if labelled.height else 0.0,
        "parquet_path": dg.MetadataValue.path(str(paths["parquet"])),
        "csv_path": dg.MetadataValue.path(str(paths["csv"])),
        "card_path": dg.MetadataValue.path(str(paths["card"])),
        "preview": markdown_table(dataset.select(title_col, "relevance", "quality", "text_span").head(10)),
    })


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
