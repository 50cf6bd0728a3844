"""Query-side adaptation (`trained_side="query"`): fine-tune how queries are read; documents keep
the base model's vectors.

The two-sided `distill` recipe embeds each query's positive and negatives (128-token windows) in
every step, so a 2-core CPU affords ~32 steps of 32 queries, and each query learns the teacher's
order of the 4-9 texts of its row and batch. Here the documents are embedded once, by the base, at
its own window (what an index built with the base already holds), and only the queries (~10
tokens each) pass through the model being trained. A step costs a fraction of a second, so the
same CPU affords hundreds of steps over several keyword queries per document, and each query is
trained on the teacher's ranking of **every** training document (a softmax over the whole
training corpus, KL to the teacher's at the same scale) rather than of a few sampled ones.

The teacher is the same hybrid as the two-sided recipe (the base's cosine plus BM25, z-normalised
per query over its top 100 documents, `emerge.training.distillation`), computed a batch
at a time from the queries' base vectors and BM25 terms, so memory stays linear in the corpus.

The published model is asymmetric (sentence-transformers' `Router`): `encode_query` runs the
trained encoder, `encode_document` (and a plain `encode`) the base's, so a user's existing
document index stays valid and only queries change. Emerge embeds queries and documents by role
everywhere it retrieves (`emerge.training.retrieval.encode`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from scipy import sparse
from torch import nn

from emerge.atomic import atomic_write_dir
from emerge.config import TrainingConfig
from emerge.errors import InputError
from emerge.training.distillation import _top_stats, document_sentences, keyword_queries, lexical_factor
from emerge.training.lexical import BM25Index

log = logging.getLogger(__name__)


@dataclass
class QuerySideSet:
    """Training queries and what the teacher needs to score each against every training document."""

    queries: list[str]
    query_docs: np.ndarray  # index of each query's own document
    query_vectors: np.ndarray  # base model, unit vectors
    query_terms: sparse.csr_matrix  # BM25 query term counts
    lexical_scale: np.ndarray  # per query: lexical_weight * dense spread / lexical spread (z-normalisation)
    document_vectors: np.ndarray  # base model at its own window: fixed during training
    document_weights: sparse.csr_matrix  # BM25 weights of the training documents
    doc_ids: list[str]

    @property
    def height(self) -> int:
        return len(self.queries)

    def teacher_scores(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows) x documents) hybrid teacher scores, in cosine units, up to a constant per query."""
        dense = self.query_vectors[rows] @ self.document_vectors.T
        lexical = (self.query_terms[rows] @ self.document_weights.T).toarray()
        return (dense + self.lexical_scale[rows, None] * lexical).astype(np.float32)


def query_side_set(rows: pl.DataFrame, texts: dict[str, str], model, *, queries_per_document: int,
                   window_chars: int, lexical_weight: float, seed: int, keyword_terms: tuple[int, int] = (2, 5),
                   max_queries: int | None = None, progress: Callable[[str], None] | None = None,
                   batch_size: int = 64, from_sentences: bool = False) -> QuerySideSet:
    """Keyword queries of the training documents (`queries_per_document` draws of 2-5 of an
    opening's most distinctive words, duplicates dropped; `from_sentences`: the opening and
    `queries_per_document - 1` other sentences of the document, each shortened so) and the base
    model's vectors of the queries and of the whole training documents (at `model`'s window, as
    the index holds them)."""
    from emerge.training.retrieval import encode

    say = progress or log.info
    doc_ids = sorted(set(rows["doc_id"].cast(pl.String)))
    missing = [d for d in doc_ids if d not in texts]
    if missing:
        raise InputError(f"{len(missing)} training documents have no text (first: {missing[0]!r})")
    if len(doc_ids) < 2:
        raise InputError(f"query-side training needs at least 2 training documents, got {len(doc_ids)}")
    if from_sentences:  # one query per sentence: the words of a document's body, not only of its opening
        draws = [keyword_queries(rows, texts, window_chars, seed, *keyword_terms, sentences=document_sentences(
            rows, texts, window_chars, queries_per_document, seed))]
    else:
        draws = [keyword_queries(rows, texts, window_chars, seed * 1000 + k, *keyword_terms)
                 for k in range(max(1, queries_per_document))]
    queries = pl.concat(draws).unique(["query", "doc_id"], keep="first", maintain_order=True)
    if max_queries is not None and queries.height > max_queries:
        queries = queries.sample(n=max_queries, seed=seed)
    if queries.height == 0:
        raise InputError("no training document has an opening with two distinctive words to make a query of")
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    q_texts = queries["query"].to_list()
    say(f"query-side training: {len(q_texts)} keyword queries from {len(doc_ids)} documents; "
        f"embedding the documents with the base model at {model.max_seq_length} tokens")
    doc_texts = [texts[d] for d in doc_ids]
    documents = encode(model, doc_texts, batch_size, progress=True, role="document")
    vectors = encode(model, q_texts, batch_size, role="query")
    bm25 = BM25Index.build(doc_texts)
    terms = bm25.query_terms(q_texts)
    scale = np.empty(len(q_texts), dtype=np.float64)
    for start in range(0, len(q_texts), 512):  # z-normalisation statistics, a block of queries at a time
        block = slice(start, start + 512)
        scale[block] = lexical_scale(vectors[block] @ documents.T, (terms[block] @ bm25.weights.T).toarray(),
                                     lexical_weight)
    return QuerySideSet(q_texts, np.array([doc_index[d] for d in queries["doc_id"]]), vectors, terms, scale,
                        documents, bm25.weights, doc_ids)


