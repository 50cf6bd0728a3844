"""Run configuration of the assets (what the Dagster launchpad shows), mapped onto engine configs.

Each class builds its engine config as soon as Dagster constructs it, so an invalid value fails
the step before any input is loaded, with the engine's message naming the field.
"""

from typing import Optional

import dagster as dg
from pydantic import Field

from emerge.config import ClusteringConfig, IngestConfig, SelectionConfig, SpanConfig, TrainingConfig

_TRAINING = TrainingConfig()


class _ValidatedConfig(dg.Config):
    def model_post_init(self, __context) -> None:
        self.to_engine()

    def to_engine(self):  # pragma: no cover - every subclass overrides
        raise NotImplementedError


class RawTextsConfig(_ValidatedConfig):
    text_field: str = Field(default="text", description="Text column/field of .jsonl, .csv and .parquet files.")
    id_field: Optional[str] = Field(default="id", description="Record id column/field (row number when absent).")
    normalization: str = Field(default="NFC", description="Unicode normal form: NFC, NFKC, NFD or NFKD.")
    max_doc_chars: int = Field(default=1_000_000, description="Longer documents are skipped as too_long.")
    deduplicate: bool = Field(default=True, description="Skip documents whose text repeats an earlier one.")

    def to_engine(self) -> IngestConfig:
        return IngestConfig(text_field=self.text_field, id_field=self.id_field, normalization=self.normalization,
                            max_doc_chars=self.max_doc_chars, deduplicate=self.deduplicate)


class SpansConfig(_ValidatedConfig):
    min_len: int = Field(default=16, description="Shortest span, in model tokens.")
    max_len: int = Field(default=64, description="Longest span, in model tokens.")
    stride: int = Field(default=8, description="Tokens between consecutive span starts.")
    length_step: Optional[int] = Field(default=None, description="Step between span lengths (default: stride).")

    def to_engine(self) -> SpanConfig:
        return SpanConfig(min_len=self.min_len, max_len=self.max_len, stride=self.stride,
                          length_step=self.length_step)


class UmapConfig(_ValidatedConfig):
    n_components: int = Field(default=5, description="UMAP output dimensions fed to HDBSCAN.")
    n_neighbors: int = Field(default=15, description="UMAP neighbourhood size.")
    min_dist: float = Field(default=0.0)
    metric: str = Field(default="cosine")
    max_fit_spans: int = Field(default=10_000, description="Upper bound on spans the models are fitted on.")
    max_fit_spans_per_doc: int = Field(default=8, description="Non-overlapping spans per document in the fit.")
    random_state: Optional[int] = Field(default=42, description="Seed; null = faster, non-reproducible.")
    transform: str = Field(default="knn", description="How span_clusters places new spans in UMAP space: knn "
                           "(weighted mean of nearest fit spans, fast) or umap (UMAP.transform).")

    def to_engine(self) -> ClusteringConfig:
        return ClusteringConfig(n_components=self.n_components, n_neighbors=self.n_neighbors,
                                min_dist=self.min_dist, metric=self.metric, max_fit_spans=self.max_fit_spans,
                                max_fit_spans_per_doc=self.max_fit_spans_per_doc, random_state=self.random_state,
                                transform=self.transform)


class HdbscanConfig(_ValidatedConfig):
    min_cluster_size: Optional[int] = Field(default=None, description="null = about sqrt(fit spans)/2, >= 5.")
    min_samples: Optional[int] = Field(default=None)

    def to_engine(self) -> ClusteringConfig:
        return ClusteringConfig(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples)


class CuratedDatasetConfig(_ValidatedConfig):
    quality_threshold: float = Field(default=0.5, description="Minimum span quality in [0, 1].")
    min_relevance: float = Field(default=0.0, description="Minimum relevance in [0, 1].")
    max_spans_per_cluster: Optional[int] = Field(default=None, description="Cap per cluster (best first).")
    near_duplicate_threshold: float = Field(default=0.95, description="Cosine above which a span is a duplicate.")
    include_noise: bool = Field(default=False, description="Keep spans HDBSCAN marks as noise (cluster -1).")
    target_len: Optional[int] = Field(default=None, description="Preferred span length in tokens.")
    dataset_name: str = Field(default="curated_spans", description="File stem under <storage>/datasets/.")

    def to_engine(self) -> SelectionConfig:
        return SelectionConfig(quality_threshold=self.quality_threshold, min_relevance=self.min_relevance,
                               target_len=self.target_len, max_spans_per_cluster=self.max_spans_per_cluster,
                               near_duplicate_threshold=self.near_duplicate_threshold,
                               include_noise=self.include_noise)


class TopicScoresConfig(_ValidatedConfig):
    relevance_threshold: float = Field(default=0.4, description="Calibrated score below which a span has no topic.")
    prediction_mode: str = Field(default="late_chunking", description="late_chunking (document context, no extra "
                                 "transformer pass) or independent (each span encoded alone).")
    direction: str = Field(default="both", description="MaxSim direction: both, topic_to_span or span_to_topic.")
    prototype_weight: float = Field(default=0.5, description="Weight of cosine to the topic prototype vs MaxSim.")
    min_len: int = Field(default=1, description="Shortest span (tokens) to score.")
    max_len: int = Field(default=512, description="Longest span (tokens) to score.")

    def to_engine(self):
        from emerge.config import AnalyzerConfig
        from emerge.errors import ConfigError

        if not 0.0 <= self.relevance_threshold <= 1.0:
            raise ConfigError("relevance_threshold", f"must be within [0, 1], got {self.relevance_threshold!r}")
        if self.prediction_mode not in ("late_chunking", "independent"):
            raise ConfigError("prediction_mode", f"must be late_chunking or independent, got {self.prediction_mode!r}")
        if self.direction not in ("both", "topic_to_span", "span_to_topic"):
            raise ConfigError("direction", f"must be both, topic_to_span or span_to_topic, got {self.direction!r}")
        if not 0.0 <= self.prototype_weight <= 1.0:
            raise ConfigError("prototype_weight", f"must be within [0, 1], got {self.prototype_weight!r}")
        return AnalyzerConfig(min_len=self.min_len, max_len=self.max_len)


