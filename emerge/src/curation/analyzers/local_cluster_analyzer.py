"""Product-description path of `LocalClusterAnalyzer`."""

from emerge.curator import LocalClusterAnalyzer

__all__ = ["LocalClusterAnalyzer"]
