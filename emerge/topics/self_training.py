"""Self-training from topics: the user's few examples plus their unlabelled texts make a better model.

One round: score the unlabelled texts against the topics, keep the confidently labelled ones
(calibrated relevance above a floor, then the largest margins over the runner-up topic, at most
`per_topic` per topic so no topic swamps the others), and fine-tune with MNRL on pairs that
only ever join texts of one topic:

* topic text ("name: description") -> each of its examples: the user's own words, exact labels;
* the topic text or one of its examples -> a confidently labelled text;
* two confidently labelled texts of one topic from different documents.

Batches are topic-exclusive (`emerge.training.trainer.GroupExclusiveBatchSampler`, group = topic), so an
in-batch negative is always a text of another topic. Low-relevance and unlabelled texts never
become positives. The next round re-scores the texts with the model just trained, so labels the
base model got wrong can be corrected before they are trained on again.

Contrastive training spreads the topics apart, which stretches the calibrated scale: with the
self-trained model more texts clear a fixed `relevance_threshold`, so fewer are "none of the
topics" (on CLINC150 out-of-scope recall at 0.4 fell from 0.59 to 0.43 on `val.csv`). The
trained model therefore gets its own threshold, chosen without a label: the one at which the
same share of the user's unlabelled texts is "none" as under the base model at its threshold
(`write_matched_threshold`). It is saved beside the model (`RELEVANCE_FILE`) and read by
`model_relevance_threshold`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from emerge.atomic import atomic_write_text
from emerge.config import TrainingConfig
from emerge.errors import ConfigError, InputError
from emerge.topics.topic import Topic, validate_topics

log = logging.getLogger(__name__)

RELEVANCE_FILE = "emerge_relevance.json"  # the self-trained model's relevance threshold and how it was set


def self_training_defaults() -> TrainingConfig:
    """How self-training fine-tunes, as measured (BENCHMARKS.md, self-training; BANKING77 seed 0):
    MNRL on topic pairs in topic-exclusive batches of 64, learning rate 5e-5, one epoch."""
    return TrainingConfig(pairing="same_cluster", batch_size=64, learning_rate=5e-5, min_pairs=2)


@dataclass(frozen=True)
class SelfTrainingConfig:
    """How many rounds, which pseudo-labels count, and how the model trains on them.

    `min_relevance` is the calibrated relevance a pseudo-label needs (0 = unrelated text,
    1 = as close as the topic's own examples); among those, `per_topic` texts with the largest
    margin over the runner-up topic are kept per topic and round. `pairs_per_text` draws that
    many pairs per kept text (one with a topic anchor, the others with same-topic texts).
    `threshold_sample` unlabelled texts (at most) are re-scored with the final model to set its
    relevance threshold (see the module docstring). `training` is how each round fine-tunes
    (epochs, batch, learning rate, length, seed: one `TrainingConfig`, its checks included);
    `with_training(...)` changes some of it.
    """

    rounds: int = 1
    per_topic: int = 64
    min_relevance: float = 0.5
    pairs_per_text: int = 2
    threshold_sample: int = 2000
    training: TrainingConfig = field(default_factory=self_training_defaults)

    def __post_init__(self):
        for name in ("rounds", "per_topic", "pairs_per_text", "threshold_sample"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {value!r}")
        if not 0.0 <= float(self.min_relevance) <= 1.0:
            raise ConfigError("min_relevance", f"must be within [0, 1], got {self.min_relevance!r}")
        if not isinstance(self.training, TrainingConfig):
            raise ConfigError("training", f"must be a TrainingConfig, got {type(self.training).__name__}")

    @property
    def seed(self) -> int:
        return self.training.seed

    def with_training(self, **changes) -> "SelfTrainingConfig":
        """This config with some training settings changed (e.g. `learning_rate=1e-4, seed=1`)."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes))

    def training_config(self, round_index: int = 0) -> TrainingConfig:
        return dataclasses.replace(self.training, seed=self.training.seed + round_index)


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


def model_relevance_threshold(model_dir: str | Path, default: float | None) -> float | None:
    """The relevance threshold saved with a self-trained model, else `default`."""
    path = Path(model_dir) / RELEVANCE_FILE
    if not path.is_file():
        return default
    return float(json.loads(path.read_text(encoding="utf-8"))["relevance_threshold"])


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
    training: object = None  # the last round's emerge.training.trainer.TrainingResult
    relevance_threshold: float | None = None  # the trained model's own (see `write_matched_threshold`)
    threshold_texts: list[str] = field(default_factory=list)  # the texts that set it
    base_relevance_threshold: float | None = None
    none_share: float | None = None  # share of the re-scored texts below the threshold (both models)

    def as_dict(self) -> dict:
        return {"model_dir": str(self.model_dir), "rounds": [r.__dict__ for r in self.rounds],
                "relevance_threshold": self.relevance_threshold,
                "base_relevance_threshold": self.base_relevance_threshold, "none_share": self.none_share}


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
    from emerge.training.trainer import train

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
    base_relevance = base_threshold = None
    for r in range(config.rounds):
        t0 = time.perf_counter()
        labeller = scorer(current)
        raw = labeller.score_texts(texts)
        best, relevance = labeller.decide(raw)
        if r == 0:
            base_relevance, base_threshold = relevance, float(labeller.relevance_threshold)
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
        if r == config.rounds - 1:
            _set_relevance_threshold(report, scorer(target), texts, base_relevance, base_threshold, config, say)
        if on_round:
            on_round(r + 1, target)
    return report


def _set_relevance_threshold(report: SelfTrainingReport, labeller, texts: list[str], base_relevance: np.ndarray,
                             base_threshold: float, config: SelfTrainingConfig, say) -> None:
    """Fix the "none" share on a seeded sample of the texts and save the final model's threshold."""
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(texts), size=min(config.threshold_sample, len(texts)), replace=False))
    report.threshold_texts = [texts[i] for i in sample]
    report.none_share = round(float(np.mean(base_relevance[sample] < base_threshold)), 4)
    report.base_relevance_threshold = base_threshold
    report.relevance_threshold = write_matched_threshold(report.model_dir, labeller, report.threshold_texts,
                                                         report.none_share, base_threshold)
    say(f"self-training: relevance threshold {report.relevance_threshold:.3f} for the trained model (base "
        f"{base_threshold:.2f}; {100 * report.none_share:.1f}% of {len(sample)} unlabelled texts fit no topic)")


