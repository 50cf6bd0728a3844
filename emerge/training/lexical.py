"""BM25 over a user's corpus: the lexical anchor every retrieval result is compared with, and half
of the hybrid teacher that labels distillation triplets (`emerge.training.distillation`).

Tokenisation is bm25s's (English stop words, Snowball stemming via PyStemmer), scoring is
Lucene's BM25 (k1 = 1.5, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5))). Besides ranking
the indexed corpus, `pair_scores` scores a query against *any* text with the corpus' statistics:
training positives are documents with the query span cut out, which are not in the index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

K1, B = 1.5, 0.75


def _stemmer():
    try:
        import Stemmer
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ImportError("BM25 needs `pip install PyStemmer bm25s`") from exc
    return Stemmer.Stemmer("english")


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, stop-word-free, stemmed tokens (bm25s's tokenizer) per text."""
    import bm25s

    return bm25s.tokenize(list(texts), lower=True, stopwords="en", stemmer=_stemmer(), return_ids=False,
                          show_progress=False)


@dataclass
class BM25Index:
    """A BM25 index of `corpus` with the weights kept as one sparse (documents x terms) matrix."""

    vocab: dict[str, int]
    idf: np.ndarray
    avgdl: float
    weights: sparse.csr_matrix

    @classmethod
    def build(cls, corpus: list[str]) -> "BM25Index":
        tokens = tokenize(corpus)
        vocab: dict[str, int] = {}
        for doc in tokens:
            for t in doc:
                vocab.setdefault(t, len(vocab))
        counts = _term_counts(tokens, vocab)
        n_docs = len(corpus)
        df = np.bincount(counts.indices, minlength=len(vocab))
        idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
        lengths = np.array([len(d) for d in tokens], dtype=np.float64)
        avgdl = float(lengths.mean()) if n_docs and lengths.mean() > 0 else 1.0
        return cls(vocab, idf, avgdl, _bm25_weights(counts, lengths, idf, avgdl))

    def _query_matrix(self, queries: list[str]) -> sparse.csr_matrix:
        """Query term counts over the corpus vocabulary (unknown terms score nothing)."""
        return _term_counts(tokenize(queries), self.vocab)

    def scores(self, queries: list[str]) -> np.ndarray:
        """(queries x corpus documents) BM25 scores."""
        return np.asarray((self._query_matrix(queries) @ self.weights.T).todense(), dtype=np.float32)

    def query_terms(self, queries: list[str]) -> sparse.csr_matrix:
        """(queries x vocabulary) term counts: `query_terms(q) @ text_weights(t).T` is BM25 of q on t."""
        return self._query_matrix(queries)

    def text_weights(self, texts: list[str]) -> sparse.csr_matrix:
        """(texts x vocabulary) BM25 weights of texts that need not be in the index, with this
        corpus' idf and average length."""
        counts, lengths = _term_counts(tokenize(texts), self.vocab, keep_length=True)
        return _bm25_weights(counts, lengths, self.idf, self.avgdl)

    def pair_scores(self, queries: list[str], texts: list[str]) -> np.ndarray:
        """BM25 of queries[i] against texts[i], with this corpus' idf and average length."""
        w = self.text_weights(texts)
        return np.asarray(self._query_matrix(queries).multiply(w).sum(axis=1), dtype=np.float32).ravel()


def _term_counts(tokens: list[list[str]], vocab: dict[str, int], keep_length: bool = False):
    rows, cols = [], []
    lengths = np.zeros(len(tokens), dtype=np.float64)
    for i, doc in enumerate(tokens):
        lengths[i] = len(doc)
        ids = [vocab[t] for t in doc if t in vocab]
        rows += [i] * len(ids)
        cols += ids
    counts = sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)),
                               shape=(len(tokens), len(vocab)))
    counts.sum_duplicates()
    return (counts, lengths) if keep_length else counts


def _bm25_weights(counts: sparse.csr_matrix, lengths: np.ndarray, idf: np.ndarray, avgdl: float) -> sparse.csr_matrix:
    tf = counts.tocoo()
    norm = K1 * (1.0 - B + B * lengths[tf.row] / avgdl)
    data = idf[tf.col] * tf.data * (K1 + 1.0) / (tf.data + norm)
    return sparse.csr_matrix((data, (tf.row, tf.col)), shape=counts.shape)


def bm25s_rankings(corpus: list[str], queries: list[str], k: int = 100) -> np.ndarray:
    """Top-k corpus indices per query from the `bm25s` package itself (Lucene, k1 1.5, b 0.75):
    the reference BM25 number in every benchmark, independent of `BM25Index`."""
    import bm25s

    stemmer = _stemmer()
    retriever = bm25s.BM25(method="lucene", k1=K1, b=B)
    retriever.index(bm25s.tokenize(list(corpus), stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    query_tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=stemmer, return_ids=False,
                                  show_progress=False)
    docs, _ = retriever.retrieve(query_tokens, k=min(k, len(corpus)), show_progress=False, n_threads=1)
    return np.asarray(docs)
