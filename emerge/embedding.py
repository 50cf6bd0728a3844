"""The span embedding stage: late chunking over whole documents, streamed in document chunks.

Span vectors are kept and stored as float16 (`SPAN_VECTOR_DTYPE`): they are unit vectors, so
half precision changes a cosine by < 1e-3 (far below any threshold the pipeline uses) and
halves the largest thing Emerge holds: 1.5M dense spans are 1.15 GB instead of 2.3 GB, on disk
and in memory. Consumers convert bounded blocks to float32 before any matrix product.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from emerge.encoder import TokenEncoder
from emerge.tokenize import tokenize_batch


def pool_spans(token_emb: np.ndarray, tok_start: np.ndarray, tok_end: np.ndarray,
               normalise: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Mean of token_emb[s:e] for every (s, e), via prefix sums: O(d) per span, exact.

    Prefix sums run in float32 up to 4,096 tokens (error < 1e-5 relative there, half the memory
    traffic) and in float64 beyond, so long documents lose no precision to cancellation. With
    `normalise=True` the unit vector is returned directly (the mean's 1/(e-s) cancels, so it is
    skipped). Runs on torch's CPU kernels (all cores; 2x numpy's single-threaded passes) and,
    given `out` (a float16/float32 array of shape (len(tok_start), d)), casts straight into it
    instead of allocating the result and copying it again.
    """
    import torch

    dtype = torch.float32 if len(token_emb) <= 4096 else torch.float64
    with torch.inference_mode():
        tokens = torch.as_tensor(token_emb).to(dtype)
        prefix = torch.zeros((len(tokens) + 1, tokens.shape[1]), dtype=dtype)
        torch.cumsum(tokens, dim=0, out=prefix[1:])
        ends = torch.as_tensor(np.asarray(tok_end, np.int64))
        starts = torch.as_tensor(np.asarray(tok_start, np.int64))
        sums = prefix.index_select(0, ends)
        sums.sub_(prefix.index_select(0, starts))
        if normalise:
            sums.div_(torch.linalg.vector_norm(sums, dim=1, keepdim=True).clamp_min_(1e-12))
        else:
            sums.div_((ends - starts).to(dtype)[:, None])
        if out is None:
            return sums.to(torch.float32).numpy()
        torch.from_numpy(out).copy_(sums)
        return out


SPAN_VECTOR_DTYPE = np.float16


def embed_spans(documents: pl.DataFrame, spans: pl.DataFrame, encoder: TokenEncoder,
                docs_per_chunk: int = 32, progress: bool = False, on_document=None,
                dtype=SPAN_VECTOR_DTYPE) -> np.ndarray:
    """L2-normalised late-chunked vector for every row of `spans`, in the same order
    (`dtype` float16 by default; float32 where exact values matter, e.g. tests).

    Memory stays bounded by `docs_per_chunk` documents' token matrices plus the output.
    `on_document(doc_id, token_ids, token_embeddings)` is called once per document, so later
    stages (late-interaction topic scoring) can reuse the same pass instead of running the
    transformer again.
    """
    out = np.zeros((spans.height, encoder.dim), dtype=dtype)
    if spans.height == 0:
        return out
    # rows grouped by document as numpy slices (no per-span Python objects)
    doc_ids = spans["doc_id"].unique(maintain_order=True)
    doc_pos = (spans.select("doc_id").join(doc_ids.to_frame().with_row_index("_d"), on="doc_id", how="left",
                                           maintain_order="left")["_d"].to_numpy())
    order = np.argsort(doc_pos, kind="stable")  # the identity when a document's spans are contiguous
    bounds = np.searchsorted(doc_pos[order], np.arange(len(doc_ids) + 1))
    tok_start = spans["tok_start"].to_numpy()[order]
    tok_end = spans["tok_end"].to_numpy()[order]
    texts = dict(zip(documents["doc_id"].to_list(), documents["text"].to_list()))
    doc_list = doc_ids.to_list()
    missing = [d for d in doc_list if d not in texts]
    if missing:
        raise ValueError(f"{len(missing)} span document(s) are not among the documents, e.g. {missing[:3]}")
    iterator = range(0, len(doc_list), docs_per_chunk)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="late chunking", unit="chunk", total=len(iterator))
    for lo in iterator:
        chunk = doc_list[lo:lo + docs_per_chunk]
        toks = tokenize_batch(encoder.tokenizer, [texts[d] for d in chunk])
        token_embs = encoder.token_embeddings([ids for ids, _ in toks])
        for k, (doc_id, (ids, _), t_emb) in enumerate(zip(chunk, toks, token_embs)):
            a, b = bounds[lo + k], bounds[lo + k + 1]
            rows, s, e = order[a:b], tok_start[a:b], tok_end[a:b]
            if rows[-1] - rows[0] + 1 == len(rows):
                pool_spans(t_emb, s, e, normalise=True, out=out[rows[0]:rows[-1] + 1])  # contiguous: in place
            else:
                out[rows] = pool_spans(t_emb, s, e, normalise=True)
            if on_document is not None:
                on_document(doc_id, ids, t_emb)
    return out


