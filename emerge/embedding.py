"""The span embedding stage: late chunking over whole documents, streamed in document chunks."""

from __future__ import annotations

import numpy as np
import polars as pl

from emerge.encoder import TokenEncoder, l2_normalise, pool_spans
from emerge.tokenize import tokenize_batch


def embed_spans(documents: pl.DataFrame, spans: pl.DataFrame, encoder: TokenEncoder,
                docs_per_chunk: int = 32, progress: bool = False) -> np.ndarray:
    """L2-normalised late-chunked vector for every row of `spans`, in the same order.

    Memory stays bounded by `docs_per_chunk` documents' token matrices plus the output.
    """
    out = np.zeros((spans.height, encoder.dim), dtype=np.float32)
    if spans.height == 0:
        return out
    doc_rows = spans.with_row_index("_row").group_by("doc_id", maintain_order=True).agg(
        pl.col("_row"), pl.col("tok_start"), pl.col("tok_end"))
    texts = dict(zip(documents["doc_id"].to_list(), documents["text"].to_list()))
    missing = [d for d in doc_rows["doc_id"].to_list() if d not in texts]
    if missing:
        raise ValueError(f"{len(missing)} span document(s) are not among the documents, e.g. {missing[:3]}")
    iterator = range(0, doc_rows.height, docs_per_chunk)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="late chunking", unit="chunk", total=len(iterator))
    for lo in iterator:
        chunk = doc_rows.slice(lo, docs_per_chunk)
        toks = tokenize_batch(encoder.tokenizer, [texts[d] for d in chunk["doc_id"].to_list()])
        token_embs = encoder.token_embeddings([ids for ids, _ in toks])
        for t_emb, rows, s, e in zip(token_embs, chunk["_row"].to_list(), chunk["tok_start"].to_list(),
                                     chunk["tok_end"].to_list()):
            out[np.asarray(rows)] = pool_spans(t_emb, np.asarray(s), np.asarray(e))
    return l2_normalise(out)


def embeddings_frame(spans: pl.DataFrame, vectors: np.ndarray) -> pl.DataFrame:
    """Arrow-native storage: one fixed-size float32 array per span, keyed by span_idx."""
    return pl.DataFrame({
        "span_idx": spans["span_idx"], "doc_id": spans["doc_id"],
        "embedding": pl.Series("embedding", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])),
    })


def vectors_of(frame: pl.DataFrame) -> np.ndarray:
    """(n, d) float32 view of an embeddings frame's `embedding` column."""
    if frame.height == 0:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(frame["embedding"].to_numpy(), dtype=np.float32)
