"""The Dagster code location: `dagster dev -m emerge_assets.definitions`."""

import os
from pathlib import Path

import dagster as dg

from emerge_assets.assets.clustering import hdbscan_clusters, umap_projection
from emerge_assets.assets.dataset import curated_dataset
from emerge_assets.assets.documents import raw_texts, span_embeddings, spans
from emerge_assets.partitions import document_source
from emerge_resources import EmbeddingModelResource, EmergeStorage, ParquetIOManager

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMERGE_HOME = os.environ.get("EMERGE_HOME", str(PROJECT_ROOT / ".emerge_home"))
INPUT_ROOT = os.environ.get("EMERGE_INPUT_ROOT", str(PROJECT_ROOT / "sample_data" / "corpus"))

per_source_job = dg.define_asset_job(
    "embed_sources", selection=dg.AssetSelection.assets(raw_texts, spans, span_embeddings),
    partitions_def=document_source,
    description="Read, span and embed one document source (partition) or a backfill of many.")
discovery_job = dg.define_asset_job(
    "discover_and_curate", selection=dg.AssetSelection.assets(umap_projection, hdbscan_clusters, curated_dataset),
    description="Fit global clusters across all embedded sources and export the curated dataset.")


def build_resources(emerge_home: str = EMERGE_HOME, input_root: str = INPUT_ROOT,
                    model_name_or_path: str | None = None, device: str = "auto") -> dict:
    """Resources with embedded defaults; tests and the demo pass their own folders/model."""
    return {
        "io_manager": ParquetIOManager(base_path=str(Path(emerge_home) / "assets")),
        "storage": EmergeStorage(root=emerge_home, input_root=input_root),
        "embedding_model": EmbeddingModelResource(model_name_or_path=model_name_or_path, device=device),
    }


ASSETS = [raw_texts, spans, span_embeddings, umap_projection, hdbscan_clusters, curated_dataset]

defs = dg.Definitions(assets=ASSETS, jobs=[per_source_job, discovery_job], resources=build_resources())
