"""Emerge: turn raw domain text into curated span datasets for embedding-model training.

The engine has no Dagster dependency; `emerge_assets` wires these same functions into assets.
"""

from emerge.discovery.pipeline import ClusteringPipeline
from emerge.config import (AnalyzerConfig, ClusteringConfig, CuratorConfig, EncoderConfig, IngestConfig,
                           SelectionConfig, SpanConfig, TrainingConfig)
from emerge.curator import Curator, LocalClusterAnalyzer
from emerge.encoder import TokenEncoder, load_encoder
from emerge.errors import ConfigError, EmergeError, InputError
from emerge.topics.late_interaction import LateInteractionCrossEncoder
from emerge.topics.self_training import SelfTrainingConfig, self_train
from emerge.topics.topic import Topic, load_topics

__all__ = [
    "AnalyzerConfig", "ClusteringConfig", "ClusteringPipeline", "ConfigError", "Curator", "CuratorConfig",
    "EmergeError", "EncoderConfig", "IngestConfig", "InputError", "LateInteractionCrossEncoder",
    "LocalClusterAnalyzer", "SelectionConfig", "SelfTrainingConfig", "SpanConfig", "Topic", "TokenEncoder", "TrainingConfig", "load_encoder",
    "load_topics", "self_train",
]
__version__ = "0.1.0"
