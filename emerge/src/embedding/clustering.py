"""Product-description path of `ClusteringPipeline`."""

from emerge.discovery.pipeline import ClusteringPipeline

__all__ = ["ClusteringPipeline"]
