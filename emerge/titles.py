"""Readable cluster titles from class-based TF-IDF keyphrases: no model, no network."""

from __future__ import annotations

import numpy as np


def ctfidf_keyphrases(texts_by_cluster: dict[int, list[str]], top_n: int = 5,
                      ngram_range: tuple[int, int] = (1, 2)) -> dict[int, list[str]]:
    """Top keyphrases per cluster by c-TF-IDF (BERTopic's weighting), made diverse.

    Diversity: a phrase that shares a word with a higher-ranked chosen phrase is skipped, so
    titles read "Revenue Growth / Supply Chain" rather than "Revenue / Revenue Growth".
    """
    from sklearn.feature_extraction.text import CountVectorizer

    ids = sorted(texts_by_cluster)
    if not ids:
        return {}
    docs = [" ".join(texts_by_cluster[c]) for c in ids]
    vectorizer = CountVectorizer(ngram_range=ngram_range, stop_words="english",
                                 token_pattern=r"(?u)\b[^\W\d_][\w'-]*[^\W_]\b|\b[^\W\d_]\b")
    try:
        counts = vectorizer.fit_transform(docs)
    except ValueError:  # only stop words / no tokens at all
        return {c: [] for c in ids}
    counts = counts.astype(np.float64)
    vocab = np.asarray(vectorizer.get_feature_names_out())
    tf = counts.multiply(1.0 / np.maximum(counts.sum(axis=1), 1)).tocsr()
    term_freq = np.asarray(counts.sum(axis=0)).ravel()
    avg_words = counts.sum() / len(ids)
    idf = np.log1p(avg_words / np.maximum(term_freq, 1))
    scores = tf.multiply(idf).tocsr()
    out: dict[int, list[str]] = {}
    for row, c in enumerate(ids):
        r = scores.getrow(row)
        order = r.indices[np.argsort(-r.data, kind="stable")]
        chosen: list[str] = []
        used: set[str] = set()
        for term in vocab[order]:
            words = set(term.split())
            if words & used:
                continue
            chosen.append(term)
            used |= words
            if len(chosen) == top_n:
                break
        out[c] = chosen
    return out


def title_from_keyphrases(phrases: list[str], n: int = 2) -> str:
    if not phrases:
        return "Untitled"
    return " / ".join(p.title() for p in phrases[:n])
