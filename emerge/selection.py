"""Pareto selection: keep spans that are relevant, well-formed, well-sized and not redundant."""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from emerge.config import SelectionConfig, SpanConfig

log = logging.getLogger(__name__)


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


def _non_overlapping(starts: np.ndarray, ends: np.ndarray) -> list[int]:
    """Greedy in the given order: keep a span unless it overlaps one already kept."""
    taken: list[tuple[int, int]] = []
    picked = []
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        if all(e <= a or s >= b for a, b in taken):
            taken.append((s, e))
            picked.append(i)
    return picked


def _drop_near_duplicates(vectors: np.ndarray, threshold: float, limit: int | None = None) -> list[int]:
    """Greedy in row order: keep a row unless its cosine to a kept row reaches `threshold`.
    Kept vectors go into a preallocated buffer (growing it by vstack per kept row was quadratic)."""
    kept: list[int] = []
    buffer = np.empty((min(len(vectors), limit or len(vectors)), vectors.shape[1]), np.float32)
    for i in range(len(vectors)):
        v = np.asarray(vectors[i], np.float32)
        if kept and float((buffer[:len(kept)] @ v).max()) >= threshold:
            continue
        buffer[len(kept)] = v
        kept.append(i)
        if limit is not None and len(kept) >= limit:
            break
    return kept


def _group_bounds(keys: list[np.ndarray]) -> np.ndarray:
    """Start offsets of runs of equal key tuples in already-sorted arrays, plus the end."""
    n = len(keys[0])
    change = np.zeros(n, bool)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    return np.append(np.flatnonzero(change), n)


def select_spans(candidates: pl.DataFrame, vectors: np.ndarray, config: SelectionConfig,
                 span_config: SpanConfig, label_col: str = "cluster_id") -> pl.DataFrame:
    """The curated rows, ranked, with `length_fit` and `score` columns added.

    Steps: thresholds -> Pareto front per (document, label) over (relevance, quality,
    length_fit) -> greedy non-overlapping choice per document by score -> near-duplicate
    removal per label -> per-label cap. `candidates` rows align with `vectors` (float32 or
    float16). Groups are walked as numpy slices of one sorted table, not as data frames.
    """
    started = time.perf_counter()
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
    table = (frame.filter(eligible)
             .select("_pos", "doc_id", label_col, "relevance", "quality", "length_fit", "score", "start_char",
                     "end_char")
             .with_columns(pl.col("doc_id").rank("dense").alias("_doc"),
                           pl.col(label_col).rank("dense").fill_null(0).alias("_lab"))
             .sort(["_doc", "_lab", "_pos"]))
    pos = table["_pos"].to_numpy()
    doc, lab = table["_doc"].to_numpy(), table["_lab"].to_numpy()
    objectives = table.select("relevance", "quality", "length_fit").to_numpy()
    on_front = np.zeros(len(pos), bool)
    bounds = _group_bounds([doc, lab])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        on_front[lo:hi] = pareto_front(objectives[lo:hi])
    front = table.filter(pl.Series(on_front)).sort(["_doc", "score", "_pos"], descending=[False, True, False])
    f_doc, f_start, f_end = front["_doc"].to_numpy(), front["start_char"].to_numpy(), front["end_char"].to_numpy()
    chosen = np.zeros(front.height, bool)
    bounds = _group_bounds([f_doc])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chosen[lo + np.asarray(_non_overlapping(f_start[lo:hi], f_end[lo:hi]), np.int64)] = True
    picked = front.filter(pl.Series(chosen)).sort(["_lab", "score", "_pos"], descending=[False, True, False])
    p_pos, p_lab = picked["_pos"].to_numpy(), picked["_lab"].to_numpy()
    final: list[int] = []
    bounds = _group_bounds([p_lab])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rows = p_pos[lo:hi]
        kept = _drop_near_duplicates(vectors[rows], config.near_duplicate_threshold, config.max_spans_per_cluster)
        final.extend(rows[kept].tolist())
    seconds = time.perf_counter() - started
    log.info("selection: %d candidate spans -> %d above the thresholds -> %d on a Pareto front -> %d non-overlapping "
             "-> %d kept (near-duplicates and the cap removed) in %.1f s (%.0f spans/s)", candidates.height,
             table.height, front.height, picked.height, len(final), seconds, candidates.height / max(seconds, 1e-9))
    return (frame.filter(pl.col("_pos").is_in(final))
            .sort([label_col, "score", "_pos"], descending=[False, True, False]).drop("_pos"))
