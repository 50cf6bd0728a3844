"""The one place models are loaded: every asset that needs the transformer asks this resource."""

from typing import Optional

import dagster as dg
from pydantic import Field

from emerge.config import EncoderConfig


class EmbeddingModelResource(dg.ConfigurableResource):
    """A local sentence-transformers/transformers model, loaded once per process.

    Leave `model_name_or_path` unset for the packaged all-MiniLM-L6-v2 (offline). Remote code is
    never executed (`trust_remote_code` is always off) and nothing is downloaded.
    """

    model_name_or_path: Optional[str] = Field(
        default=None, description="Local model directory; unset = packaged all-MiniLM-L6-v2.")
    device: str = Field(default="auto", description="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps.")
    batch_size: int = Field(default=16, description="Windows per forward pass.")
    max_seq_length: Optional[int] = Field(default=None, description="Window size in tokens; default: the model's.")
    window_overlap: int = Field(default=64, description="Tokens shared by consecutive windows of long documents.")
    dtype: str = Field(default="auto", description=(
        "Forward-pass precision: auto (bfloat16 on CPUs with native bf16, float16 on CUDA, else float32), "
        "float32, bfloat16 or float16."))

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model_name_or_path=self.model_name_or_path, device=self.device,
                             batch_size=self.batch_size, max_seq_length=self.max_seq_length,
                             window_overlap=self.window_overlap, dtype=self.dtype)

    def get_encoder(self):
        from emerge.encoder import load_encoder

        return load_encoder(self.encoder_config())

    @property
    def display_name(self) -> str:
        """The model's name for metadata and dataset cards, without loading it."""
        from emerge.encoder import model_display_name

        return model_display_name(self.model_name_or_path)

    def model_path(self):
        """The base model's local directory (the packaged MiniLM when unset), for training."""
        from emerge.encoder import resolve_model_path

        self.encoder_config()
        return resolve_model_path(self.model_name_or_path)

    def resolved_device(self) -> str:
        from emerge.encoder import resolve_device

        return resolve_device(self.device)

    def get_tokenizer(self):
        """Tokenizer only (no weights), for stages that never run the model."""
        from emerge.encoder import load_tokenizer

        self.encoder_config()  # validate the path before loading anything
        return load_tokenizer(self.model_name_or_path)
