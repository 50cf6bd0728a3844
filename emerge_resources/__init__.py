"""Dagster resources and IO managers wrapping the outside systems Emerge talks to."""

from emerge_resources.io_manager import ParquetIOManager
from emerge_resources.mlflow_tracking import MlflowTracking, default_tracking_uri
from emerge_resources.model import EmbeddingModelResource
from emerge_resources.storage import EmergeStorage
from emerge_resources.title_namer import TitleNamerResource
from emerge_resources.topics import TopicsResource

__all__ = ["EmbeddingModelResource", "EmergeStorage", "MlflowTracking", "ParquetIOManager", "TitleNamerResource",
           "TopicsResource", "default_tracking_uri"]
