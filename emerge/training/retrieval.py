"""Retrieval evaluation: base vs fine-tuned on held-out documents and on a BEIR-layout collection.

Metrics follow BEIR/pytrec_eval conventions: nDCG@10 with linear gains from graded
judgments, MRR@10 over the first relevant hit, Recall@100 over all judged-relevant
documents, and hits@k (any relevant document in the top k).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from emerge.errors import InputError
from emerge.label_scheme import TOPICS, labelled_rows, scheme_of

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best columns per row, best first (ties broken by index for reproducibility)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def retrieval_metrics(ranked: list[list[str]], qrels: list[dict[str, int]]) -> dict[str, float]:
    """Mean metrics over queries; `ranked[i]` are doc ids best first, `qrels[i]` their graded judgments."""
    if not ranked:
        raise InputError("no query to evaluate")
    per_query = {k: [] for k in ("hits@1", "hits@5", "hits@10", "ndcg@10", "mrr@10", "recall@100")}
    discounts = 1.0 / np.log2(np.arange(2, 12))
    for docs, judged in zip(ranked, qrels):
        relevant = {d: g for d, g in judged.items() if g > 0}
        if not relevant:
            raise InputError("a query without any relevant judgment cannot be scored; drop it first")
        gains = np.array([relevant.get(d, 0) for d in docs[:100]], dtype=float)
        hit = gains > 0
        for k in (1, 5, 10):
            per_query[f"hits@{k}"].append(float(hit[:k].any()))
        ideal = np.sort(np.array(list(relevant.values()), dtype=float))[::-1][:10]
        dcg = float((gains[:10] * discounts[:len(gains[:10])]).sum())
        per_query["ndcg@10"].append(dcg / float((ideal * discounts[:len(ideal)]).sum()))
        first = np.flatnonzero(hit[:10])
        per_query["mrr@10"].append(1.0 / (first[0] + 1) if len(first) else 0.0)
        per_query["recall@100"].append(float(hit[:100].sum()) / len(relevant))
    return {k: float(np.mean(v)) for k, v in per_query.items()}


# Documents' vectors by document encoder (weights, window, precision, device), then by text: a
# query-side model reads documents with the base's encoder, so its gate and evaluation find the base's
# document vectors here instead of embedding the corpus again for every interpolation weight, and a
# subset of an embedded corpus (a seed's training documents) is read out of it (`encode`).
_DOCUMENT_VECTORS: OrderedDict[tuple, "_EmbeddedTexts"] = OrderedDict()
DOCUMENT_CACHE_BYTES = 512 * 2**20
_CACHE_MIN_TEXTS = 256  # below this, embedding costs less than keying


@dataclass
class _EmbeddedTexts:
    """One document encoder's vectors, a row per distinct text embedded so far."""

    vectors: np.ndarray
    rows: dict[str, int]

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        offset = len(self.rows)
        self.rows.update((t, offset + i) for i, t in enumerate(texts))
        self.vectors = np.concatenate([self.vectors, vectors]) if len(self.vectors) else vectors


