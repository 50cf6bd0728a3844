"""The user's topic definitions, as a resource so topics change without touching code."""

import dagster as dg
from pydantic import Field


class TopicsResource(dg.ConfigurableResource):
    """Points at a YAML/JSON topics file (`id`, `name`, `description`, `examples` per topic)."""

    topics_file: str = Field(description="Path of the topics file (.yaml, .yml or .json).")

    def load(self):
        from emerge.topics.topic import load_topics

        return load_topics(self.topics_file)
