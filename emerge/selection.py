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
    float16). The first three steps need no vector (`per_document_choice`); only the spans they
    keep reach the cross-document step (`cross_document_choice`), which is what lets the asset
    graph load the vectors of those spans alone.
    """
    picked = per_document_choice(candidates, config, span_config, label_col)
    if picked.height == 0:
        return picked.drop("_pos")
    chosen = cross_document_choice(picked, vectors[picked["_pos"].to_numpy()], config, label_col)
    log.info("selection across documents: %d non-overlapping spans -> %d kept (near-duplicates and the cap "
             "removed)", picked.height, chosen.height)
    return chosen


def per_document_choice(candidates: pl.DataFrame, config: SelectionConfig, span_config: SpanConfig,
                        label_col: str = "cluster_id", first_pos: int = 0) -> pl.DataFrame:
    """The spans that survive the steps confined to one document: thresholds, the Pareto front per
    (document, label), the non-overlapping choice per document. Rows keep every column, plus
    `length_fit`, `score` and `_pos` (row position in `candidates`, offset by `first_pos` so that
    several sources' picks concatenate into one ordering). No vector is read: a source's picks
    do not depend on any other source."""
    started = time.perf_counter()
    if candidates.height == 0:
        return candidates.with_columns(pl.lit(None, pl.Float32).alias("length_fit"),
                                       pl.lit(None, pl.Float32).alias("score"), pl.lit(0, pl.Int64).alias("_pos"))
    fit = length_fit(candidates["n_tokens"].to_numpy(), span_config, config.target_len)
    frame = candidates.with_columns(pl.Series("length_fit", fit),
                                    ((pl.col("relevance") + pl.col("quality") + pl.Series(fit)) / 3)
                                    .cast(pl.Float32).alias("score"),
                                    (pl.int_range(pl.len(), dtype=pl.Int64) + first_pos).alias("_pos"))
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
    doc, lab = table["_doc"].to_numpy(), table["_lab"].to_numpy()
    objectives = table.select("relevance", "quality", "length_fit").to_numpy()
    on_front = np.zeros(table.height, bool)
    bounds = _group_bounds([doc, lab])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        on_front[lo:hi] = pareto_front(objectives[lo:hi])
    front = table.filter(pl.Series(on_front)).sort(["_doc", "score", "_pos"], descending=[False, True, False])
    f_doc, f_start, f_end = front["_doc"].to_numpy(), front["start_char"].to_numpy(), front["end_char"].to_numpy()
    chosen = np.zeros(front.height, bool)
    bounds = _group_bounds([f_doc])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chosen[lo + np.asarray(_non_overlapping(f_start[lo:hi], f_end[lo:hi]), np.int64)] = True
    picked_pos = front.filter(pl.Series(chosen))["_pos"]
    log.info("selection: %d candidate spans -> %d above the thresholds -> %d on a Pareto front -> "
             "%d non-overlapping (per document) in %.1f s (%.0f spans/s)", candidates.height, table.height,
             front.height, len(picked_pos), time.perf_counter() - started,
             candidates.height / max(time.perf_counter() - started, 1e-9))
    return frame.filter(pl.col("_pos").is_in(picked_pos.implode()))


def cross_document_choice(picked: pl.DataFrame, vectors: np.ndarray, config: SelectionConfig,
                          label_col: str = "cluster_id") -> pl.DataFrame:
    """Near-duplicate removal and the cap, per label, over the spans `per_document_choice` kept
    (from one or many sources; `vectors` row-aligned with `picked`). Ranked by label, score, `_pos`."""
    ordered = (picked.with_row_index("_row")
               .with_columns(pl.col(label_col).rank("dense").fill_null(0).alias("_lab"))
               .sort(["_lab", "score", "_pos"], descending=[False, True, False]))
    rows, lab = ordered["_row"].to_numpy(), ordered["_lab"].to_numpy()
    final: list[int] = []
    bounds = _group_bounds([lab])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        group = rows[lo:hi]
        kept = _drop_near_duplicates(vectors[group], config.near_duplicate_threshold, config.max_spans_per_cluster)
        final.extend(group[kept].tolist())
    return (picked[np.sort(np.asarray(final, np.int64))]
            .sort([label_col, "score", "_pos"], descending=[False, True, False]).drop("_pos"))
