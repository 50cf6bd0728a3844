"""Dense, overlapping spans over tokenizer offsets, snapped to word boundaries.

Spans are defined in token space (so lengths mean what the model sees) but stored with
character offsets into the normalised document, so `text[start_char:end_char]` is always
the span's text and provenance survives any later step.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from emerge.config import SpanConfig

SPAN_SCHEMA = {"span_idx": pl.Int64, "doc_id": pl.String, "source": pl.String, "tok_start": pl.Int32,
               "tok_end": pl.Int32, "n_tokens": pl.Int32, "start_char": pl.Int64, "end_char": pl.Int64,
               "text_span": pl.String}


def word_boundaries(text: str, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token indices where a word starts, and exclusive token indices where a word ends.

    A word is a maximal run of non-whitespace characters, so trailing punctuation stays
    with its word ("growth," is one word) and a span never starts or ends mid-word.
    """
    n = len(offsets)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    starts_c, ends_c = offsets[:, 0], offsets[:, 1]
    before = np.array([True if s == 0 else text[s - 1].isspace() for s in starts_c.tolist()])
    after = np.array([True if e >= len(text) else text[e].isspace() for e in ends_c.tolist()])
    word_start = np.flatnonzero(before)
    word_end = np.flatnonzero(after) + 1
    return word_start, word_end


def span_bounds(text: str, offsets: np.ndarray, config: SpanConfig) -> tuple[np.ndarray, np.ndarray]:
    """(tok_start, tok_end) pairs, exclusive end, sorted by start then end, unique.

    Starts sit every `stride` tokens (snapped forward to a word start); for each start, target
    lengths min_len, min_len+step, ..., max_len snap back to the nearest word end. Fully
    vectorised: a 5,000-token document costs milliseconds.
    """
    n = len(offsets)
    word_start, word_end = word_boundaries(text, np.asarray(offsets))
    if n < config.min_len or len(word_start) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    grid = np.arange(0, n, config.stride)
    snapped = np.searchsorted(word_start, grid, side="left")
    starts = np.unique(word_start[snapped[snapped < len(word_start)]])
    lengths = np.arange(config.min_len, config.max_len + 1, config.step)
    if lengths[-1] != config.max_len:
        lengths = np.append(lengths, config.max_len)
    targets = starts[:, None] + lengths[None, :]
    idx = np.searchsorted(word_end, targets, side="right") - 1
    ok = idx >= 0
    ends = np.where(ok, word_end[np.clip(idx, 0, None)], -1)
    span_len = ends - starts[:, None]
    valid = ok & (span_len >= config.min_len) & (span_len <= config.max_len)
    s = np.broadcast_to(starts[:, None], valid.shape)[valid]
    e = ends[valid]
    if len(s) == 0:
        return s, e
    pairs = np.unique(np.stack([s, e], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def build_spans(documents: pl.DataFrame, tokenizer, config: SpanConfig,
                batch_size: int = 256) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All spans of all documents, plus one skip row per document that yields no span.

    Returns (spans, skipped) where skipped has doc_id/source/reason/detail.
    """
    from emerge.tokenize import tokenize_batch

    frames, skipped = [], []
    next_idx = 0
    texts = documents["text"].to_list()
    doc_ids = documents["doc_id"].to_list()
    sources = documents["source"].to_list()
    for lo in range(0, len(texts), batch_size):
        chunk = texts[lo:lo + batch_size]
        for j, (_ids, offsets) in enumerate(tokenize_batch(tokenizer, chunk)):
            i = lo + j
            text = chunk[j]
            s, e = span_bounds(text, offsets, config)
            if len(s) == 0:
                skipped.append({"doc_id": doc_ids[i], "source": sources[i], "reason": "shorter_than_min_len",
                                "detail": f"{len(offsets)} tokens; min_len={config.min_len}"})
                continue
            start_char = offsets[s, 0].astype(np.int64)
            end_char = offsets[e - 1, 1].astype(np.int64)
            frames.append(pl.DataFrame({
                "span_idx": np.arange(next_idx, next_idx + len(s), dtype=np.int64),
                "doc_id": [doc_ids[i]] * len(s), "source": [sources[i]] * len(s),
                "tok_start": s.astype(np.int32), "tok_end": e.astype(np.int32),
                "n_tokens": (e - s).astype(np.int32), "start_char": start_char, "end_char": end_char,
                "text_span": [text[a:b] for a, b in zip(start_char.tolist(), end_char.tolist())],
            }, schema=SPAN_SCHEMA))
            next_idx += len(s)
    spans = pl.concat(frames) if frames else pl.DataFrame(schema=SPAN_SCHEMA)
    skip_df = pl.DataFrame(skipped, schema={"doc_id": pl.String, "source": pl.String, "reason": pl.String,
                                            "detail": pl.String})
    return spans, skip_df