def embeddings_frame(spans: pl.DataFrame, vectors: np.ndarray) -> pl.DataFrame:
    """Arrow-native storage: one fixed-size float16 array per span, keyed by span_idx."""
    vectors = np.asarray(vectors, dtype=SPAN_VECTOR_DTYPE)
    return pl.DataFrame({
        "span_idx": spans["span_idx"], "doc_id": spans["doc_id"],
        "embedding": pl.Series("embedding", vectors, dtype=pl.Array(pl.Float16, vectors.shape[1])),
    })


def require_aligned(source: str, spans: pl.DataFrame | pl.LazyFrame,
                    span_embeddings: pl.DataFrame | pl.LazyFrame) -> None:
    """Raise unless a source's span vectors belong to its current spans, row for row (same
    span_idx column): vectors of an older `spans` would label or select the wrong text. Reads
    one integer column of each, so a lazy scan stays cheap."""
    from emerge.errors import InputError

    ids = [f.lazy().select("span_idx").collect()["span_idx"] for f in (spans, span_embeddings)]
    if not ids[0].equals(ids[1]):
        raise InputError(f"source {source!r}: span_embeddings are stale relative to spans; "
                         "re-materialize span_embeddings")


def vectors_of(frame: pl.DataFrame) -> np.ndarray:
    """(n, d) array of an embeddings frame's `embedding` column, in its stored precision
    (float16; frames written before float16 storage load as float32)."""
    if frame.height == 0:
        return np.zeros((0, 0), SPAN_VECTOR_DTYPE)
    vectors = frame["embedding"].to_numpy()
    if vectors.dtype not in (np.float16, np.float32):
        vectors = vectors.astype(np.float32)
    return np.ascontiguousarray(vectors)


class TokenStore:
    """Token ids and float16 token embeddings per document, kept from the embedding pass.

    Saved as one `.npz` per source (ids, vectors, per-document offsets): compact, memory-mapped
    friendly, and enough for late-interaction scoring without a second transformer pass.
    """

    def __init__(self):
        self.doc_ids: list[str] = []
        self._ids: list[np.ndarray] = []
        self._vecs: list[np.ndarray] = []
        self._index: dict[str, int] = {}

    def add(self, doc_id: str, token_ids: np.ndarray, token_embeddings: np.ndarray) -> None:
        self._index[doc_id] = len(self.doc_ids)
        self.doc_ids.append(doc_id)
        self._ids.append(np.asarray(token_ids, np.int32))
        self._vecs.append(np.asarray(token_embeddings, np.float16))

    def get(self, doc_id: str) -> tuple[np.ndarray, np.ndarray]:
        i = self._index[doc_id]
        return self._ids[i], self._vecs[i].astype(np.float32)

    def save(self, path) -> None:
        """Atomic: a killed run leaves the previous store (or none), never a truncated .npz."""
        from emerge.atomic import atomic_write

        lengths = np.array([len(x) for x in self._ids], dtype=np.int64)
        dim = self._vecs[0].shape[1] if self._vecs else 0
        atomic_write(path, lambda tmp: np.savez(
            tmp, doc_ids=np.array(self.doc_ids, dtype=object).astype(str), lengths=lengths,
            ids=np.concatenate(self._ids) if self._ids else np.zeros(0, np.int32),
            vectors=np.concatenate(self._vecs) if self._vecs else np.zeros((0, dim), np.float16)), suffix=".npz")

    @classmethod
    def load(cls, path) -> "TokenStore":
        data = np.load(path, allow_pickle=False)
        store = cls()
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        ids, vecs = data["ids"], data["vectors"]
        for i, doc_id in enumerate(data["doc_ids"].tolist()):
            store.add(doc_id, ids[bounds[i]:bounds[i + 1]], vecs[bounds[i]:bounds[i + 1]])
        return store


# Float vectors barely compress (zstd saves ~8 % on span embeddings) but zstd costs seconds per
# GB on writes; lz4 keeps text columns small at a fraction of the time.
PARQUET_COMPRESSION = "lz4"


def write_parquet(frame: pl.DataFrame, target) -> None:
    """How every asset frame is written. Min/max statistics are skipped for frames holding
    vector columns: nobody filters on them, and computing them took a third of the write time
    of span embeddings."""
    vectors = any(isinstance(dtype, pl.Array) for dtype in frame.schema.values())
    frame.write_parquet(target, compression=PARQUET_COMPRESSION, statistics=not vectors)
