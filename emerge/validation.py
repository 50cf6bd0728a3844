"""Data invariants the pipeline promises, as plain functions (the Dagster asset checks call these).

Each returns what is wrong (rows, counts or messages), empty when all is well, so the same
functions serve asset checks, tests and notebooks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl


def span_substring_violations(spans: pl.DataFrame, texts: dict[str, str]) -> pl.DataFrame:
    """Spans whose `text_span` is not `texts[doc_id][start_char:end_char]` (or whose document is unknown)."""
    bad = []
    for row in spans.select("span_idx", "doc_id", "start_char", "end_char", "text_span").iter_rows(named=True):
        text = texts.get(row["doc_id"])
        if text is None or text[row["start_char"]:row["end_char"]] != row["text_span"]:
            bad.append(row)
    return pl.DataFrame(bad, schema={"span_idx": pl.Int64, "doc_id": pl.String, "start_char": pl.Int64,
                                     "end_char": pl.Int64, "text_span": pl.String})


def span_row_problems(spans: pl.DataFrame) -> dict[str, int]:
    """Counts of empty spans, repeated (doc_id, start_char, end_char) rows and repeated span_idx."""
    empty = spans.filter(pl.col("text_span").is_null() | (pl.col("text_span").str.strip_chars() == "")
                         | (pl.col("end_char") <= pl.col("start_char"))).height
    duplicate = spans.height - spans.select("doc_id", "start_char", "end_char").n_unique() if spans.height else 0
    duplicate_idx = spans.height - spans["span_idx"].n_unique() if spans.height else 0
    return {k: v for k, v in {"empty_spans": empty, "duplicate_spans": duplicate,
                              "duplicate_span_idx": duplicate_idx}.items() if v}


def embedding_problems(vectors: np.ndarray, min_norm: float = 1e-6) -> dict[str, int]:
    """Rows with NaN/inf, and rows whose norm is (near) zero: both poison cosine similarity."""
    vectors = np.asarray(vectors)
    if vectors.size == 0:
        return {}
    non_finite = zero = 0
    for lo in range(0, len(vectors), 65536):  # float32 blocks: no corpus-sized copy
        block = np.asarray(vectors[lo:lo + 65536], np.float32)
        finite = np.isfinite(block).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(block), block, 0.0), axis=1)
        non_finite += int((~finite).sum())
        zero += int((finite & (norms < min_norm)).sum())
    return {k: v for k, v in {"non_finite_rows": non_finite, "zero_rows": zero}.items() if v}


def unaccounted_files(folder: str | Path, inventory: pl.DataFrame) -> list[str]:
    """Entries under `folder` (links followed) with no row in the raw_texts inventory.

    Listed with `os.walk`, not with the reader's own walk, so a reader that silently drops a
    kind of entry is caught. An entry is accounted for by a row for its own path or for a
    folder above it (a skipped duplicate or looping folder covers what lies beneath)."""
    import os

    folder = Path(folder)
    rows = set(inventory["path"].to_list())
    missing, visited = [], set()
    for here, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()  # the reader's order, so both reach a folder linked twice by the same path first
        real = os.path.realpath(here)
        rel_here = Path(here).relative_to(folder).as_posix()
        if real in visited:  # a second way into a folder (or a loop): the reader must say why it stopped
            dirs[:] = []
            if not any(p in rows for p in _self_and_parents(rel_here)):
                missing.append(rel_here + "/")
            continue
        visited.add(real)
        for name in names:
            rel = name if rel_here == "." else f"{rel_here}/{name}"
            if not any(p in rows for p in _self_and_parents(rel)):
                missing.append(rel)
    return sorted(missing)


def _self_and_parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def schema_problems(df: pl.DataFrame, required: dict[str, tuple[type, ...]],
                    unit_interval: tuple[str, ...] = (), not_null: tuple[str, ...] = ()) -> list[str]:
    """Missing columns, wrong dtype classes, nulls where none may be, values outside [0, 1]."""
    problems = []
    for col, dtypes in required.items():
        if col not in df.columns:
            problems.append(f"missing column {col}")
        elif not isinstance(df.schema[col], dtypes):
            problems.append(f"{col} is {df.schema[col]}, expected {'/'.join(d.__name__ for d in dtypes)}")
    for col in not_null:
        if col in df.columns and df[col].null_count():
            problems.append(f"{col} has {df[col].null_count()} nulls")
    for col in unit_interval:
        if col in df.columns and df.height and not df[col].is_between(0.0, 1.0).all():
            problems.append(f"{col} outside [0, 1]")
    return problems


def label_shares(df: pl.DataFrame, label_col: str) -> tuple[float, float]:
    """(largest label's share of rows, smallest/largest label count); (0, 0) for an empty frame."""
    if df.height == 0:
        return 0.0, 0.0
    counts = df.group_by(label_col).len()["len"]
    return float(counts.max() / df.height), float(counts.min() / counts.max())


def topic_score_problems(topic_scores: pl.DataFrame, spans: pl.DataFrame) -> dict[str, int]:
    """Scored spans that are not spans of the source or are scored twice, relevance outside [0, 1]
    or not finite, and topic ids without a name."""
    problems = {}
    unknown = topic_scores.filter(~pl.col("span_idx").is_in(spans["span_idx"].implode())).height
    if unknown:
        problems["unknown_span_idx"] = unknown
    repeated = topic_scores.height - topic_scores["span_idx"].n_unique()
    if repeated:
        problems["spans_scored_twice"] = repeated
    r = pl.col("relevance")
    bad = topic_scores.filter(r.is_null() | r.is_nan() | (r < 0) | (r > 1)).height
    if bad:
        problems["relevance_outside_unit_interval"] = int(bad)
    unnamed = topic_scores.filter(pl.col("topic_id").is_not_null() & pl.col("topic_name").is_null()).height
    if unnamed:
        problems["topic_without_name"] = unnamed
    return problems
