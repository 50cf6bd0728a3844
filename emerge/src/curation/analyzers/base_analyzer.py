"""Product-description path of `AnalyzerConfig`."""

from emerge.config import AnalyzerConfig

__all__ = ["AnalyzerConfig"]