class FineTuneConfig(_ValidatedConfig):
    """Training and evaluation of `fine_tuned_model` (defaults are small enough for a CPU demo)."""

    model_name: str = Field(default="emerge-minilm", description="Folder name of the saved model under models/.")
    pairing: str = Field(default=_TRAINING.pairing, description="Cluster datasets: distill (pseudo-queries "
                         "ranked by a base-model + BM25 teacher, distilled into the model; the measured default), "
                         "span_context (selected span -> its document's surrounding text, span cut out), "
                         "same_document (two selected spans of one document and cluster) or same_cluster (spans of "
                         "different documents in one cluster).")
    context_chars: int = Field(default=1200, description="distill/span_context: characters of document around the span.")
    query_source: str = Field(default=_TRAINING.query_source, description="distill: pseudo-queries are the "
                              "selected spans (spans) or each document's opening line/sentence (leading_sentence).")
    queries_per_document: int = Field(default=_TRAINING.queries_per_document,
                                      description="distill: pseudo-queries (selected spans) per training document.")
    max_train_queries: Optional[int] = Field(default=_TRAINING.max_train_queries, description="distill: most "
                                             "pseudo-queries trained on (bounds training time on large corpora).")
    negatives_per_query: int = Field(default=_TRAINING.negatives_per_query,
                                     description="distill: teacher-mined negatives per pseudo-query.")
    negative_depth: int = Field(default=_TRAINING.negative_depth,
                                description="distill: negatives are drawn from the teacher's top this many documents.")
    lexical_weight: float = Field(default=_TRAINING.lexical_weight,
                                  description="distill: weight of BM25 beside the base model in the teacher.")
    distill_loss: str = Field(default=_TRAINING.distill_loss, description="distill: in_batch_kl (the student's "
                              "ranking of every text of the batch matched to the teacher's, KL; the measured default), "
                              "in_batch_mse (raw margins to every text) or pairwise (MarginMSE on each pseudo-query's "
                              "own negatives).")
    interpolation_weights: list[float] = Field(default=list(_TRAINING.interpolation_weights),
                                               description="WiSE-FT weights tried between base (0) and trained (1); "
                                               "the best on held-out self-retrieval is published.")
    promotion_min_gain: float = Field(default=_TRAINING.promotion_min_gain, description="The candidate must beat "
                                      "the base's held-out self-retrieval MRR@10 by more than this to become current.")
    gate: bool = Field(default=True, description="Publish only a candidate that beats its base (false: always publish).")
    eval_max_seq_length: Optional[int] = Field(default=None, description="Evaluation window (default: the model's own).")
    pairs_per_label: int = Field(default=2000, description="Most pairs per cluster/topic, highest relevance first.")
    min_pairs: int = Field(default=16, description="Fewer training pairs than this fails the step.")
    eval_fraction: float = Field(default=0.2, description="Share of documents held out from training for evaluation.")
    epochs: int = Field(default=1)
    batch_size: int = Field(default=32, description="Pairs per batch; the rest of the batch are the negatives.")
    learning_rate: Optional[float] = Field(default=None, description="null = the recipe's default (distill 1e-4, "
                                           "pair recipes 2e-5).")
    warmup_ratio: float = Field(default=0.1)
    max_seq_length: int = Field(default=128, description="Tokens per text in training (evaluation uses the model's window).")
    hard_negatives: bool = Field(default=False, description="Add one mined negative from another group per pair.")
    hard_negative_margin: float = Field(default=0.1, description="Skip negatives within this cosine of the positive.")
    seed: int = Field(default=42)
    beir_dir: Optional[str] = Field(default=None, description="Optional evaluation set in BEIR layout (corpus.jsonl, "
                                    "queries.jsonl, qrels/<split>.tsv), scored for base and fine-tuned.")
    beir_split: str = Field(default="test")

    def to_engine(self):

        return TrainingConfig(pairing=self.pairing, context_chars=self.context_chars, pairs_per_label=self.pairs_per_label, min_pairs=self.min_pairs,
                              query_source=self.query_source, queries_per_document=self.queries_per_document,
                              max_train_queries=self.max_train_queries,
                              negatives_per_query=self.negatives_per_query, negative_depth=self.negative_depth,
                              lexical_weight=self.lexical_weight, distill_loss=self.distill_loss,
                              interpolation_weights=tuple(self.interpolation_weights),
                              promotion_min_gain=self.promotion_min_gain, gate=self.gate, eval_max_seq_length=self.eval_max_seq_length,
                              eval_fraction=self.eval_fraction, epochs=self.epochs, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, warmup_ratio=self.warmup_ratio,
                              max_seq_length=self.max_seq_length, hard_negatives=self.hard_negatives,
                              hard_negative_margin=self.hard_negative_margin, seed=self.seed)
