"""Fine-tuning with sentence-transformers' `SentenceTransformerTrainer`: MNRL on pairs, distillation
on teacher-scored triplets.

Pairs train with MultipleNegativesRankingLoss: every other positive in the batch is a negative.
That is only right when no other row of the batch belongs with the anchor, so batches are
drawn by `GroupExclusiveBatchSampler` (one row per group per batch; groups come from
`emerge.training.pairs`). Rows that carry a `score` (the teacher's scores of the positive and each
negative, `emerge.training.distillation`) learn the teacher instead: by default its ranking of every text
of the batch (`emerge.training.distill_loss`), or sentence-transformers' `MarginMSELoss` over the row's own
passages only (`distill_loss="pairwise"`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from emerge.atomic import atomic_write_dir
from emerge.config import TrainingConfig
from emerge.errors import InputError

log = logging.getLogger(__name__)


def group_exclusive_batches(groups: np.ndarray, batch_size: int, seed: int) -> list[list[int]]:
    """Batches in which no group appears twice, draining large groups first so few rows are left over.

    Each batch takes one row from each of up to `batch_size` groups, drawn with probability
    proportional to the rows a group has left. Rows that can only form a batch of one (the
    last group standing) are dropped: a batch of one has no negative.
    """
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    queues = [list(rng.permutation(np.flatnonzero(inverse == g))) for g in range(inverse.max() + 1)] \
        if len(groups) else []
    left = np.array([len(q) for q in queues], dtype=np.int64)
    batches = []
    while (left > 0).sum() >= 2:
        live = np.flatnonzero(left > 0)
        take = rng.choice(live, size=min(batch_size, len(live)), replace=False, p=left[live] / left[live].sum())
        batches.append([int(queues[g][left[g] - 1]) for g in take])
        left[take] -= 1
    return batches


class GroupExclusiveBatchSampler:
    """A batch sampler for the trainer: `functools.partial(GroupExclusiveBatchSampler, groups=...)`.

    Planned once per epoch with seed + epoch, so runs are reproducible and epochs differ.
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None,
                 generator=None, seed: int = 0, *, groups: np.ndarray):
        if len(groups) != len(dataset):
            raise ValueError(f"{len(groups)} groups for {len(dataset)} rows")
        self.groups, self.batch_size, self.seed, self.epoch = np.asarray(groups), batch_size, seed, 0
        self._plan = group_exclusive_batches(self.groups, batch_size, seed)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # the trainer also announces epoch 0, already planned in __init__
            self.epoch = epoch
            self._plan = group_exclusive_batches(self.groups, self.batch_size, self.seed + epoch)

    def __iter__(self):
        return iter(self._plan)

    def __len__(self) -> int:
        return len(self._plan)


@dataclass
class TrainingResult:
    model_dir: Path
    train_pairs: int
    steps: int
    train_loss: float | None
    gradient_cached_steps: int = 0  # steps above max_tokens_per_forward, embedded in mini-batches


def load_sentence_transformer(model_path: str | Path, device: str, max_seq_length: int | None = None,
                              role: str = "base model"):
    """A SentenceTransformer from a local directory only (no hub lookup, no remote code)."""
    from sentence_transformers import SentenceTransformer

    path = Path(model_path)
    if not path.is_dir():
        raise InputError(f"{role} directory {str(path)!r} does not exist")
    model = SentenceTransformer(str(path), device=device, local_files_only=True, trust_remote_code=False)
    model.emerge_window = int(model.max_seq_length or max_seq_length or 512)  # the model's own window
    if max_seq_length is not None:
        model.max_seq_length = min(max_seq_length, model.max_seq_length or max_seq_length)
    return model


def set_dropout(model, rate: float) -> int:
    """Set every dropout layer's rate for training (BERT's attention reads its rate from its dropout
    layer too); the saved config keeps the model's own rates. Returns how many layers were set."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for layer in layers:
        layer.p = float(rate)
    return len(layers)


def mine_cross_group_negatives(model, pairs: pl.DataFrame, margin: float, batch_size: int = 64) -> pl.DataFrame:
    """Add a `negative` column: the most anchor-like positive of another group, below a margin.

    A candidate whose similarity to the anchor is within `margin` of the true positive's is
    skipped as a likely false negative (the usual margin filter of hard-negative mining).
    Rows without a candidate keep their pair and get an empty negative removed later.
    """
    from emerge.training.retrieval import encode

    anchors = encode(model, pairs["anchor"].to_list(), batch_size)
    positives = encode(model, pairs["positive"].to_list(), batch_size)
    groups = pairs["group"].to_numpy()
    pos_sim = np.einsum("ij,ij->i", anchors, positives)
    negatives = []
    for start in range(0, len(anchors), 1024):
        sims = anchors[start:start + 1024] @ positives.T
        block = slice(start, start + len(sims))
        sims[groups[block][:, None] == groups[None, :]] = -np.inf
        sims[sims > (pos_sim[block] - margin)[:, None]] = -np.inf
        best = sims.argmax(axis=1)
        ok = np.isfinite(sims[np.arange(len(sims)), best])
        negatives += [pairs["positive"][int(b)] if o else None for b, o in zip(best, ok)]
    return pairs.with_columns(pl.Series("negative", negatives, dtype=pl.String))


def _near_clusters(model, pairs: pl.DataFrame, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(near-cluster matrix, each row's cluster index) for recipe A's masked loss: centroids of the
    base model's vectors of each cluster's training spans (anchors and positives)."""
    from emerge.training.near_label_loss import group_centroids, near_groups

    _, index = np.unique(pairs["group"].to_numpy(), return_inverse=True)
    texts = pairs["anchor"].to_list() + pairs["positive"].to_list()
    centroids = group_centroids(model, texts, np.concatenate([index, index]))
    near = near_groups(centroids, fraction)
    log.info("recipe A: %d clusters, each keeps %.1f nearest clusters out of its negatives on average",
             len(near), near.sum(axis=1).mean())
    return near, index