def write_matched_threshold(model_dir: str | Path, labeller, texts: list[str], none_share: float,
                            base_threshold: float) -> float:
    """Score `texts` with `labeller` (the model in `model_dir`), take the threshold that leaves
    `none_share` of them below it, and save it beside the model (`RELEVANCE_FILE`). Also for a
    published interpolation of the trained model, which ranks differently from the trained one."""
    _, relevance = labeller.decide(labeller.score_texts(texts))
    threshold = round(float(np.clip(np.quantile(np.asarray(relevance, np.float64), none_share), 0.0, 1.0))
                      if len(relevance) else float(base_threshold), 4)
    atomic_write_text(Path(model_dir) / RELEVANCE_FILE, json.dumps({
        "relevance_threshold": threshold, "base_relevance_threshold": base_threshold, "none_share": none_share,
        "texts": len(texts), "rule": "the share of unlabelled texts below it equals the base model's share "
        "below its own threshold"}, indent=2))
    return threshold


def _margin(raw: np.ndarray) -> np.ndarray:
    if raw.shape[1] < 2:
        return raw[:, 0].copy()
    top2 = np.partition(raw, raw.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def default_scorer(topics: list[Topic], device: str = "cpu", **scorer_kwargs) -> ScorerFactory:
    """A factory of Emerge late-interaction scorers (independent mode) for a model directory."""
    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder
    from emerge.topics.late_interaction import DEFAULT_RELEVANCE_THRESHOLD, LateInteractionCrossEncoder

    def make(model_dir):
        encoder = load_encoder(EncoderConfig(model_name_or_path=str(model_dir), device=device, batch_size=64))
        options = {"relevance_threshold": model_relevance_threshold(model_dir, DEFAULT_RELEVANCE_THRESHOLD), **scorer_kwargs}
        return LateInteractionCrossEncoder(topics=topics, prediction_mode="independent", **options).prepare(encoder)

    return make
