"""Late-interaction (ColBERT-style MaxSim) scoring of spans against user topics.

For a topic part P (its name, its description, or one example) and a span with token vectors
D, MaxSim(P -> D) = mean over P's tokens of the best cosine with any token of D: every word
of the topic must find support somewhere in the span, and the mean makes topics of different
lengths comparable. Spans are scored in bulk: per document one similarity matrix between its
tokens and all topic tokens, a sparse table for range maxima, so each span costs O(1) per
topic token regardless of its length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from emerge.encoder import TokenEncoder
from emerge.tokenize import tokenize_batch

log = logging.getLogger(__name__)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def text_token_vectors(encoder: TokenEncoder, texts: list[str]) -> tuple[list[np.ndarray], int]:
    """Unit token vectors of each text encoded alone, truncated to one model window.

    Returns (vectors, number of texts truncated). Topic parts longer than the model's window
    keep their first `max_seq_length - 2` tokens; the caller reports how many were cut.
    """
    width = encoder.max_seq_length - 2
    toks = tokenize_batch(encoder.tokenizer, list(texts))
    ids = [t[:width] for t, _ in toks]
    truncated = sum(len(t) > width for t, _ in toks)
    embs = encoder.token_embeddings(ids)
    return [normalise_rows(e) if len(e) else np.zeros((0, encoder.dim), np.float32) for e in embs], truncated


def range_max(matrix: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Row-wise max of matrix[s:e] for every (s, e), via a sparse table (O(n log n) build)."""
    n = len(matrix)
    lengths = ends - starts
    if len(starts) == 0:
        return np.zeros((0, matrix.shape[1]), matrix.dtype)
    if lengths.min() < 1 or ends.max() > n:
        raise ValueError("every range must be non-empty and inside the matrix")
    levels = [matrix]
    max_k = int(np.log2(lengths.max()))
    for k in range(1, max_k + 1):
        prev, half = levels[-1], 1 << (k - 1)
        levels.append(np.maximum(prev[:-half], prev[half:]))
    ks = np.floor(np.log2(lengths)).astype(np.int64)
    out = np.empty((len(starts), matrix.shape[1]), matrix.dtype)
    for k in np.unique(ks).tolist():
        sel = np.flatnonzero(ks == k)
        table = levels[k]
        out[sel] = np.maximum(table[starts[sel]], table[ends[sel] - (1 << k)])
    return out


@dataclass
class PartIndex:
    """Token vectors of every topic part, concatenated column-wise for one matrix product."""

    vectors: np.ndarray          # (m, d) unit token vectors of all parts
    offsets: np.ndarray          # (P,) first column of each part
    lengths: np.ndarray          # (P,) tokens per part
    part_topic: np.ndarray       # (P,) topic index of each part
    part_kind: list[str]         # name / description / example
    truncated: int = 0

    @classmethod
    def build(cls, encoder: TokenEncoder, parts: list[tuple[int, str, str]]) -> "PartIndex":
        """parts: (topic index, kind, text)."""
        vecs, truncated = text_token_vectors(encoder, [p[2] for p in parts])
        keep = [i for i, v in enumerate(vecs) if len(v)]
        if len(keep) < len(parts):
            log.warning("%d topic part(s) have no tokens and are ignored", len(parts) - len(keep))
        lengths = np.array([len(vecs[i]) for i in keep], dtype=np.int64)
        return cls(vectors=np.concatenate([vecs[i] for i in keep]), offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                   lengths=lengths, part_topic=np.array([parts[i][0] for i in keep], dtype=np.int64),
                   part_kind=[parts[i][1] for i in keep], truncated=truncated)

    def maxsim(self, doc_tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """(spans, parts) MaxSim of each part's tokens over each span's tokens (unit vectors)."""
        sims = doc_tokens @ self.vectors.T                    # (n, m) cosines
        best = range_max(sims, starts, ends)                  # (k, m) best span token per topic token
        return np.add.reduceat(best, self.offsets, axis=1) / self.lengths
