"""Stable cluster ids across refits: a refit must not relabel the world.

HDBSCAN numbers clusters 0..k-1 in whatever order it finds them, so after a refit "cluster 3"
can be a different topic. Downstream users (datasets, fine-tuning, dashboards) key on the id.
`match_cluster_ids` maps each new cluster to the previous fit's cluster with the most similar
centroid (cosine in embedding space, not UMAP space: UMAP coordinates of two fits are not
comparable), as a one-to-one Hungarian assignment, accepting a pair only above
`min_similarity`. A new cluster without a match gets an id no fit ever used, so an old id
never comes back meaning something else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emerge.vectors import l2_normalise

DEFAULT_MIN_SIMILARITY = 0.8


def check_min_similarity(min_similarity: float, field: str = "min_similarity") -> None:
    """ConfigError unless `min_similarity` (a cosine) is within [0, 1]."""
    from emerge.errors import ConfigError

    if not 0.0 <= float(min_similarity) <= 1.0:
        raise ConfigError(field, f"must be within [0, 1], got {min_similarity!r}")


@dataclass
class IdAssignment:
    """How a refit's raw HDBSCAN labels became stable ids."""

    mapping: dict[int, int]                  # raw label of this fit -> stable id
    similarity: dict[int, float]             # stable id -> cosine to the previous centroid (matched only)
    new_ids: list[int] = field(default_factory=list)      # stable ids first used by this fit
    retired_ids: list[int] = field(default_factory=list)  # previous ids no new cluster matched
    next_id: int = 0                         # smallest id never used so far

    def rows(self) -> list[dict]:
        """One row per stable id of this fit plus one per retired id, for metadata tables."""
        out = [{"cluster_id": sid, "raw_label": raw,
                "previous_id": sid if sid in self.similarity else None,
                "similarity": round(self.similarity[sid], 4) if sid in self.similarity else None,
                "status": "matched" if sid in self.similarity else "new"}
               for raw, sid in sorted(self.mapping.items(), key=lambda kv: kv[1])]
        out += [{"cluster_id": None, "raw_label": None, "previous_id": rid, "similarity": None,
                 "status": "retired"} for rid in self.retired_ids]
        return out


def match_cluster_ids(new_centroids: dict[int, np.ndarray], previous_centroids: dict[int, np.ndarray] | None,
                      next_id: int = 0, min_similarity: float = DEFAULT_MIN_SIMILARITY) -> IdAssignment:
    """Stable ids for `new_centroids` (raw label -> centroid), given the previous fit's
    (stable id -> centroid) and the smallest id never used (`next_id`).

    Without a previous fit (or with centroids of another dimension, i.e. another model) every
    cluster is new. The assignment maximises the total cosine similarity
    (`scipy.optimize.linear_sum_assignment`); pairs below `min_similarity` are dropped.
    """
    check_min_similarity(min_similarity)
    previous_centroids = previous_centroids or {}
    raw = sorted(new_centroids)
    old = sorted(previous_centroids)
    next_id = max([next_id, *(i + 1 for i in old)])
    mapping: dict[int, int] = {}
    similarity: dict[int, float] = {}
    comparable = (raw and old and np.asarray(new_centroids[raw[0]]).shape
                  == np.asarray(previous_centroids[old[0]]).shape)
    if comparable:
        from scipy.optimize import linear_sum_assignment

        sims = (l2_normalise(np.stack([new_centroids[r] for r in raw]))
                @ l2_normalise(np.stack([previous_centroids[o] for o in old])).T)
        rows, cols = linear_sum_assignment(sims, maximize=True)
        for i, j in zip(rows.tolist(), cols.tolist()):
            if sims[i, j] >= min_similarity:
                mapping[raw[i]] = old[j]
                similarity[old[j]] = float(sims[i, j])
    new_ids = []
    for r in raw:  # unmatched: fresh ids in raw-label order, so a first fit keeps 0..k-1
        if r not in mapping:
            mapping[r] = next_id
            new_ids.append(next_id)
            next_id += 1
    retired = sorted(set(old) - set(similarity))
    return IdAssignment(mapping=mapping, similarity=similarity, new_ids=new_ids, retired_ids=retired,
                        next_id=next_id)
