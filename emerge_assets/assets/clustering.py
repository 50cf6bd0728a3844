"""Global stages: UMAP projection and HDBSCAN clusters, fitted across all sources on a bounded sample."""

import dagster as dg
import numpy as np
import polars as pl

from emerge_assets.automation import FOLLOW_INPUTS, REFIT
from emerge_assets.metadata import cluster_map, markdown_table
from emerge_assets.partitions import SINGLE_RUN, SOURCE_IN, document_source, for_each_source
from emerge_assets.run_config import HdbscanClustersConfig, SpanClustersConfig, UmapConfig
from emerge_resources import EmergeStorage, TitleNamerResource

# {source: pl.LazyFrame} of every materialized source, one source included (emerge_resources.io_manager):
# scans of each source's file, nothing is read until asked
LAZY_SOURCES = dg.AssetIn(metadata={"allow_missing_partitions": True, "partitions_as_dict": True, "lazy": True})
# span_clusters' metadata key: the quality below which a source's spans were left unlabelled
LABEL_MIN_QUALITY = "label_min_quality"


def lazy_sources(spans: dict[str, pl.LazyFrame], span_embeddings: dict[str, pl.LazyFrame]) -> list[str]:
    """The sources that have both spans and span vectors, sorted (or a Failure saying what to run)."""
    sources = sorted(set(spans) & set(span_embeddings))
    if not sources:
        raise dg.Failure("no document source has both spans and span_embeddings materialized; "
                         "materialize the per-source assets first")
    return sources


def source_vectors(source: str, spans: pl.DataFrame, span_embeddings: pl.DataFrame, keep: np.ndarray) -> np.ndarray:
    """The vectors of the `keep` rows of one source's spans (or a Failure saying what to re-run
    when vectors and spans are not row-aligned); no full-source array is built."""
    from emerge.embedding import require_aligned, vectors_of
    from emerge.errors import InputError

    try:
        require_aligned(source, spans, span_embeddings)
    except InputError as exc:
        raise dg.Failure(str(exc)) from exc
    return vectors_of(span_embeddings.filter(pl.Series(keep)))


def label_candidates(source: str, spans: pl.DataFrame, span_embeddings: pl.DataFrame, raw_texts: pl.DataFrame,
                     min_quality: float | None) -> tuple[pl.DataFrame, np.ndarray, dict]:
    """What a labelling asset (span_clusters, topic_scores) labels of one source: the spans of at
    least `min_quality`, their vectors, and the metadata saying how many were left out and the
    floor the dataset assets check against (`LABEL_MIN_QUALITY`)."""
    from emerge.ingest import document_texts
    from emerge.quality import selectable

    keep = selectable(spans, document_texts(raw_texts), min_quality)
    metadata = {"spans": spans.height, "spans_below_quality": int(spans.height - keep.sum()),
                LABEL_MIN_QUALITY: min_quality if min_quality is not None else 0.0}
    return spans.filter(pl.Series(keep)), source_vectors(source, spans, span_embeddings, keep), metadata


@dg.asset(group_name="clustering", kinds={"umap"}, ins={"spans": LAZY_SOURCES, "span_embeddings": LAZY_SOURCES},
          automation_condition=REFIT,
          description="UMAP fitted on a bounded, per-document-capped sample of spans from every source. "
                      "Refits on the weekly cron once new embeddings arrived, or on demand (fit_clusters).")
def umap_projection(context: dg.AssetExecutionContext, config: UmapConfig, spans: dict[str, pl.LazyFrame],
                    span_embeddings: dict[str, pl.LazyFrame], storage: EmergeStorage) -> dg.Output:
    from emerge.discovery.pipeline import ClusteringPipeline, load_fit_sample
    from emerge.errors import InputError

    cfg, sources = config.to_engine(), lazy_sources(spans, span_embeddings)
    try:  # source by source: only the sample's texts and vectors are ever loaded
        sample, vectors, total = load_fit_sample({s: (spans[s], span_embeddings[s]) for s in sources}, cfg)
    except InputError as exc:
        raise dg.Failure(str(exc)) from exc
    pipeline = ClusteringPipeline(cfg).fit_reducer(vectors)
    path = pipeline.save(storage.models_dir / "umap_projection")
    coords = pipeline.fit_embedding_
    frame = sample.with_columns(pl.Series("coords", coords, dtype=pl.Array(pl.Float32, coords.shape[1])),
                                pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])))
    return dg.Output(frame, metadata={
        "dagster/row_count": frame.height, "sources": ", ".join(sources), "total_spans": total,
        "fit_spans": frame.height, "model_path": dg.MetadataValue.path(str(path)),
    })


@dg.asset(group_name="clustering", kinds={"hdbscan", "polars"}, automation_condition=FOLLOW_INPUTS,
          description="HDBSCAN on the UMAP sample, c-TF-IDF titles; saves the full ClusteringPipeline that "
                      "span_clusters applies to every source without refitting. Cluster ids stay stable "
                      "across refits (centroids matched to the previous fit).")
