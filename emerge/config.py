"""Typed, validated configuration for every engine stage.

Each config validates itself on construction, so a bad value fails before any model is
loaded or any file is read, with a message that starts with the field's name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from emerge.errors import ConfigError

UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")
TRANSFORMS = ("knn", "umap")  # how ClusteringConfig places spans the fit did not see


def _require(cond: bool, field_name: str, message: str) -> None:
    if not cond:
        raise ConfigError(field_name, message)


def _positive_int(value, field_name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
             field_name, f"must be an integer >= 1, got {value!r}")


def _unit_interval(value, field_name: str) -> None:
    _require(isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0,
             field_name, f"must be within [0, 1], got {value!r}")


@dataclass(frozen=True)
class IngestConfig:
    """How raw files become documents.

    `max_doc_chars` guards the embedding stage: a document longer than this is skipped
    with reason `too_long` instead of tying up the transformer for minutes.
    """

    text_field: str = "text"
    id_field: str | None = "id"
    normalization: str = "NFC"
    max_doc_chars: int = 1_000_000
    min_doc_chars: int = 1
    deduplicate: bool = True

    def __post_init__(self):
        _require(bool(self.text_field), "text_field", "must be a non-empty column/field name")
        _require(self.normalization in UNICODE_FORMS, "normalization",
                 f"must be one of {UNICODE_FORMS}, got {self.normalization!r}")
        _positive_int(self.max_doc_chars, "max_doc_chars")
        _positive_int(self.min_doc_chars, "min_doc_chars")


@dataclass(frozen=True)
class SpanConfig:
    """Dense overlapping spans, measured in tokens of the embedding model's tokenizer.

    Starts are placed every `stride` tokens and lengths run from `min_len` to `max_len` in
    steps of `length_step` (default: `stride`); both ends snap to word boundaries, so a span
    never cuts a word in half.
    """

    min_len: int = 16
    max_len: int = 64
    stride: int = 8
    length_step: int | None = None

    def __post_init__(self):
        _positive_int(self.min_len, "min_len")
        _positive_int(self.max_len, "max_len")
        _positive_int(self.stride, "stride")
        _positive_int(self.length_step, "length_step", allow_none=True)
        _require(self.min_len <= self.max_len, "min_len",
                 f"must be <= max_len ({self.min_len} > {self.max_len})")

    @property
    def step(self) -> int:
        return self.length_step or self.stride


DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EncoderConfig:
    """Which transformer embeds documents and how it is run.

    `model_name_or_path=None` means the packaged all-MiniLM-L6-v2 (loads offline).
    `window_overlap` tokens are shared by consecutive windows of a long document so every
    token keeps at least half a window of context.

    `dtype` is the precision of the forward pass. `auto` picks the fastest one whose span vectors
    stay close to float32's: bfloat16 autocast on CPUs with native bf16 (AVX512-BF16 or AMX),
    float16 autocast on CUDA, float32 otherwise (speed and distance measured in BENCHMARKS.md). Set
    `float32` for bit-for-bit reproducible vectors across machines.
    """

    model_name_or_path: str | None = None
    device: str = "auto"
    batch_size: int = 16
    max_seq_length: int | None = None
    window_overlap: int = 64
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def __post_init__(self):
        _positive_int(self.batch_size, "batch_size")
        _positive_int(self.max_seq_length, "max_seq_length", allow_none=True)
        _require(isinstance(self.window_overlap, int) and self.window_overlap >= 0,
                 "window_overlap", f"must be an integer >= 0, got {self.window_overlap!r}")
        _require(self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:"),
                 "device", f"must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        _require(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.model_name_or_path is not None:
            path = Path(self.model_name_or_path).expanduser()
            _require(path.is_dir(), "model_name_or_path",
                     f"no model directory at {str(path)!r} (Emerge never downloads models; "
                     "give a local sentence-transformers/transformers directory or leave it unset "
                     "for the packaged all-MiniLM-L6-v2)")
            _require((path / "config.json").is_file() or (path / "modules.json").is_file(), "model_name_or_path",
                     f"{str(path)!r} holds no model (no config.json or modules.json): give the folder a "
                     "sentence-transformers or transformers model was saved to, or leave it unset for the packaged "
                     "all-MiniLM-L6-v2")


@dataclass(frozen=True)
class ClusteringConfig:
    """UMAP + HDBSCAN settings.

    Dense spans of one document overlap and sit close together; fitting on all of them makes
    HDBSCAN find documents instead of topics. The fit therefore uses at most
    `max_fit_spans_per_doc` non-overlapping spans per document and `max_fit_spans` in total;
    every other span is labelled with `approximate_predict` after `transform` places it in
    UMAP space (`knn`: weighted mean of its nearest fit spans; `umap`: UMAP.transform).

    `max_cluster_fraction` caps what one cluster may hold. Excess of mass can keep the tree's
    first split when one side is large and long-lived (20 Newsgroups: 9,056 of 10,000 fit spans
    in one "cluster"), which is the corpus, not a topic; above the cap the clusters below it are
    selected instead, if they keep at least half of its spans (one dense blob with only
    fluctuations below it is kept whole rather than turned into noise). None: no cap.
    """

    n_components: int = 5
    n_neighbors: int = 15
    min_dist: float = 0.0
    metric: str = "cosine"
    min_cluster_size: int | None = None
    min_samples: int | None = None
    max_fit_spans: int = 10_000
    max_fit_spans_per_doc: int = 8
    random_state: int | None = 42
    transform: str = "knn"
    max_cluster_fraction: float | None = 0.5

    def __post_init__(self):
        _positive_int(self.n_components, "n_components")
        _require(self.max_cluster_fraction is None or 0.0 < float(self.max_cluster_fraction) <= 1.0,
                 "max_cluster_fraction", f"must be in (0, 1] or None, got {self.max_cluster_fraction!r}")
        _require(self.transform in TRANSFORMS, "transform", f"must be knn or umap, got {self.transform!r}")
        _require(isinstance(self.n_neighbors, int) and self.n_neighbors >= 2, "n_neighbors",
                 f"must be an integer >= 2, got {self.n_neighbors!r}")
        _require(0.0 <= float(self.min_dist) <= 1.0, "min_dist", f"must be in [0, 1], got {self.min_dist!r}")
        _require(self.min_cluster_size is None or (isinstance(self.min_cluster_size, int)
                                                   and self.min_cluster_size >= 2),
                 "min_cluster_size", f"must be an integer >= 2 or None (auto), got {self.min_cluster_size!r}")
        _positive_int(self.min_samples, "min_samples", allow_none=True)
        _require(isinstance(self.max_fit_spans, int) and self.max_fit_spans >= 10, "max_fit_spans",
                 f"must be an integer >= 10, got {self.max_fit_spans!r}")
        _positive_int(self.max_fit_spans_per_doc, "max_fit_spans_per_doc")

    def auto_min_cluster_size(self, n_points: int) -> int:
        """Scale with the sample: ~sqrt(n)/2 keeps tiny corpora clusterable and big ones coarse."""
        if self.min_cluster_size is not None:
            return self.min_cluster_size
        return int(max(5, min(500, round((n_points ** 0.5) / 2))))


@dataclass(frozen=True)
class SelectionConfig:
    """Pareto selection of the spans that go into the dataset.

    `target_len` (tokens) is where the length objective peaks; by default the middle of the
    span length range. `near_duplicate_threshold` is a cosine similarity above which the
    lower-ranked of two selected spans in the same cluster is dropped.
    """

    quality_threshold: float = 0.5
    min_relevance: float = 0.0
    target_len: int | None = None
    max_spans_per_cluster: int | None = None
    near_duplicate_threshold: float = 0.95
    include_noise: bool = False

    def __post_init__(self):
        _unit_interval(self.quality_threshold, "quality_threshold")
        _unit_interval(self.min_relevance, "min_relevance")
        _unit_interval(self.near_duplicate_threshold, "near_duplicate_threshold")
        _positive_int(self.target_len, "target_len", allow_none=True)
        _positive_int(self.max_spans_per_cluster, "max_spans_per_cluster", allow_none=True)


@dataclass(frozen=True)
class AnalyzerConfig:
    """The seed API's analyzer settings: which spans an analyzer labels and with which model.

    `min_len`/`max_len` (tokens) bound the spans the analyzer scores; spans outside are
    dropped before scoring. The encoder fields choose the transformer.
    """

    min_len: int = 1
    max_len: int = 512
    model_name_or_path: str | None = None
    device: str = "auto"
    batch_size: int = 16

    def __post_init__(self):
        _positive_int(self.min_len, "min_len")
        _positive_int(self.max_len, "max_len")
        _require(self.min_len <= self.max_len, "min_len",
                 f"must be <= max_len ({self.min_len} > {self.max_len})")

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model_name_or_path=self.model_name_or_path, device=self.device,
                             batch_size=self.batch_size)


@dataclass(frozen=True)
class CuratorConfig:
    """The seed API's curator settings, mapped onto the stage configs the assets use.

    `min_length`/`max_length`/`stride` shape span generation (tokens); `quality_threshold`
    and the selection fields shape the final dataset.
    """

    # the seed's names for the stage configs' fields; defaults read from those configs, never copied
    min_length: int = SpanConfig.min_len
    max_length: int = SpanConfig.max_len
    stride: int = SpanConfig.stride
    quality_threshold: float = SelectionConfig.quality_threshold
    min_relevance: float = SelectionConfig.min_relevance
    max_spans_per_cluster: int | None = SelectionConfig.max_spans_per_cluster
    near_duplicate_threshold: float = SelectionConfig.near_duplicate_threshold
    include_noise: bool = SelectionConfig.include_noise
    ingest: IngestConfig = field(default_factory=IngestConfig)
    # Spans below quality_threshold can never be selected, and labelling them was most of the
    # analyzer's work (23-43 % of dense spans pass 0.5), so by default they get no label; the
    # dataset is the same either way. True labels every span (to inspect labels of all of them,
    # or to select later at a lower threshold than this config's).
    label_below_quality: bool = False

    def __post_init__(self):
        # Build the stage configs once so their validation runs now, with the seed's names.
        try:
            self.span_config()
        except ConfigError as exc:
            renamed = {"min_len": "min_length", "max_len": "max_length"}.get(exc.field, exc.field)
            raise ConfigError(renamed, str(exc).split(": ", 1)[1].replace("max_len", "max_length")) from None
        self.selection_config()

    def span_config(self) -> SpanConfig:
        return SpanConfig(min_len=self.min_length, max_len=self.max_length, stride=self.stride)

    def selection_config(self) -> SelectionConfig:
        return SelectionConfig(quality_threshold=self.quality_threshold, min_relevance=self.min_relevance,
                               max_spans_per_cluster=self.max_spans_per_cluster,
                               near_duplicate_threshold=self.near_duplicate_threshold,
                               include_noise=self.include_noise)


PAIRINGS = ("distill", "span_context", "same_document", "same_cluster")
QUERY_SOURCES = ("spans", "leading_sentence", "sentences", "keywords", "sentence_keywords", "generated")
DISTILL_LOSSES = ("in_batch_kl", "in_batch_mse", "pairwise")
TRAINED_SIDES = ("auto", "query", "both")
# what `None` leaves to the trained side (BENCHMARKS.md, domain adaptation): the two-sided recipe
# embeds 5 texts a query, so 1,000 queries once is its CPU budget; the query side embeds only the
# query (~10 tokens), so it affords three keyword draws a document, three times over, up to 10,000
SIDE_DEFAULTS = {"both": {"epochs": 1, "queries_per_document": 2, "max_train_queries": 1000},
                 "query": {"epochs": 3, "queries_per_document": 3, "max_train_queries": 10_000}}
GATE_CRITERIA = ("self_retrieval", "search_queries", "self_and_search")
# distill moves normalised-cosine scores, so it needs a larger step than MNRL's pairs;
# WiSE-FT interpolation then takes back what the larger step costs (BENCHMARKS.md, domain adaptation)
DEFAULT_LEARNING_RATES = {"distill": 1e-4, "span_context": 2e-5, "same_document": 2e-5, "same_cluster": 2e-5}


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning a sentence-transformers model on a curated dataset.

    `pairing` decides what the model learns from (see `emerge.training.distillation`, `emerge.training.pairs`):
    `distill` (default) turns pseudo-queries into (query, positive, negatives) triplets scored
    by a base-model + BM25 teacher (`lexical_weight`; `teacher_model`, a local sentence-transformers
    directory, replaces the base model as the dense half) and distils the teacher; its queries are
    the selected spans (`query_source="spans"`, up to `queries_per_document`) or each document's
    opening line or sentence (`"leading_sentence"`), that opening shortened to its rarest
    words, a search-box query (`"keywords"`, `keyword_terms` = (fewest, most) words; `"sentence_keywords"`:
    the opening and `queries_per_document - 1` other sentences, each shortened so), the
    opening and `queries_per_document - 1` other sentences, each cut out of its positive
    (`"sentences"`), or a query a local language model writes about the document
    (`"generated"`: `query_generator` is its folder, `query_generator_gguf` its GGUF file, at
    most `query_generation_budget_s` seconds of generation, each query kept only where the
    teacher ranks its document in its top `query_consistency_top_k`;
    `emerge.training.query_generation`), at most `max_train_queries`, with
    `negatives_per_query` negatives drawn from the teacher's top `negative_depth` documents;
    `distill_loss="in_batch_kl"` matches the student's ranking of every text of the batch to the
    teacher's (`emerge.training.distill_loss`), `"in_batch_mse"` the raw margins to every text, `"pairwise"`
    (MarginMSE) only the margins to the row's own negatives.
    `span_context` pairs each selected span with its document's surrounding text, the span cut
    out (`context_chars` of context); `same_document` pairs two selected spans of one document
    and label; `same_cluster` pairs spans of different documents in one cluster (recipe A; no
    two pairs of a cluster share a batch; `near_cluster_fraction` of the other clusters, nearest by
    the base model's centroids, are no in-batch negatives either: `emerge.training.near_label_loss`). Topic
    datasets always pair the topic's text with its spans. `pairs_per_label` caps pairs per label; `eval_fraction` of documents is held out
    entirely. After training, each of `interpolation_weights` (WiSE-FT, 1.0 = trained weights) is
    scored on held-out documents by `gate_criterion` (`emerge.training.promotion`: `self_retrieval`, a
    span finding its own document; `search_queries`, a search-box query finding its document;
    `self_and_search`, their mean) and the best is published only if it beats the base by more than
    `promotion_min_gain` (`gate=False` publishes regardless). Training runs at
    `max_seq_length`; evaluation at `eval_max_seq_length` (None: the model's own window). A
    distillation step holding more than `max_tokens_per_forward` padded tokens (batch_size x
    (2 + negatives_per_query) x max_seq_length at most) is embedded in mini-batches with gradient
    caching, so a longer window or more negatives cost time, not memory.
    `learning_rate` None takes the recipe's measured default (`DEFAULT_LEARNING_RATES`). `dropout` sets
    every dropout rate while training (None: the model's own); 0 is ~1.25x faster and lighter, measured
    slightly worse on NFCorpus, so not the default.
    `trained_side="query"` (what "auto", the default, picks where the recipe allows it: `distill`, keyword queries, no
    `teacher_model`) trains only how queries are read: documents keep the base model's vectors and
    each query learns the teacher's ranking of every training document (`emerge.training.query_side`);
    `"both"` trains the two-sided recipe above. `epochs`, `queries_per_document` (keyword draws a
    document, on the query side) and `max_train_queries` default (None) per side (`SIDE_DEFAULTS`).
    """

    pairing: Literal[PAIRINGS] = "distill"
    trained_side: Literal[TRAINED_SIDES] = "auto"  # "query" where the recipe can, else "both"
    context_chars: int = 1200
    query_source: Literal[QUERY_SOURCES] = "keywords"
    queries_per_document: int | None = None  # None: SIDE_DEFAULTS
    keyword_terms: tuple[int, int] = (2, 5)
    # None: SIDE_DEFAULTS. Two-sided 1,000: twice as many tied on NFCorpus (seed 0, -0.0015) at 1.3x
    # the training time (BENCHMARKS.md)
    max_train_queries: int | None = None
    negatives_per_query: int = 3
    negative_depth: int = 30
    lexical_weight: float = 1.0
    teacher_model: str | None = None
    query_generator: str | None = None
    query_generator_gguf: str | None = None
    query_generation_budget_s: float = 1800.0
    query_consistency_top_k: int = 10
    distill_loss: Literal[DISTILL_LOSSES] = "in_batch_kl"
    interpolation_weights: tuple[float, ...] = (0.5, 1.0)
    promotion_min_gain: float = 0.0
    gate: bool = True
    gate_criterion: Literal[GATE_CRITERIA] = "self_and_search"
    eval_max_seq_length: int | None = None
    pairs_per_label: int = 2000
    min_pairs: int = 16
    eval_fraction: float = 0.2
    epochs: int | None = None  # None: SIDE_DEFAULTS (self-training: 1)
    batch_size: int = 32
    learning_rate: float | None = None
    warmup_ratio: float = 0.1
    max_seq_length: int = 128
    # a distillation step with more (padded) tokens than this is embedded in mini-batches with
    # gradient caching: same gradients, one more forward pass, bounded memory (distill_loss.py).
    # 4,096 = one column of the default step (32 x 128): 2.7 GiB peak instead of 6.5 GiB for
    # +25 % training time on long abstracts (BENCHMARKS.md, "Memory of a training step")
    max_tokens_per_forward: int | None = 4096
    # every dropout rate of the model while training; None keeps the model's own (0.1 for MiniLM)
    dropout: float | None = None
    scale: float = 20.0
    hard_negatives: bool = False
    hard_negative_margin: float = 0.1
    near_cluster_fraction: float = 0.25
    seed: int = 42

    @property
    def query_side_capable(self) -> bool:
        """The recipe can train the query side alone: keyword queries distilled from the base + BM25."""
        return (self.pairing == "distill" and self.query_source in ("keywords", "sentence_keywords")
                and self.teacher_model is None)

    @property
    def side(self) -> str:
        """The side trained: `trained_side`; "auto" is "query" where the recipe can, else "both"."""
        if self.trained_side != "auto":
            return self.trained_side
        return "query" if self.query_side_capable else "both"

    def _side_default(self, name: str) -> int:
        value = getattr(self, name)
        return value if value is not None else SIDE_DEFAULTS[self.side][name]

    @property
    def in_force(self) -> dict:
        """Every setting with its `None` resolved to what the run uses (for tracking records)."""
        return asdict(self) | {"trained_side": self.side, "epochs": self.train_epochs, "learning_rate": self.lr,
                               "queries_per_document": self.train_queries_per_document,
                               "max_train_queries": self.train_query_cap}

    @property
    def train_epochs(self) -> int:
        """`epochs`, else the trained side's default (`SIDE_DEFAULTS`)."""
        return self._side_default("epochs")

    @property
    def train_queries_per_document(self) -> int:
        """`queries_per_document`, else the trained side's default."""
        return self._side_default("queries_per_document")

    @property
    def train_query_cap(self) -> int:
        """`max_train_queries`, else the trained side's default."""
        return self._side_default("max_train_queries")

    @property
    def lr(self) -> float:
        """The learning rate in force: `learning_rate`, else the recipe's default."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.pairing]

    def __post_init__(self):
        _require(self.pairing in PAIRINGS, "pairing", f"must be one of {PAIRINGS}, got {self.pairing!r}")
        for name in ("pairs_per_label", "min_pairs", "max_seq_length", "context_chars", "negatives_per_query",
                     "negative_depth", "query_consistency_top_k"):
            _positive_int(getattr(self, name), name)
        for name in ("eval_max_seq_length", "max_train_queries", "epochs", "queries_per_document"):
            _positive_int(getattr(self, name), name, allow_none=True)
        _require(self.trained_side in TRAINED_SIDES, "trained_side",
                 f"must be one of {TRAINED_SIDES}, got {self.trained_side!r}")
        _require(self.trained_side != "query" or self.query_side_capable, "trained_side",
                 "'query' trains keyword queries against the base's own document vectors: it needs "
                 "pairing='distill', query_source 'keywords' or 'sentence_keywords' and no teacher_model")
        _require(self.query_source in QUERY_SOURCES, "query_source",
                 f"must be one of {QUERY_SOURCES}, got {self.query_source!r}")
        _require(self.teacher_model is None or (isinstance(self.teacher_model, str) and self.teacher_model.strip()),
                 "teacher_model", f"must be a model directory or None, got {self.teacher_model!r}")
        _require(self.query_source != "generated" or self.query_generator is not None, "query_generator",
                 "query_source='generated' needs query_generator, a local causal language model folder")
        _require(self.query_generator_gguf is None or self.query_generator is not None, "query_generator_gguf",
                 "names a file inside query_generator, which is not set")
        _require(isinstance(self.query_generation_budget_s, (int, float)) and self.query_generation_budget_s > 0,
                 "query_generation_budget_s", f"must be > 0, got {self.query_generation_budget_s!r}")
        _require(self.max_tokens_per_forward is None or (isinstance(self.max_tokens_per_forward, int)
                                                         and self.max_tokens_per_forward > 0),
                 "max_tokens_per_forward", f"must be None or a positive int, got {self.max_tokens_per_forward!r}")
        _require(self.dropout is None or (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0),
                 "dropout", f"must be None or within [0, 1), got {self.dropout!r}")
        _require(self.gate_criterion in GATE_CRITERIA, "gate_criterion",
                 f"must be one of {GATE_CRITERIA}, got {self.gate_criterion!r}")
        _require(self.distill_loss in DISTILL_LOSSES, "distill_loss",
                 f"must be one of {DISTILL_LOSSES}, got {self.distill_loss!r}")
        _require(isinstance(self.lexical_weight, (int, float)) and self.lexical_weight >= 0, "lexical_weight",
                 f"must be >= 0, got {self.lexical_weight!r}")
        _require(isinstance(self.promotion_min_gain, (int, float)) and self.promotion_min_gain >= 0,
                 "promotion_min_gain", f"must be >= 0, got {self.promotion_min_gain!r}")
        weights = self.interpolation_weights
        _require(isinstance(weights, (tuple, list)) and len(weights) > 0
                 and all(isinstance(w, (int, float)) and 0.0 < w <= 1.0 for w in weights),
                 "interpolation_weights", f"must be a non-empty list of weights in (0, 1], got {weights!r}")
        terms = self.keyword_terms
        _require(isinstance(terms, (tuple, list)) and len(terms) == 2 and all(isinstance(t, int) for t in terms)
                 and 1 <= terms[0] <= terms[1], "keyword_terms",
                 f"must be (min, max) word counts with 1 <= min <= max, got {terms!r}")
        _require(self.negative_depth >= self.negatives_per_query, "negative_depth",
                 f"must be >= negatives_per_query ({self.negatives_per_query}), got {self.negative_depth}")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 2, "batch_size",
                 f"must be an integer >= 2 (in-batch negatives need company), got {self.batch_size!r}")
        _require(isinstance(self.eval_fraction, (int, float)) and 0.0 < self.eval_fraction < 1.0,
                 "eval_fraction", f"must be within (0, 1), got {self.eval_fraction!r}")
        _require(self.learning_rate is None or (isinstance(self.learning_rate, (int, float))
                                                 and 0.0 < self.learning_rate < 1.0),
                 "learning_rate", f"must be within (0, 1), got {self.learning_rate!r}")
        _unit_interval(self.warmup_ratio, "warmup_ratio")
        _unit_interval(self.hard_negative_margin, "hard_negative_margin")
        _unit_interval(self.near_cluster_fraction, "near_cluster_fraction")
        _require(isinstance(self.scale, (int, float)) and self.scale > 0, "scale", f"must be > 0, got {self.scale!r}")
