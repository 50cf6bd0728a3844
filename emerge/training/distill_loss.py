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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emerge.training.distillation import InBatchTeacher


class InBatchDistillationLoss(nn.Module):
    """Labels are each row's `teacher_ids` ([query, positive text, negative texts...])."""

    def __init__(self, model, teacher: InBatchTeacher, kind: str = "kl", scale: float = 20.0):
        super().__init__()
        self.model, self.teacher, self.kind, self.scale = model, teacher, kind, scale

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
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