def hdbscan_clusters(context: dg.AssetExecutionContext, config: HdbscanClustersConfig, umap_projection: pl.DataFrame,
                     storage: EmergeStorage, title_namer: TitleNamerResource) -> dg.Output:
    from emerge.discovery.pipeline import ClusteringPipeline
    from emerge.discovery.fit import cluster_projected_sample, load_title_overrides

    previous = (ClusteringPipeline.load(storage.clustering_path)
                if (storage.clustering_path / "pipeline.json").exists() else None)
    titles_file = storage.cluster_titles_path
    overrides = load_title_overrides(titles_file) if titles_file.exists() else {}
    pipeline, ids, out = cluster_projected_sample(
        ClusteringPipeline.load(storage.models_dir / "umap_projection"), umap_projection,
        config.min_cluster_size, config.min_samples, config.max_cluster_fraction, previous,
        config.id_match_min_similarity, overrides, title_namer.get_namer())
    path = pipeline.save(storage.clustering_path)
    noise = float((pipeline.fit_labels_ < 0).mean())
    context.log.info(f"{len(pipeline.cluster_ids)} clusters on {len(pipeline.fit_labels_)} fit spans, noise "
                     f"{noise:.3f}; ids: {len(ids.similarity)} kept, {len(ids.new_ids)} new, "
                     f"{len(ids.retired_ids)} retired")
    meta = {"dagster/row_count": out.height, "clusters": len(pipeline.cluster_ids), "fit_noise_fraction": round(noise, 4),
            "pipeline_path": dg.MetadataValue.path(str(path)), "refit_of_previous": previous is not None,
            "title_overrides": f"{sum(c in pipeline.titles for c in overrides)} from {titles_file}" if overrides
            else f"none (write `cluster id: title` lines to {titles_file} to name clusters yourself)",
            "title_namer": title_namer.model_dir or "off (keyphrase titles)",
            "titles": dg.MetadataValue.json({str(c): t for c, t in sorted(pipeline.titles.items())})}
    return dg.Output(out, metadata=meta | _fit_metadata(out, pipeline, storage) | _id_metadata(ids, pipeline))


def _fit_metadata(out: pl.DataFrame, pipeline, storage: EmergeStorage) -> dict:
    """The fitted clusters for the UI: sizes, the size cap if one fired, the table and the map."""
    from emerge.discovery.fit import cluster_table

    labels, coords = pipeline.fit_labels_, pipeline.fit_embedding_
    return {
        "min_cluster_size": pipeline.config.auto_min_cluster_size(len(coords)),
        "max_cluster_size": (f"{pipeline.size_cap_} (one cluster held more than max_cluster_fraction "
                             f"{pipeline.config.max_cluster_fraction} of the fit spans; re-selected below it)"
                             if pipeline.size_cap_ else "none needed"),
        "cluster_table": markdown_table(cluster_table(out.rename({"membership": "relevance"}), pipeline)),
        "cluster_map": cluster_map(coords, labels, pipeline.titles, storage.figures_dir / "cluster_map.png"),
        "cluster_size_balance": round(min(pipeline.sizes.values()) / max(pipeline.sizes.values()), 4)
        if pipeline.sizes else 0.0,
    }


def _id_metadata(ids, pipeline) -> dict:
    """How this fit's clusters map onto the previous fit's ids (kept, new, retired)."""
    id_rows = [r | {"title": pipeline.titles.get(r["cluster_id"], "") if r["cluster_id"] is not None else ""}
               for r in ids.rows()]
    return {
        "cluster_ids_kept": len(ids.similarity),
        "cluster_ids_new": ", ".join(map(str, ids.new_ids)),
        "cluster_ids_retired": ", ".join(map(str, ids.retired_ids)),
        "cluster_id_mapping": markdown_table(pl.DataFrame(id_rows, schema={
            "cluster_id": pl.Int64, "raw_label": pl.Int64, "previous_id": pl.Int64, "similarity": pl.Float64,
            "status": pl.String, "title": pl.String})),
    }


@dg.asset(partitions_def=document_source, group_name="clustering", kinds={"hdbscan", "polars"},
          deps=[hdbscan_clusters], backfill_policy=SINGLE_RUN, automation_condition=FOLLOW_INPUTS,
          ins={"raw_texts": SOURCE_IN, "spans": SOURCE_IN, "span_embeddings": SOURCE_IN},
          description="The spans of one source that can reach the curated dataset (quality at least "
                      "label_min_quality) labelled by the saved ClusteringPipeline (placement among the fit "
                      "spans + hdbscan.approximate_predict), with relevance to their cluster.")
def span_clusters(context: dg.AssetExecutionContext, config: SpanClustersConfig, raw_texts: pl.DataFrame | dict,
                  spans: pl.DataFrame | dict, span_embeddings: pl.DataFrame | dict,
                  storage: EmergeStorage) -> dg.Output:
    from emerge.discovery.pipeline import ClusteringPipeline

    if not (storage.clustering_path / "pipeline.json").exists():
        raise dg.Failure(f"no fitted clustering at {storage.clustering_path}; materialize hdbscan_clusters first")
    pipeline = ClusteringPipeline.load(storage.clustering_path)
    return for_each_source(context, lambda source, raw_texts, spans, span_embeddings: label_source(
        pipeline, storage, source, spans, span_embeddings, raw_texts, config.label_min_quality),
        raw_texts=raw_texts, spans=spans, span_embeddings=span_embeddings)


def label_source(pipeline, storage: EmergeStorage, source: str, spans: pl.DataFrame, span_embeddings: pl.DataFrame,
                 raw_texts: pl.DataFrame, min_quality: float | None) -> dg.Output:
    from emerge.discovery.fit import label_spans

    candidates, vectors, counts = label_candidates(source, spans, span_embeddings, raw_texts, min_quality)
    labelled = label_spans(pipeline, candidates, vectors, progress=True)
    out = labelled.select("span_idx", "doc_id", "cluster_id", "cluster_title", "membership", "centroid_sim",
                          "relevance")
    per_cluster = out.group_by("cluster_id", "cluster_title").agg(pl.len().alias("spans")).sort("cluster_id")
    return dg.Output(out, metadata={
        "dagster/row_count": out.height,
        **counts,
        "noise_fraction": round(float((out["cluster_id"] < 0).mean()), 4) if out.height else 0.0,
        "spans_per_cluster": markdown_table(per_cluster),
        "pipeline_path": dg.MetadataValue.path(str(storage.clustering_path)),
    })