def lexical_scale(dense: np.ndarray, lexical: np.ndarray, lexical_weight: float) -> np.ndarray:
    """Per query, the factor that puts its BM25 scores on its dense scores' spread (over each
    one's top documents) times `lexical_weight`: the hybrid teacher is dense + factor x BM25."""
    return lexical_factor(_top_stats(dense), _top_stats(lexical), lexical_weight).ravel()


def corpus_kl(queries: torch.Tensor, documents: torch.Tensor, teacher: torch.Tensor, scale: float) -> torch.Tensor:
    """KL from the teacher's softmax over `documents` (scores in cosine units) to the queries', both
    at `scale`. Queries are made unit vectors whether or not the model ends in Normalize: the
    teacher's and the documents' are."""
    student = nn.functional.normalize(queries, dim=-1) @ documents.T * scale
    return nn.functional.kl_div(torch.log_softmax(student, dim=1), torch.log_softmax(teacher * scale, dim=1),
                                log_target=True, reduction="batchmean")


class CorpusDistillationLoss(nn.Module):
    """KL from the teacher's softmax over every training document to the student's, both at `scale`.

    The student embeds only the queries (labels = their rows in `qset`); the documents are the
    fixed base vectors. A relevant document that is not the query's own gets the teacher's
    probability instead of being pushed away."""

    def __init__(self, model, qset: QuerySideSet, scale: float = 20.0):
        super().__init__()
        self.model, self.qset, self.scale = model, qset, scale
        self.documents = torch.from_numpy(qset.document_vectors)

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        queries = self.model(next(iter(sentence_features)))["sentence_embedding"]
        teacher = torch.from_numpy(self.qset.teacher_scores(labels.detach().cpu().numpy())).to(queries.device)
        return corpus_kl(queries, self.documents.to(queries.device), teacher, self.scale)

    @property
    def citation(self) -> str:
        return ""


def asymmetric_model(query_model, document_model):
    """One SentenceTransformer whose `encode_query` runs `query_model` and whose `encode_document`
    (and plain `encode`) runs `document_model` (copied, so neither shares modules with its source);
    both must end in the same normalisation (all Emerge's models do)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router

    q_modules, d_modules = list(copy.deepcopy(query_model).children()), list(copy.deepcopy(document_model).children())
    tail = [m for m in d_modules if type(m).__name__ == "Normalize"]
    router = Router.for_query_document(query_modules=[m for m in q_modules if type(m).__name__ != "Normalize"],
                                       document_modules=[m for m in d_modules if type(m).__name__ != "Normalize"])
    model = SentenceTransformer(modules=[router, *tail], device=str(document_model.device))
    model.emerge_window = getattr(document_model, "emerge_window", model.max_seq_length)
    return model


def is_asymmetric(model) -> bool:
    """True for a model with separate query and document encoders (`asymmetric_model`)."""
    return type(model[0]).__name__ == "Router"


def query_encoder(model):
    """The query route of an asymmetric model, as a plain SentenceTransformer (shares its modules)."""
    from sentence_transformers import SentenceTransformer

    router = model[0]
    plain = SentenceTransformer(modules=[*router.sub_modules["query"], *list(model.children())[1:]],
                                device=str(model.device))
    return plain


def train_query_side(qset: QuerySideSet, base_model: str | Path, output_dir: str | Path, config: TrainingConfig,
                     device: str = "cpu", on_log: Callable[[dict], None] | None = None):
    """Train the query encoder (a copy of the base) on `qset`; save the asymmetric model (trained
    queries, base documents) to `output_dir`, atomically."""
    from datasets import Dataset
    from transformers import set_seed

    from emerge.training.trainer import TrainingResult, load_sentence_transformer, run_trainer, set_dropout

    set_seed(config.seed)
    base = load_sentence_transformer(base_model, device)
    student = load_sentence_transformer(base_model, device)
    if config.dropout is not None:
        set_dropout(student, config.dropout)
    dataset = Dataset.from_dict({"anchor": qset.queries, "label": list(range(qset.height))})
    output_dir = Path(output_dir)
    out = run_trainer(student, dataset, CorpusDistillationLoss(student, qset, config.scale), config, output_dir, device,
                      on_log)
    student.max_seq_length = student.emerge_window
    published = asymmetric_model(student, base)
    atomic_write_dir(output_dir, lambda tmp: published.save(str(tmp)))
    return TrainingResult(model_dir=output_dir, train_pairs=len(dataset), steps=out.global_step,
                          train_loss=float(out.training_loss) if out.training_loss is not None else None)

