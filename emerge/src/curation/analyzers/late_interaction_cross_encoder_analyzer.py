"""Product-description path of `LateInteractionCrossEncoder` and `Topic`."""

from emerge.topics.late_interaction import LateInteractionCrossEncoder
from emerge.topics.topic import Topic

__all__ = ["LateInteractionCrossEncoder", "Topic"]
