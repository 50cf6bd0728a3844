"""The notebook API from the product description, as a thin facade over the engine stages.

`Curator.process_batch` runs ingest -> spans -> late-chunked embeddings -> the analyzer;
`prepare_final_dataset` runs quality scoring and Pareto selection; `save_dataset` exports.
The Dagster assets call the same engine functions with the same configs, so the same documents
give the same spans, vectors, quality scores and selection. What differs around them: a text's
doc_id comes from its position in the batch here and from its file and record there, and the
clusters are fitted on the first batch here and on a sample of every source's spans there.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from emerge.discovery.pipeline import ClusteringPipeline
from emerge.config import AnalyzerConfig, ClusteringConfig, CuratorConfig
from emerge.dataset import curate, dataset_card, write_dataset
from emerge.discovery.fit import fit_clustering, label_spans
from emerge.embedding import TokenStore, embed_spans, embeddings_frame, vectors_of
from emerge.encoder import as_encoder
from emerge.errors import InputError
from emerge.ingest import documents_from_texts
from emerge.label_scheme import CLUSTERS, LabelScheme
from emerge.quality import quality_components, selectable
from emerge.spans import build_spans

log = logging.getLogger(__name__)


@runtime_checkable
class SpanAnalyzer(Protocol):
    """What `Curator` needs of an analyzer: the span length bounds it labels (`config`), the label
    scheme of its output, whether it reads per-token embeddings, and `analyze`, which returns the
    analysed spans with the scheme's `label_columns`."""

    config: AnalyzerConfig
    label_scheme: LabelScheme
    needs_token_embeddings: bool

    def analyze(self, spans: pl.DataFrame, vectors: np.ndarray, **kwargs) -> pl.DataFrame: ...
    # kwargs: token_store, encoder, and label_mask (a bool per span: only these need a label; an
    # analyzer may label more, never fewer)


class LocalClusterAnalyzer:
    """Labels spans with clusters of a `ClusteringPipeline`.

    With a fitted pipeline (e.g. `ClusteringPipeline.load(...)`) new spans are labelled by
    `approximate_predict`; with none, the first batch fits one (kept on `self.pipeline`).
    `model` and `tokenizer` are accepted because the product description passes them; the
    analyzer never runs a model (it labels the vectors `Curator` computed), so it ignores them.
    """

    label_scheme = CLUSTERS
    needs_token_embeddings = False

    def __init__(self, pipeline: ClusteringPipeline | None = None, config: AnalyzerConfig | None = None,
                 model=None, tokenizer=None, clustering: ClusteringConfig | None = None):
        self.config = config or AnalyzerConfig()
        self.pipeline = pipeline
        self.clustering = clustering or (pipeline.config if pipeline is not None else ClusteringConfig())

    def analyze(self, spans: pl.DataFrame, vectors: np.ndarray, label_mask: np.ndarray | None = None,
                **_) -> pl.DataFrame:
        """Fit (first batch) on every span within the length bounds, label those in `label_mask`:
        the fit sees the same spans whichever are labelled, so the clusters do not depend on it."""
        keep = ((spans["n_tokens"] >= self.config.min_len) & (spans["n_tokens"] <= self.config.max_len)).to_numpy()
        if self.pipeline is None or not self.pipeline.is_fitted:
            self.pipeline, _ = fit_clustering(spans.filter(pl.Series(keep)), vectors[keep], self.clustering)
        if label_mask is not None:
            keep &= np.asarray(label_mask, bool)
        return label_spans(self.pipeline, spans.filter(pl.Series(keep)), vectors[keep])


class Curator:
    """Turns raw texts into a curated, labelled span dataset."""

    def __init__(self, model=None, tokenizer=None, config: CuratorConfig | None = None, analyzer=None,
                 progress: bool = True):
        self.config = config or CuratorConfig()
        self.analyzer = analyzer or LocalClusterAnalyzer()
        if not isinstance(self.analyzer, SpanAnalyzer):
            missing = [a for a in ("config", "label_scheme", "needs_token_embeddings", "analyze")
                       if not hasattr(self.analyzer, a)]
            raise TypeError(f"analyzer {type(self.analyzer).__name__} lacks {missing} (see emerge.curator.SpanAnalyzer)")
        self.encoder = as_encoder(model, tokenizer, self.analyzer.config)
        self.progress = progress
        self.last_report: dict = {}
        self._texts: dict[str, str] = {}

    def process_batch(self, texts: list[str], source: str = "inline") -> pl.DataFrame:
        """Every span that can be selected (quality at least `quality_threshold`; every span with
        `label_below_quality`) with its label, relevance, quality components and embedding.
        `last_report` counts the spans built, those left unlabelled (below quality) and those labelled."""
        ingest = documents_from_texts(texts, source=source, config=self.config.ingest)
        if ingest.documents.is_empty():
            raise InputError(f"no usable text among {len(texts)} input(s); skipped: {ingest.skip_counts}")
        spans, too_short = build_spans(ingest.documents, self.encoder.tokenizer, self.config.span_config())
        if spans.is_empty():
            raise InputError(f"no document is at least min_length={self.config.min_length} tokens long")
        store = TokenStore() if self.analyzer.needs_token_embeddings else None
        vectors = embed_spans(ingest.documents, spans, self.encoder, progress=self.progress,
                              on_document=store.add if store is not None else None)
        texts_by_doc = dict(zip(ingest.documents["doc_id"], ingest.documents["text"]))
        quality = quality_components(spans, texts_by_doc)  # once: it picks the candidates and goes out with them
        candidates = selectable(spans, texts_by_doc,
                                None if self.config.label_below_quality else self.config.quality_threshold, quality)
        labelled = self.analyzer.analyze(spans, vectors, token_store=store, encoder=self.encoder,
                                         label_mask=candidates)
        kept_idx = labelled["span_idx"].to_numpy()
        self._texts.update(texts_by_doc)
        self.last_report = {"inputs": len(texts), "documents": ingest.documents.height,
                            "skipped": ingest.skip_counts | ({"shorter_than_min_len": too_short.height}
                                                             if too_short.height else {}),
                            "spans": labelled.height, "spans_built": spans.height,
                            "spans_left_unlabelled": int((~candidates).sum())}
        labelled = pl.concat([labelled, quality[kept_idx]], how="horizontal")
        return labelled.with_columns(embeddings_frame(labelled, vectors[kept_idx])["embedding"])

    @property
    def texts(self) -> dict[str, str]:
        """doc_id -> text of every document processed so far (for training pairs that need context)."""
        return dict(self._texts)

    def prepare_final_dataset(self, spans: pl.DataFrame) -> pl.DataFrame:
        """Pareto-selected, non-overlapping, de-duplicated spans with the export columns."""
        scheme = self.analyzer.label_scheme
        return curate(spans, vectors_of(spans), self._texts, self.config.selection_config(),
                      self.config.span_config(), label_col=scheme.label_col, columns=scheme.dataset_columns)

    def save_dataset(self, df: pl.DataFrame, path: str | Path) -> dict[str, Path]:
        """Write Parquet + CSV + a dataset card next to `path` (its suffix is ignored)."""
        scheme = self.analyzer.label_scheme
        card = dataset_card(df, title=f"Emerge dataset: {Path(path).stem}", model=self.encoder.name,
                            config={"curator": asdict(self.config)}, counts=self.last_report,
                            label_col=scheme.label_col, title_col=scheme.title_col)
        return write_dataset(df, path, card)
