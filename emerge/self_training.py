"""Self-training from topics: the user's few examples plus their unlabelled texts make a better model.

One round: score the unlabelled texts against the topics, keep the confidently labelled ones
(calibrated relevance above a floor, then the largest margins over the runner-up topic, at most
`per_topic` per topic so no topic swamps the others), and fine-tune with MNRL on pairs that
only ever join texts of one topic:

* topic text ("name: description") -> each of its examples: the user's own words, exact labels;
* the topic text or one of its examples -> a confidently labelled text;
* two confidently labelled texts of one topic from different documents.

Batches are topic-exclusive (`emerge.training.GroupExclusiveBatchSampler`, group = topic), so an
in-batch negative is always a text of another topic. Low-relevance and unlabelled texts never
become positives. The next round re-scores the texts with the model just trained, so labels the
base model got wrong can be corrected before they are trained on again.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from emerge.config import TrainingConfig
from emerge.errors import ConfigError, InputError
from emerge.topics import Topic, validate_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelfTrainingConfig:
    """How many rounds, which pseudo-labels count, and how the model trains on them.

    `min_relevance` is the calibrated relevance a pseudo-label needs (0 = unrelated text,
    1 = as close as the topic's own examples); among those, `per_topic` texts with the largest
    margin over the runner-up topic are kept per topic and round. `pairs_per_text` draws that
    many pairs per kept text (one with a topic anchor, the others with same-topic texts).
    """

    rounds: int = 1
    per_topic: int = 64
    min_relevance: float = 0.5
    pairs_per_text: int = 2
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 5e-5
    max_seq_length: int = 128
    seed: int = 42

    def __post_init__(self):
        for name in ("rounds", "per_topic", "pairs_per_text", "epochs", "max_seq_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError("batch_size", f"must be an integer >= 2, got {self.batch_size!r}")
        if not 0.0 <= float(self.min_relevance) <= 1.0:
            raise ConfigError("min_relevance", f"must be within [0, 1], got {self.min_relevance!r}")
        if not 0.0 < float(self.learning_rate) < 1.0:
            raise ConfigError("learning_rate", f"must be within (0, 1), got {self.learning_rate!r}")

    def training_config(self, round_index: int = 0) -> TrainingConfig:
        return TrainingConfig(pairing="same_cluster", epochs=self.epochs, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, max_seq_length=self.max_seq_length,
                              seed=self.seed + round_index, min_pairs=2)


def topic_text(topic: Topic) -> str:
    return f"{topic.name}: {topic.description}" if topic.description.strip() else topic.name


def confident_rows(best: np.ndarray, relevance: np.ndarray, margin: np.ndarray, n_topics: int,
                   per_topic: int, min_relevance: float) -> np.ndarray:
    """Row indices kept as pseudo-labels: relevance >= floor, then top `per_topic` margins per topic."""
    keep = []
    ok = relevance >= min_relevance
    for t in range(n_topics):
        rows = np.flatnonzero(ok & (best == t))
        if len(rows):
            keep.append(rows[np.argsort(-margin[rows], kind="stable")[:per_topic]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def self_training_pairs(topics: list[Topic], texts: list[str], labels: np.ndarray, docs: list[str] | None = None,
                        pairs_per_text: int = 2, seed: int = 0) -> pl.DataFrame:
    """(anchor, positive, group) rows; `labels[i]` is text i's topic index. Group = topic id."""
    rng = np.random.default_rng(seed)
    docs = docs if docs is not None else [str(i) for i in range(len(texts))]
    rows: list[tuple[str, str, str]] = []
    for t, topic in enumerate(topics):
        group = str(topic.id)
        anchors = [topic_text(topic), *topic.examples]
        rows += [(anchors[0], example, group) for example in topic.examples]
        members = np.flatnonzero(labels == t)
        for i in members.tolist():
            rows.append((anchors[int(rng.integers(len(anchors)))], texts[i], group))
            others = [int(j) for j in members if docs[j] != docs[i]]
            for j in rng.choice(others, size=min(pairs_per_text - 1, len(others)), replace=False).tolist() \
                    if others else []:
                rows.append((texts[i], texts[j], group))
    return pl.DataFrame(rows, schema=["anchor", "positive", "group"], orient="row")


@dataclass
class RoundReport:
    round: int
    pseudo_labelled: int
    topics_covered: int
    train_pairs: int
    train_loss: float | None
    seconds: float


@dataclass
class SelfTrainingReport:
    model_dir: Path
    rounds: list[RoundReport] = field(default_factory=list)
    training: object = None  # the last round's emerge.training.TrainingResult

    def as_dict(self) -> dict:
        return {"model_dir": str(self.model_dir), "rounds": [r.__dict__ for r in self.rounds]}


ScorerFactory = Callable[[str | Path], object]


def self_train(topics, texts: list[str], base_model: str | Path, output_dir: str | Path,
               config: SelfTrainingConfig | None = None, scorer: ScorerFactory | None = None,
               docs: list[str] | None = None, device: str = "cpu",
               progress: Callable[[str], None] | None = None,
               on_round: Callable[[int, Path], None] | None = None,
               on_log: Callable[[dict], None] | None = None) -> SelfTrainingReport:
    """Run `config.rounds` rounds of score -> select -> fine-tune; the last model lands in `output_dir`.

    `scorer(model_dir)` returns a prepared `LateInteractionCrossEncoder` (or anything with
    `score_texts` and `decide`) for that model; the default scores whole texts independently
    with the Emerge late-interaction scorer. Each round starts again from `base_model`, trained
    on labels from the previous round's model: fine-tuning a fine-tuned model compounds drift.
    `on_round(round, model_dir)` sees each round's model before an intermediate one is removed.
    """
    from emerge.training import train

    config = config or SelfTrainingConfig()
    topics = validate_topics(topics)
    texts = list(texts)
    if not texts:
        raise InputError("self-training needs unlabelled texts; got none")
    if docs is not None and len(docs) != len(texts):
        raise InputError(f"{len(docs)} document ids for {len(texts)} texts")
    say = progress or log.info
    scorer = scorer or default_scorer(topics, device)
    output_dir = Path(output_dir)
    report = SelfTrainingReport(output_dir)
    current = Path(base_model)
    for r in range(config.rounds):
        t0 = time.perf_counter()
        labeller = scorer(current)
        raw = labeller.score_texts(texts)
        best, relevance = labeller.decide(raw)
        margin = _margin(raw)
        rows = confident_rows(best, relevance, margin, len(topics), config.per_topic, config.min_relevance)
        labels = np.full(len(texts), -1, np.int64)
        labels[rows] = best[rows]
        pairs = self_training_pairs(topics, texts, labels, docs, config.pairs_per_text, config.seed + r)
        if pairs["group"].n_unique() < 2:
            raise InputError("self-training pairs fall in a single topic: no batch could hold a negative")
        covered = int(len(np.unique(best[rows])))
        say(f"self-training round {r + 1}/{config.rounds}: {len(rows)} of {len(texts)} texts pseudo-labelled "
            f"({covered} of {len(topics)} topics), {pairs.height} pairs")
        target = output_dir if r == config.rounds - 1 else output_dir.with_name(f"{output_dir.name}.round{r + 1}")
        result = train(pairs.sample(fraction=1.0, shuffle=True, seed=config.seed + r), base_model, target,
                       config.training_config(r), device=device, on_log=on_log)
        if current != Path(base_model) and current != output_dir:
            shutil.rmtree(current, ignore_errors=True)
        current = target
        report.training = result
        report.rounds.append(RoundReport(r + 1, len(rows), covered, pairs.height,
                                         result.train_loss, round(time.perf_counter() - t0, 2)))
        if on_round:
            on_round(r + 1, target)
    return report


def _margin(raw: np.ndarray) -> np.ndarray:
    if raw.shape[1] < 2:
        return raw[:, 0].copy()
    top2 = np.partition(raw, raw.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def default_scorer(topics: list[Topic], device: str = "cpu", **scorer_kwargs) -> ScorerFactory:
    """A factory of Emerge late-interaction scorers (independent mode) for a model directory."""
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder
    from emerge.late_interaction import LateInteractionCrossEncoder

    def make(model_dir):
        encoder = load_encoder(EncoderConfig(model_name_or_path=str(model_dir), device=device, batch_size=64))
        return LateInteractionCrossEncoder(topics=topics, prediction_mode="independent",
                                           **scorer_kwargs).prepare(encoder)

    return make
