"""Same-cluster contrastive training that keeps the clusters' own neighbourhood (recipe A).

MultipleNegativesRankingLoss treats every other row of a batch as a negative. With cluster-
exclusive batches that is every other *cluster*, and discovery finds clusters finer than the
topics a user thinks in (BBC News: ~32 clusters inside 5 sections). Pushing "Yukos / Oil" as far
from "GM / Car" as from "Champions League" spreads all clusters evenly and flattens the
hierarchy that k-means or a coarser reading of the clusters needs (plain MNRL lowers BBC News
k-means NMI at k = 5: BENCHMARKS.md, "Recipe A"). Here a row's in-batch negatives leave out the clusters
nearest to its own (by the base model's centroids): they are the likely false negatives at the
coarser level, so same-cluster spans still pull together and far clusters still push apart,
but neighbouring clusters keep their distance to each other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from emerge.vectors import l2_normalise


def near_groups(centroids: np.ndarray, fraction: float) -> np.ndarray:
    """(G x G) bool: True where one group is among the other's `fraction` nearest groups (by cosine
    of the centroids), either way round; the diagonal is False. `fraction` 0 marks none."""
    n = len(centroids)
    near = np.zeros((n, n), dtype=bool)
    k = min(n - 1, math.ceil(fraction * (n - 1))) if fraction > 0 else 0
    if k == 0:
        return near
    unit = l2_normalise(centroids)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :k]
    near[np.repeat(np.arange(n), k), nearest.ravel()] = True
    return near | near.T


def group_centroids(model, texts: list[str], groups: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Each group's mean base-model vector over `texts` (group indices 0..G-1)."""
    from emerge.training.retrieval import encode

    vectors = encode(model, texts, batch_size)
    sums = np.zeros((int(groups.max()) + 1, vectors.shape[1]))
    np.add.at(sums, groups, vectors)
    return sums / np.maximum(np.bincount(groups, minlength=len(sums)), 1)[:, None]


class NearGroupMaskedRankingLoss(nn.Module):
    """MNRL (cosine x `scale`, anchor -> every positive of the batch) in which the positives of
    groups marked in `near` are no negatives for each other. Labels are each row's group index."""

    def __init__(self, model, near: np.ndarray, scale: float = 20.0):
        super().__init__()
        self.model, self.scale = model, scale
        self.near = torch.from_numpy(near)

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        anchors, positives = (nn.functional.normalize(e, dim=-1)
                              for e in embed_columns(self.model, sentence_features))
        scores = anchors @ positives.T * self.scale
        groups = labels.detach().cpu().round().long()
        masked = self.near[groups][:, groups].to(scores.device)
        masked.fill_diagonal_(False)
        scores = scores.masked_fill(masked, float("-inf"))
        return nn.functional.cross_entropy(scores, torch.arange(len(scores), device=scores.device))
