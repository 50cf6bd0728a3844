"""Product-description path of `Curator` and `CuratorConfig`."""

from emerge.config import CuratorConfig
from emerge.curator import Curator

__all__ = ["Curator", "CuratorConfig"]
