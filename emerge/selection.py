"""Pareto selection: keep spans that are relevant, well-formed, well-sized and not redundant."""

from __future__ import annotations

import numpy as np
import polars as pl

from emerge.config import SelectionConfig, SpanConfig


def length_fit(n_tokens: np.ndarray, span_config: SpanConfig, target_len: int | None) -> np.ndarray:
    """1 at the target length, falling linearly to 0 at the far end of the allowed range."""
    target = target_len or (span_config.min_len + span_config.max_len) / 2
    reach = max(target - span_config.min_len, span_config.max_len - target, 1)
    return np.clip(1.0 - np.abs(n_tokens - target) / reach, 0.0, 1.0).astype(np.float32)


def pareto_front(objectives: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Boolean mask of the non-dominated rows (maximising every column)."""
    n = len(objectives)
    keep = np.ones(n, dtype=bool)
    for lo in range(0, n, chunk):
        block = objectives[lo:lo + chunk, None, :]
        ge = (objectives[None, :, :] >= block).all(axis=2)
        gt = (objectives[None, :, :] > block).any(axis=2)
        keep[lo:lo + chunk] = ~(ge & gt).any(axis=1)
    return keep


def _non_overlapping(starts: list[int], ends: list[int], order: np.ndarray) -> list[int]:
    taken: list[tuple[int, int]] = []
    picked = []
    for i in order.tolist():
        s, e = starts[i], ends[i]
        if all(e <= a or s >= b for a, b in taken):
            taken.append((s, e))
            picked.append(i)
    return picked


def _drop_near_duplicates(vectors: np.ndarray, order: np.ndarray, threshold: float) -> list[int]:
    kept: list[int] = []
    kept_vecs = np.zeros((0, vectors.shape[1]), np.float32)
    for i in order.tolist():
        if len(kept) and float((kept_vecs @ vectors[i]).max()) >= threshold:
            continue
        kept.append(i)
        kept_vecs = np.vstack([kept_vecs, vectors[i][None, :]])
    return kept


def select_spans(candidates: pl.DataFrame, vectors: np.ndarray, config: SelectionConfig,
                 span_config: SpanConfig, label_col: str = "cluster_id") -> pl.DataFrame:
    """The curated rows, ranked, with `length_fit` and `score` columns added.

    Steps: thresholds -> Pareto front per (document, label) over (relevance, quality,
    length_fit) -> greedy non-overlapping choice per document by score -> near-duplicate
    removal per label -> per-label cap. `candidates` rows align with `vectors`.
    """
    if candidates.height == 0:
        return candidates.with_columns(pl.lit(None, pl.Float32).alias("length_fit"),
                                       pl.lit(None, pl.Float32).alias("score"))
    fit = length_fit(candidates["n_tokens"].to_numpy(), span_config, config.target_len)
    frame = candidates.with_columns(pl.Series("length_fit", fit),
                                    ((pl.col("relevance") + pl.col("quality") + pl.Series(fit)) / 3)
                                    .cast(pl.Float32).alias("score")).with_row_index("_pos")
    eligible = (pl.col("quality") >= config.quality_threshold) & (pl.col("relevance") >= config.min_relevance)
    if not config.include_noise:  # noise = cluster -1 or no topic (null)
        label = pl.col(label_col)
        eligible = eligible & label.is_not_null()
        if candidates.schema[label_col].is_numeric():
            eligible = eligible & (label >= 0)
    frame = frame.filter(eligible)
    chosen: list[int] = []
    for doc in frame.partition_by("doc_id", maintain_order=True):
        front_rows = []
        for group in doc.partition_by(label_col, maintain_order=True):
            obj = group.select("relevance", "quality", "length_fit").to_numpy()
            front_rows.extend(group["_pos"].filter(pl.Series(pareto_front(obj))).to_list())
        front = doc.filter(pl.col("_pos").is_in(front_rows)).sort("score", descending=True)
        picked = _non_overlapping(front["start_char"].to_list(), front["end_char"].to_list(),
                                  np.arange(front.height))
        chosen.extend(front["_pos"].gather(picked).to_list())
    selected = frame.filter(pl.col("_pos").is_in(chosen)).sort("score", descending=True)
    final: list[int] = []
    for group in selected.partition_by(label_col, maintain_order=True):
        pos = group["_pos"].to_numpy()
        kept = _drop_near_duplicates(vectors[pos], np.arange(len(pos)), config.near_duplicate_threshold)
        if config.max_spans_per_cluster is not None:
            kept = kept[:config.max_spans_per_cluster]
        final.extend(pos[kept].tolist())
    return (selected.filter(pl.col("_pos").is_in(final))
            .sort([label_col, "score"], descending=[False, True]).drop("_pos"))
