"""`hdbscan.approximate_predict`, vectorised.

hdbscan's version loops over the points in Python (~25 us each): 40 s of the 160 s it took to
label 1.5M dense spans. This computes the same thing with array operations: mutual
reachability to the 2*min_samples nearest fit points, the nearest one's condensed-tree parent,
a walk up the (small) cluster tree for all points at once, then the membership probability.
Labels and probabilities equal hdbscan's (tested against it).
"""

from __future__ import annotations

import numpy as np


def _neighbours(clusterer, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest fit points: scipy's cKDTree on all cores for the euclidean metric (same
    neighbours as hdbscan's single-threaded sklearn tree, 2x faster on 2 cores), else hdbscan's
    own tree."""
    data = clusterer.prediction_data_
    if getattr(clusterer, "metric", "euclidean") != "euclidean":
        return data.tree.query(points, k=k)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(data.raw_data, np.float64))  # milliseconds for the <= 10k fit points
    dist, idx = tree.query(points, k=min(k, tree.n), workers=-1)
    return dist.reshape(len(points), -1), idx.reshape(len(points), -1)


def approximate_predict(clusterer, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of `points` in the fitted `clusterer`'s clustering."""
    data = clusterer.prediction_data_
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    cluster_map = data.cluster_map
    if n == 0 or not cluster_map:
        return np.full(n, -1, np.int64), np.zeros(n, np.float64)
    min_samples = clusterer.min_samples or clusterer.min_cluster_size
    dist, idx = _neighbours(clusterer, points, 2 * min_samples)
    core = data.core_distances
    mutual = np.maximum(np.maximum(core[idx], dist[:, [min_samples]]), dist)
    best = mutual.argmin(axis=1)
    nearest = idx[np.arange(n), best]
    reach = mutual[np.arange(n), best]
    with np.errstate(divide="ignore"):
        lam = np.where(reach > 0.0, 1.0 / np.where(reach > 0.0, reach, 1.0), np.finfo(np.float64).max)

    raw = clusterer.condensed_tree_._raw_tree
    n_fit = len(core)
    point_rows = raw[raw["child"] < n_fit]
    parent_of = np.empty(n_fit, np.int64)
    birth_of = np.empty(n_fit, np.float64)
    parent_of[point_rows["child"]] = point_rows["parent"]
    birth_of[point_rows["child"]] = point_rows["lambda_val"]
    cluster = parent_of[nearest]

    tree = data.cluster_tree
    root = int(tree["parent"].min())
    size = int(max(tree["child"].max(initial=root), root)) + 1
    up = np.arange(size, dtype=np.int64)  # clusters without a parent row stay put
    born = np.full(size, -np.inf)
    up[tree["child"]] = tree["parent"]
    born[tree["child"]] = tree["lambda_val"]
    climbing = birth_of[nearest] > lam
    while True:
        move = climbing & (cluster > root) & (born[cluster] >= lam)
        if not move.any():
            break
        cluster = np.where(move, up[cluster], cluster)
        climbing = move

    labels = np.full(n, -1, np.int64)
    max_lambda = np.zeros(n, np.float64)
    for c, label in cluster_map.items():
        hit = cluster == c
        labels[hit] = label
        max_lambda[hit] = data.max_lambdas[c]
    inside = labels >= 0
    prob = np.zeros(n, np.float64)
    positive = inside & (max_lambda > 0.0)
    prob[positive] = np.minimum(max_lambda[positive], lam[positive]) / max_lambda[positive]
    prob[inside & ~positive] = 1.0
    return labels, prob