def training_arguments(config: TrainingConfig, work: Path, rows: int, device: str, batch_sampler=None):
    """The trainer's arguments for `rows` training rows: no checkpoints, ~10 log lines a run."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    extra = {"batch_sampler": batch_sampler} if batch_sampler is not None else {}
    # transformers 5 reads a warmup_steps below 1 as a fraction of the steps (warmup_ratio is deprecated);
    # a ratio of 1 must become the step count, which warmup_steps=1.0 would read as one step
    steps = max(1, -(-rows // config.batch_size)) * config.train_epochs
    warmup = config.warmup_ratio if config.warmup_ratio < 1 else steps
    return SentenceTransformerTrainingArguments(
        output_dir=str(work / "checkpoints"), num_train_epochs=config.train_epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.lr,
        warmup_steps=warmup, seed=config.seed, data_seed=config.seed,
        save_strategy="no", report_to="none", logging_steps=max(1, rows // config.batch_size // 10),
        use_cpu=device == "cpu", disable_tqdm=False, dataloader_num_workers=0, **extra)


def log_relay(on_log: Callable[[dict], None] | None):
    """A trainer callback that hands each log line (step, max_steps, loss ...) to `on_log`."""
    from transformers import TrainerCallback

    class _Relay(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_log and logs:
                on_log({"step": state.global_step, "max_steps": state.max_steps, **logs})

    return _Relay()


def run_trainer(model, dataset, loss, config: TrainingConfig, output_dir: str | Path, device: str,
                on_log: Callable[[dict], None] | None = None, batch_sampler=None):
    """Train `model` in place with sentence-transformers' trainer; its scratch folder (no
    checkpoints are kept) sits beside `output_dir` and is removed afterwards. Returns the trainer's
    output (global_step, training_loss)."""
    from sentence_transformers import SentenceTransformerTrainer

    output_dir = Path(output_dir)
    work = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    args = training_arguments(config, work, len(dataset), device, batch_sampler=batch_sampler)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[log_relay(on_log)])
    out = trainer.train()
    shutil.rmtree(work, ignore_errors=True)
    return out


def train(pairs, base_model: str | Path, output_dir: str | Path, config: TrainingConfig,
          device: str = "cpu", on_log: Callable[[dict], None] | None = None) -> TrainingResult:
    """Fine-tune `base_model` on (anchor, positive[, negative]) pairs, or on a `DistillationSet`
    (teacher-scored triplets, trained with `config.distill_loss`); save to `output_dir`.

    The model is saved to a temporary sibling folder and swapped into place at the end
    (`emerge.atomic`), so a killed run never leaves a half-written model where a finished one
    (or the previous one) is expected.
    """
    import functools

    from datasets import Dataset
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss
    from transformers import set_seed

    from emerge.training.distillation import DistillationSet

    set_seed(config.seed)
    teacher = None
    if isinstance(pairs, DistillationSet):
        pairs, teacher = pairs.rows, (pairs.teacher if config.distill_loss != "pairwise" else None)
    model = load_sentence_transformer(base_model, device, config.max_seq_length)
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    if config.hard_negatives:
        pairs = mine_cross_group_negatives(model, pairs, config.hard_negative_margin)
        pairs = pairs.filter(pl.col("negative").is_not_null())
        if pairs.height < config.min_pairs:
            raise InputError(f"only {pairs.height} pairs kept a hard negative; min_pairs={config.min_pairs}")
    distilled = "score" in pairs.columns  # teacher scores: MarginMSE (emerge.training.distillation)
    negatives = [c for c in pairs.columns if c == "negative" or c.startswith("negative_")]
    columns = ["anchor", "positive", *negatives]
    labels = {"label": pairs["teacher_ids"]} if teacher is not None else {"score": pairs["score"]} if distilled else {}
    near = None
    if config.pairing == "same_cluster" and config.near_cluster_fraction > 0 and not distilled and not negatives:
        near, group_index = _near_clusters(model, pairs, config.near_cluster_fraction)
        labels = {"label": pl.Series(group_index)}
    dataset = Dataset.from_dict({c: pairs[c].to_list() for c in columns} | {k: v.to_list() for k, v in labels.items()})
    groups = pairs["group"].to_numpy()

    if teacher is not None:
        from emerge.training.distill_loss import InBatchDistillationLoss

        loss = InBatchDistillationLoss(model, teacher, kind=config.distill_loss.removeprefix("in_batch_"),
                                       scale=config.scale, max_tokens_per_forward=config.max_tokens_per_forward)
    elif near is not None:
        from emerge.training.near_label_loss import NearGroupMaskedRankingLoss

        loss = NearGroupMaskedRankingLoss(model, near, scale=config.scale)
    else:
        loss = MarginMSELoss(model) if distilled else MultipleNegativesRankingLoss(model, scale=config.scale)
    output_dir = Path(output_dir)
    out = run_trainer(model, dataset, loss, config, output_dir, device, on_log,
                      batch_sampler=functools.partial(GroupExclusiveBatchSampler, groups=groups))
    model.max_seq_length = model.emerge_window  # saved with its own window; training length is a config value
    atomic_write_dir(output_dir, lambda tmp: model.save(str(tmp)))
    return TrainingResult(model_dir=output_dir, train_pairs=len(dataset), steps=out.global_step,
                          train_loss=float(out.training_loss) if out.training_loss is not None else None,
                          gradient_cached_steps=getattr(loss, "cached_steps", 0))
