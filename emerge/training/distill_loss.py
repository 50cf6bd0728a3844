"""Distillation over every query-text pair of a batch, with the teacher's scores of all of them.

sentence-transformers' `MarginMSELoss` learns one margin per negative column: with one
negative, a batch of 32 teaches 32 numbers. The hybrid teacher (`emerge.training.distillation`) can
score every query of the batch against every text of it (2B - 1 candidates per query at one
negative), at the cost of the same forward passes. `kind="kl"` (the default) matches the
student's softmax over those candidates to the teacher's (KL divergence, both at `scale`), so
easy in-batch texts, which both rank far below, weigh almost nothing and the teacher's top
candidates carry the signal. `kind="mse"` matches raw margins to every text instead; measured
worse on Cranfield, since easy texts carry large BM25 margins that pull the whole space apart.
Texts of the query's own document other than its positive are left out (another row may have
drawn it as a negative); a relevant text in another row gets teacher probability rather than
being pushed away as MNRL would push it.

Memory: in one forward pass every text of a step keeps its activations until the backward pass,
so memory grows with batch size x texts per row x window (32 rows x 9 texts x 256 tokens took
~22 GB and was killed on a 23 GiB machine). A step larger than `max_tokens_per_forward` takes
sentence-transformers' GradCache path instead (Gao et al. 2021): embed every text without a graph,
take the loss's gradients w.r.t. the embeddings, then embed one mini-batch at a time again with
its graph (replaying the first pass's dropout) and push those gradients through it. The loss and
gradients are those of one pass with the same dropout masks; it costs one more forward pass, and
only one mini-batch's activations are alive at a time.
"""

from __future__ import annotations

import numpy as np
import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import nn

from emerge.training.distillation import InBatchTeacher


class InBatchDistillationLoss(CachedLossMixin, nn.Module):
    """Labels are each row's `teacher_ids` ([query, positive text, negative texts...]). A step
    whose texts hold more than `max_tokens_per_forward` (padded) tokens is embedded in mini-batches
    of at most that many (one text a pass where a text alone is longer), with gradient caching;
    None: always one forward pass."""

    def __init__(self, model, teacher: InBatchTeacher, kind: str = "kl", scale: float = 20.0,
                 max_tokens_per_forward: int | None = None):
        super().__init__()
        self.model, self.teacher, self.kind, self.scale = model, teacher, kind, scale
        self.max_tokens_per_forward = max_tokens_per_forward
        self.uses_gradient_cache = max_tokens_per_forward is not None
        self.mini_batch_size = 0
        self.cached_steps = 0  # how many steps took the gradient-caching path

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        sentence_features = list(sentence_features)
        shapes = [_padded_shape(f) for f in sentence_features]
        if (self.max_tokens_per_forward is not None and torch.is_grad_enabled() and None not in shapes
                and sum(rows * length for rows, length in shapes) > self.max_tokens_per_forward):
            self.mini_batch_size = max(1, self.max_tokens_per_forward // max(length for _, length in shapes))
            self.cached_steps += 1
            return self.forward_cached(sentence_features, labels)
        from sentence_transformers.base.losses.merged_forward import embed_columns

        return self.loss_of(embed_columns(self.model, sentence_features), labels)

    def calculate_loss(self, reps: list[list[torch.Tensor]], labels: torch.Tensor | None = None, *,
                       with_backward: bool = False) -> torch.Tensor:
        """GradCache's step (2): the loss of the mini-batches' embeddings, back-propagated to them."""
        loss = self.loss_of([torch.cat(mini_batches) for mini_batches in reps], labels)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss

    def loss_of(self, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The loss from each column's embeddings: [queries, positives, negatives...]."""
        # cosines, as the teacher's dense half (a no-op for models that end in Normalize)
        queries = nn.functional.normalize(embeddings[0], dim=-1)
        texts = nn.functional.normalize(torch.cat(embeddings[1:]), dim=-1)  # positives, then each negative column
        ids = labels.detach().cpu().numpy().round().astype(np.int64)
        query_ids, text_ids = ids[:, 0], ids[:, 1:].T.reshape(-1)
        target = torch.from_numpy(self.teacher.scores(query_ids, text_ids)).to(queries)
        student = queries @ texts.T
        rows = torch.arange(queries.shape[0], device=queries.device)
        own_doc = torch.from_numpy(self.teacher.query_docs[query_ids][:, None]
                                   == self.teacher.text_docs[text_ids][None, :]).to(queries.device)
        own_doc[rows, rows] = False  # the row's own positive stays
        if self.kind == "kl":
            log_student = torch.log_softmax((student * self.scale).masked_fill(own_doc, -1e4), dim=1)
            teacher = torch.softmax((target * self.scale).masked_fill(own_doc, -1e4), dim=1)
            return nn.functional.kl_div(log_student, teacher, reduction="batchmean")
        margin_student = student[rows, rows][:, None] - student
        margin_teacher = target[rows, rows][:, None] - target
        return ((margin_student - margin_teacher)[~own_doc] ** 2).mean()

    @property
    def citation(self) -> str:
        return "Hofstätter et al. 2021, Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation"


def _padded_shape(feature: dict) -> tuple[int, int] | None:
    """(texts, padded length) of a tokenized column; None for inputs without a 2-D mask or ids
    (e.g. flattened ones), which then take the single pass."""
    for key in ("attention_mask", "input_ids"):
        value = feature.get(key)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            return int(value.shape[0]), int(value.shape[1])
    return None
