"""The curated dataset: Pareto selection over all sources, exported as Parquet + CSV + card."""

import dagster as dg
import polars as pl

from emerge_assets.assets.clustering import ALL_SOURCES, concat_sources
from emerge_assets.metadata import counts_table, markdown_table
from emerge_assets.run_config import CuratedDatasetConfig
from emerge_resources import EmbeddingModelResource, EmergeStorage


def document_accounting(raw_texts: dict[str, pl.DataFrame], spans: pl.DataFrame,
                        dataset: pl.DataFrame) -> pl.DataFrame:
    """Each input's fate: in_dataset, no_span_selected, shorter_than_min_len or an ingest skip reason."""
    inv = pl.concat([f.select("source", "doc_id", "path", "record", "status", "reason") for f in raw_texts.values()])
    with_spans = spans["doc_id"].unique().implode()
    in_dataset = dataset["doc_id"].unique().implode()
    return inv.with_columns(
        pl.when(pl.col("status") == "skipped").then(pl.col("reason"))
        .when(pl.col("doc_id").is_in(in_dataset)).then(pl.lit("in_dataset"))
        .when(pl.col("doc_id").is_in(with_spans)).then(pl.lit("no_span_selected"))
        .otherwise(pl.lit("shorter_than_min_len")).alias("outcome"))


@dg.asset(group_name="dataset", kinds={"parquet", "csv"}, ins={"raw_texts": ALL_SOURCES, "spans": ALL_SOURCES,
                                                               "span_embeddings": ALL_SOURCES,
                                                               "span_clusters": ALL_SOURCES},
          description="Pareto-selected, non-overlapping, de-duplicated spans with cluster labels, relevance "
                      "and quality; written as Parquet, CSV and a Markdown dataset card.")
def curated_dataset(context: dg.AssetExecutionContext, config: CuratedDatasetConfig, raw_texts: dict,
                    spans: dict, span_embeddings: dict, span_clusters: dict,
                    storage: EmergeStorage, embedding_model: EmbeddingModelResource) -> dg.Output:
    from emerge.dataset import CLUSTER_COLUMNS, curate, dataset_card, label_balance, write_dataset
    from emerge.ingest import kept_documents

    selection = config.to_engine()
    from emerge.config import SpanConfig

    sources, all_spans, vectors = concat_sources(spans, span_embeddings)
    # The length objective spans the lengths actually produced by the spans asset.
    span_cfg = SpanConfig(min_len=int(all_spans["n_tokens"].min()), max_len=int(all_spans["n_tokens"].max()))
    missing = [s for s in sources if s not in span_clusters]
    if missing:
        raise dg.Failure(f"sources {missing} have spans but no span_clusters; materialize span_clusters for them")
    labels = pl.concat([span_clusters[s].select(pl.lit(s).alias("source"), "span_idx", "cluster_id", "cluster_title",
                                                "membership", "centroid_sim", "relevance") for s in sources])
    labelled = all_spans.join(labels, on=["source", "span_idx"], how="left", maintain_order="left")
    if labelled["cluster_id"].null_count():
        raise dg.Failure(f"{labelled['cluster_id'].null_count()} spans have no cluster label: "
                         "re-materialize span_clusters after spans changed")
    docs = pl.concat([kept_documents(raw_texts[s]) for s in sources])
    texts = dict(zip(docs["doc_id"].to_list(), docs["text"].to_list()))
    dataset = curate(labelled, vectors, texts, selection, span_cfg, columns=CLUSTER_COLUMNS)
    accounting = document_accounting({s: raw_texts[s] for s in raw_texts}, all_spans, dataset)
    outcomes = dict(accounting.group_by("outcome").len().sort("outcome").iter_rows())
    counts = {"sources": len(sources), "inputs": accounting.height, "documents_in_dataset":
              outcomes.get("in_dataset", 0), "spans_considered": labelled.height,
              "clusters": int(dataset["cluster_id"].n_unique()) if dataset.height else 0}
    card = dataset_card(dataset, title=f"Emerge dataset: {config.dataset_name}", model=embedding_model.get_encoder().name,
                        config={"selection": selection.__dict__, "spans": span_cfg.__dict__}, counts=counts | {
                            f"inputs_{k}": v for k, v in outcomes.items()})
    paths = write_dataset(dataset, storage.datasets_dir / config.dataset_name, card)
    per_cluster = dataset.group_by("cluster_id", "cluster_title").agg(
        pl.len().alias("spans"), pl.col("relevance").mean().alias("mean_relevance"),
        pl.col("quality").mean().alias("mean_quality")).sort("cluster_id")
    context.log.info(f"curated dataset: {dataset.height} spans from {counts['documents_in_dataset']} documents "
                     f"-> {paths['parquet']}")
    return dg.Output(dataset, metadata={
        "dagster/row_count": dataset.height,
        **{k: v for k, v in counts.items()},
        "document_outcomes": counts_table(outcomes),
        "spans_per_cluster": markdown_table(per_cluster),
        "label_balance": round(label_balance(dataset, "cluster_id"), 4),
        "noise_fraction_all_spans": round(float((labelled["cluster_id"] < 0).mean()), 4),
        "parquet_path": dg.MetadataValue.path(str(paths["parquet"])),
        "csv_path": dg.MetadataValue.path(str(paths["csv"])),
        "card_path": dg.MetadataValue.path(str(paths["card"])),
        "preview": markdown_table(dataset.select("cluster_title", "relevance", "quality", "text_span").head(10)),
    })
