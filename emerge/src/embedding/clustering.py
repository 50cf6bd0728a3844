"""Product-description path of `ClusteringPipeline`."""

from emerge.clustering import ClusteringPipeline

__all__ = ["ClusteringPipeline"]