def document_encoder_key(model, dtype: str = "float32") -> tuple:
    """What a document's vector depends on: the document encoder's weights (hashed), window,
    precision and device. Two models with equal keys embed documents identically."""
    import torch

    from emerge.training.query_side import is_asymmetric

    modules = model[0].sub_modules["document"] if is_asymmetric(model) else list(model.children())
    digest = hashlib.blake2b(digest_size=16)
    for i, module in enumerate(modules):
        for name, tensor in module.state_dict().items():
            digest.update(f"{i}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest(), model.max_seq_length, dtype, str(model.device)


def encode(model, texts: list[str], batch_size: int = 64, progress: bool = False,
           dtype: str = "float32", role: str | None = None) -> np.ndarray:
    """Unit vectors of `texts`; `dtype="bfloat16"` runs the forward pass under CPU autocast (the
    weights stay float32; cosines within ~5e-5 of float32's, see BENCHMARKS.md "precision").
    `role` "query" or "document" embeds by role (`encode_query` / `encode_document`): the same
    vectors as `encode` for a symmetric model, the right encoder of an asymmetric one
    (`emerge.training.query_side`); None embeds with the model's default route. A corpus embedded
    as documents is kept (up to `DOCUMENT_CACHE_BYTES`, least recently used encoder out) under its
    document encoder's weights: a query-side model and every interpolation of it read documents
    with the base's weights and find the base's vectors instead of embedding the corpus again, and
    texts already embedded by the encoder (a seed's training documents, out of the corpus) are read
    back, so only the others pass through the model."""
    import contextlib

    import torch

    cast = (torch.autocast(device_type="cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
            and str(model.device) == "cpu" else contextlib.nullcontext())
    if role not in (None, "query", "document"):
        raise ValueError(f"role must be 'query', 'document' or None, got {role!r}")
    run = {None: model.encode, "query": model.encode_query, "document": model.encode_document}[role]

    def embed(batch: list[str]) -> np.ndarray:
        with cast:
            return run(batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=progress).astype(np.float32)

    if role != "document" or len(texts) < _CACHE_MIN_TEXTS:  # queries, or too few documents to be worth keying
        return embed(texts)
    key = document_encoder_key(model, dtype)
    known = _DOCUMENT_VECTORS.pop(key, None) or _EmbeddedTexts(np.empty((0, 0), dtype=np.float32), {})
    missing = list(dict.fromkeys(t for t in texts if t not in known.rows))
    fresh = embed(missing) if missing else np.empty((0, 0), dtype=np.float32)
    if known.vectors.nbytes + fresh.nbytes > DOCUMENT_CACHE_BYTES:  # over the budget: answer, keep nothing new
        if known.rows:
            _DOCUMENT_VECTORS[key] = known
        if missing == texts:
            return fresh
        new_rows = {t: i for i, t in enumerate(missing)}
        return np.stack([fresh[new_rows[t]] if t in new_rows else known.vectors[known.rows[t]] for t in texts])
    if missing:
        known.add(missing, fresh)
    _DOCUMENT_VECTORS[key] = known  # the most recently used encoder last
    while sum(e.vectors.nbytes for e in _DOCUMENT_VECTORS.values()) > DOCUMENT_CACHE_BYTES:
        _DOCUMENT_VECTORS.popitem(last=False)
    return known.vectors[[known.rows[t] for t in texts]]


# --------------------------------------------------------------------------- BEIR collections
@dataclass
class BeirCollection:
    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: Qrels
    skipped: dict[str, int] = field(default_factory=dict)

    def stats(self) -> dict:
        return {"corpus_docs": len(self.corpus_ids), "queries": len(self.query_ids),
                "judgments": sum(len(v) for v in self.qrels.values()),
                **{f"skipped_{k}": v for k, v in self.skipped.items()}}

    def limited(self, n_docs: int) -> "BeirCollection":
        """The first `n_docs` documents; judgments of dropped documents and queries left without any go."""
        keep = set(self.corpus_ids[:n_docs])
        qrels = {q: {d: g for d, g in j.items() if d in keep} for q, j in self.qrels.items()}
        queries = [(q, t) for q, t in zip(self.query_ids, self.query_texts) if any(g > 0 for g in qrels[q].values())]
        if not queries:
            raise InputError(f"no query keeps a judged document among the first {n_docs} documents")
        skipped = dict(self.skipped, queries_without_judgments=self.skipped.get("queries_without_judgments", 0)
                       + len(self.query_ids) - len(queries))
        return BeirCollection(self.corpus_ids[:n_docs], self.corpus_texts[:n_docs], [q for q, _ in queries],
                              [t for _, t in queries], {q: qrels[q] for q, _ in queries}, skipped)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return rows


def beir_doc_text(row: dict) -> str:
    """Title and text, the title on its own line (as a user's file would have it; the tokenizers see
    the same tokens as BEIR's space join), without repeating a title the text already starts with."""
    title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
    return text if not title or text.startswith(title) else f"{title}\n{text}".strip()


def load_beir(path: str | Path, split: str = "test") -> BeirCollection:
    """A BEIR-layout folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

    Queries without a positive judgment, and judgments of unknown documents or queries, are
    skipped and counted in `skipped` (never scored as zero); no evaluable query is an error.
    """
    root = Path(path)
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl", "qrels": root / "qrels" / f"{split}.tsv"}
    for name, f in files.items():
        if not f.is_file():
            raise InputError(f"BEIR collection {root}: missing {name} file {f}")
    corpus = {str(r["_id"]): beir_doc_text(r) for r in _read_jsonl(files["corpus"])}
    queries = {str(r["_id"]): (r.get("text") or "").strip() for r in _read_jsonl(files["queries"])}
    qrels: Qrels = {}
    skipped = {"judgments_unknown_doc": 0, "judgments_unknown_query": 0}
    with files["qrels"].open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if n == 1 and parts[0] == "query-id":
                continue
            if len(parts) < 3:
                raise InputError(f"{files['qrels']}:{n}: expected query-id<TAB>corpus-id<TAB>score")
            qid, did = parts[0], parts[1]
            try:
                score = int(float(parts[2]))
            except ValueError:
                raise InputError(f"{files['qrels']}:{n}: score {parts[2]!r} is not a number") from None
            if qid not in queries:
                skipped["judgments_unknown_query"] += 1
            elif did not in corpus:
                skipped["judgments_unknown_doc"] += 1
            else:
                qrels.setdefault(qid, {})[did] = score
    evaluable = [q for q in queries if any(g > 0 for g in qrels.get(q, {}).values()) and queries[q]]
    skipped["queries_without_judgments"] = len(queries) - len(evaluable)
    if not evaluable:
        raise InputError(f"BEIR collection {root}: no query has a positive judgment in {files['qrels'].name}")
    if skipped["queries_without_judgments"]:
        log.warning("%s: %d queries have no positive judgment and are not scored",
                    root, skipped["queries_without_judgments"])
    return BeirCollection(list(corpus), list(corpus.values()), evaluable, [queries[q] for q in evaluable],
                          {q: qrels[q] for q in evaluable}, {k: v for k, v in skipped.items() if v})


def evaluate_beir(model, collection: BeirCollection, batch_size: int = 64, progress: bool = False) -> dict[str, float]:
    docs = encode(model, collection.corpus_texts, batch_size, progress, role="document")
    queries = encode(model, collection.query_texts, batch_size, role="query")
    best = top_k(queries @ docs.T, 100)
    ranked = [[collection.corpus_ids[i] for i in row] for row in best]
    metrics = retrieval_metrics(ranked, [collection.qrels[q] for q in collection.query_ids])
    return {k: metrics[k] for k in ("ndcg@10", "mrr@10", "recall@100", "hits@1", "hits@10")}


# --------------------------------------------------------------------------- held-out label retrieval
@dataclass
class LabelRetrievalTask:
    """Queries over the held-out spans; relevant = spans of the query's label from other documents."""

    query_texts: list[str]
    query_labels: list[str]
    query_docs: list[str | None]
    corpus_texts: list[str]
    corpus_labels: np.ndarray
    corpus_docs: np.ndarray

    def qrels(self) -> list[dict[str, int]]:
        out = []
        for label, doc in zip(self.query_labels, self.query_docs):
            hit = (self.corpus_labels == label) & (self.corpus_docs != doc)
            out.append({str(i): 1 for i in np.flatnonzero(hit)})
        return out


def label_retrieval_task(eval_rows: pl.DataFrame, label_col: str, max_queries: int = 300,
                         seed: int = 0) -> LabelRetrievalTask:
    """Cluster datasets: one held-out span per document as the query (its label must occur in
    another held-out document). Topic datasets: the topic's own text as the query."""
    rows = labelled_rows(eval_rows, label_col)
    if rows.height == 0:
        raise InputError(f"no held-out span has a {label_col}; nothing to evaluate")
    labels = rows[label_col].cast(pl.String).to_numpy()
    docs = rows["doc_id"].cast(pl.String).to_numpy()
    corpus = dict(corpus_texts=rows["text_span"].to_list(), corpus_labels=labels, corpus_docs=docs)
    if scheme_of(label_col) is TOPICS:
        topics = rows.unique(TOPICS.label_col, maintain_order=True)
        texts = [f"{n}: {d}" if d else n for n, d in zip(topics["topic_name"], topics["topic_description"].fill_null(""))]
        return LabelRetrievalTask(texts, topics[TOPICS.label_col].cast(pl.String).to_list(), [None] * topics.height,
                                  **corpus)
    docs_per_label = rows.group_by(label_col).agg(pl.col("doc_id").n_unique().alias("n"))
    shared = docs_per_label.filter(pl.col("n") >= 2)[label_col].implode()
    candidates = rows.filter(pl.col(label_col).is_in(shared))
    if candidates.height == 0:
        raise InputError("no label occurs in two held-out documents; hold out more documents (eval_fraction)")
    queries = (candidates.sample(fraction=1.0, shuffle=True, seed=seed).unique("doc_id", keep="first",
                                                                                maintain_order=True)
               .head(max_queries))
    return LabelRetrievalTask(queries["text_span"].to_list(), queries[label_col].cast(pl.String).to_list(),
                              queries["doc_id"].cast(pl.String).to_list(), **corpus)


def evaluate_label_retrieval(model, task: LabelRetrievalTask, batch_size: int = 64) -> tuple[dict, np.ndarray]:
    """Metrics plus the score matrix (queries x held-out spans), query's own document excluded."""
    corpus = encode(model, task.corpus_texts, batch_size, role="document")
    queries = encode(model, task.query_texts, batch_size, role="query")
    scores = queries @ corpus.T
    for i, doc in enumerate(task.query_docs):
        if doc is not None:
            scores[i, task.corpus_docs == doc] = -np.inf
    best = top_k(scores, 100)
    metrics = retrieval_metrics([[str(i) for i in row] for row in best], task.qrels())
    return metrics, scores


def sanity_table(task: LabelRetrievalTask, scores: dict[str, np.ndarray], n_queries: int = 3,
                 top: int = 3, width: int = 90) -> pl.DataFrame:
    """Top spans per model for the first few queries, with whether each hit has the query's label."""
    rows = []
    for q in range(min(n_queries, len(task.query_texts))):
        for name, matrix in scores.items():
            for rank, idx in enumerate(top_k(matrix[q:q + 1], top)[0], 1):
                rows.append({"query": task.query_texts[q][:width], "model": name, "rank": rank,
                             "span": task.corpus_texts[idx][:width],
                             "same_label": bool(task.corpus_labels[idx] == task.query_labels[q])})
    return pl.DataFrame(rows)


def evaluate_bm25(collection: BeirCollection) -> dict[str, float]:
    """The lexical anchor: `bm25s` (Lucene BM25, k1 1.5, b 0.75, English stop words, Snowball stems)."""
    from emerge.training.lexical import bm25s_rankings

    best = bm25s_rankings(collection.corpus_texts, collection.query_texts, 100)
    ranked = [[collection.corpus_ids[i] for i in row] for row in best]
    metrics = retrieval_metrics(ranked, [collection.qrels[q] for q in collection.query_ids])
    return {k: metrics[k] for k in ("ndcg@10", "mrr@10", "recall@100", "hits@1", "hits@10")}
