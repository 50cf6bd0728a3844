"""Product-description path of `LateInteractionCrossEncoder` and `Topic`."""

from emerge.late_interaction import LateInteractionCrossEncoder
from emerge.topics import Topic

__all__ = ["LateInteractionCrossEncoder", "Topic"]
