"""Where Emerge writes what users keep: datasets, fitted clustering models, figures."""

from pathlib import Path

import dagster as dg
from pydantic import Field


class EmergeStorage(dg.ConfigurableResource):
    """Root folder for user-facing outputs (the IO manager keeps asset values separately)."""

    root: str = Field(description="Folder for datasets/, models/ and figures/.")
    input_root: str = Field(description="Folder with one sub-folder per document source.")

    def _dir(self, name: str) -> Path:
        path = Path(self.root).expanduser() / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def datasets_dir(self) -> Path:
        return self._dir("datasets")

    @property
    def models_dir(self) -> Path:
        return self._dir("models")

    @property
    def figures_dir(self) -> Path:
        return self._dir("figures")

    def token_store_path(self, source: str) -> Path:
        """Token ids + float16 token embeddings of one source, kept from the embedding pass."""
        return self._dir("token_embeddings") / f"{source}.npz"

    @property
    def clustering_path(self) -> Path:
        return self.models_dir / "clustering"

    @property
    def cluster_titles_path(self) -> Path:
        """The user's own cluster titles (`cluster id: title`, YAML), applied at every refit."""
        return Path(self.root).expanduser() / "cluster_titles.yaml"

    def source_dir(self, source: str) -> Path:
        return Path(self.input_root).expanduser() / source

    def list_sources(self) -> list[str]:
        from emerge.inbox import list_source_folders

        return list_source_folders(self.input_root)
