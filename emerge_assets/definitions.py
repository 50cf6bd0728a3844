"""The Dagster code location: `dagster dev -m emerge_assets.definitions`."""

import os
from pathlib import Path

import dagster as dg

from emerge_assets.assets.clustering import hdbscan_clusters, span_clusters, umap_projection
from emerge_assets.assets.dataset import curated_dataset, curated_topic_dataset
from emerge_assets.assets.documents import raw_texts, span_embeddings, spans
from emerge_assets.assets.topics import topic_scores
from emerge_assets.automation import automation_sensor
from emerge_assets.checks import CHECKS
from emerge_assets.assets.training import fine_tuned_model, fine_tuned_topic_model
from emerge_assets.partitions import document_source
from emerge_assets.sensors import source_inbox
from emerge_resources import (EmbeddingModelResource, EmergeStorage, MlflowTracking, ParquetIOManager,
                              TitleNamerResource, TopicsResource, default_tracking_uri)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EMERGE_HOME = os.environ.get("EMERGE_HOME", str(PROJECT_ROOT / ".emerge_home"))
INPUT_ROOT = os.environ.get("EMERGE_INPUT_ROOT", str(PROJECT_ROOT / "sample_data" / "corpus"))
TOPICS_FILE = os.environ.get("EMERGE_TOPICS_FILE", str(PROJECT_ROOT / "sample_data" / "topics.yaml"))
# UMAP's numba kernels cache compiled code; site-packages may be read-only in deployments.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(EMERGE_HOME) / "numba_cache"))

embed_job = dg.define_asset_job(
    "embed_sources", selection=dg.AssetSelection.assets(raw_texts, spans, span_embeddings),
    partitions_def=document_source,
    description="Read, span and embed one document source (partition) or a backfill of many.")
fit_job = dg.define_asset_job(
    "fit_clusters", selection=dg.AssetSelection.assets(umap_projection, hdbscan_clusters),
    description="Fit UMAP + HDBSCAN on a bounded sample drawn from every embedded source.")
label_job = dg.define_asset_job(
    "label_sources", selection=dg.AssetSelection.assets(span_clusters), partitions_def=document_source,
    description="Label a source's spans with the saved clustering (no refit).")
export_job = dg.define_asset_job(
    "export_dataset", selection=dg.AssetSelection.assets(curated_dataset),
    description="Pareto-select spans from all labelled sources and write Parquet, CSV and the card.")
topics_job = dg.define_asset_job(
    "score_topics", selection=dg.AssetSelection.assets(topic_scores), partitions_def=document_source,
    description="Score a source's spans against the topics file (late interaction, no extra model pass).")
export_topics_job = dg.define_asset_job(
    "export_topic_dataset", selection=dg.AssetSelection.assets(curated_topic_dataset),
    description="Pareto-select topic-labelled spans from all scored sources and export them.")
train_job = dg.define_asset_job(
    "train_model", selection=dg.AssetSelection.assets(fine_tuned_model),
    description="Fine-tune the embedding model on the curated dataset; base vs fine-tuned metrics go to MLflow.")
train_topics_job = dg.define_asset_job(
    "train_topic_model", selection=dg.AssetSelection.assets(fine_tuned_topic_model),
    description="Fine-tune on the curated topic dataset (topic text -> span pairs); metrics go to MLflow.")
JOBS = [embed_job, fit_job, label_job, export_job, topics_job, export_topics_job, train_job, train_topics_job]


def build_resources(emerge_home: str = EMERGE_HOME, input_root: str = INPUT_ROOT,
                    model_name_or_path: str | None = None, device: str = "auto",
                    topics_file: str = TOPICS_FILE, mlflow_tracking_uri: str | None = None) -> dict:
    """Resources with embedded defaults; tests and the demo pass their own folders/model."""
    return {
        "io_manager": ParquetIOManager(base_path=str(Path(emerge_home) / "assets")),
        "storage": EmergeStorage(root=emerge_home, input_root=input_root),
        "embedding_model": EmbeddingModelResource(model_name_or_path=model_name_or_path, device=device),
        "topics": TopicsResource(topics_file=topics_file),
        "title_namer": TitleNamerResource(model_dir=os.environ.get("EMERGE_TITLE_NAMER_DIR") or None,
                                          gguf_file=os.environ.get("EMERGE_TITLE_NAMER_GGUF") or None),
        "mlflow": MlflowTracking(tracking_uri=mlflow_tracking_uri or os.environ.get(
            "EMERGE_MLFLOW_TRACKING_URI", default_tracking_uri(emerge_home))),
    }


ASSETS = [raw_texts, spans, span_embeddings, umap_projection, hdbscan_clusters, span_clusters, curated_dataset,
          topic_scores, curated_topic_dataset, fine_tuned_model, fine_tuned_topic_model]

SENSORS = [source_inbox, automation_sensor]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS, sensors=SENSORS, resources=build_resources())
