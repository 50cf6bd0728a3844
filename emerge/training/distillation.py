"""Pseudo-query distillation: the `distill` pairing, GPL done offline with the corpus as the only input.

Raw span pairs (inverse cloze, same-cluster) pull a model trained on a billion question/answer
pairs away from what it knows: the base loses nDCG on real queries. Distillation changes what is
learnt. Each training document's opening line or sentence (or each selected span) becomes a
pseudo-query; the rest of its document (the span cut out) is the positive; negatives are other training documents that a teacher ranks high
for the query. The teacher is a hybrid of the base model and BM25 over the same corpus (both
z-normalised over the query's top candidates, equal weight; no label, no network, no hub model),
and the student learns the teacher's ranking of every text in its batch (`emerge.training.distill_loss`;
or, `distill_loss="pairwise"`, MarginMSE on each row's own negatives).

Because the dense half of the teacher is the base model itself, the target margin is the base
model's own margin plus what BM25 adds: the student starts at its target on everything the base
already ranks like the hybrid, and only moves where corpus term statistics (rare domain words)
say the base is wrong. That keeps forgetting small, and a false negative (a "negative" that is
in fact relevant) gets a small or negative target margin instead of being pushed away.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse

from emerge.errors import InputError
from emerge.training.lexical import BM25Index
from emerge.training.pairs import cut_out

log = logging.getLogger(__name__)

TEACHER_DEPTH = 100  # candidates over which each score is z-normalised per query


def pseudo_queries(rows: pl.DataFrame, texts: dict[str, str], per_document: int, window_chars: int,
                   seed: int, max_queries: int | None = None) -> pl.DataFrame:
    """Up to `per_document` selected spans per document (most relevant first; ties drawn by `seed`),
    each with its document's window around it, the span cut out. Columns: query, positive, doc_id.
    Past `max_queries`, every document's first query is kept before any document's second."""
    missing = sorted(set(rows["doc_id"].cast(pl.String)) - set(texts))
    if missing:
        raise InputError(f"{len(missing)} training documents have no text (first: {missing[0]!r})")
    rng = np.random.default_rng(seed)
    picked = (rows.with_columns(pl.Series("_tie", rng.random(rows.height)))
              .sort(["doc_id", "relevance", "_tie"], descending=[False, True, False])
              .group_by("doc_id", maintain_order=True).head(per_document))
    if max_queries is not None and picked.height > max_queries:
        picked = (picked.with_columns(pl.int_range(pl.len()).over("doc_id").alias("_nth"),
                                      pl.Series("_draw", rng.random(picked.height)))
                  .sort(["_nth", "_draw"]).head(max_queries))
    out = []
    for doc, span, start, end in picked.select("doc_id", "text_span", "start_char", "end_char").iter_rows():
        positive = cut_out(texts[str(doc)], start, end, window_chars)
        if positive:
            out.append((span, positive, str(doc)))
    return pl.DataFrame(out, schema=["query", "positive", "doc_id"], orient="row")


def fit_to_tokens(model, texts: list[str]) -> list[str]:
    """Each text cut where the model's tokenizer stops reading it (`max_seq_length`), so the teacher
    scores exactly the text the student will see."""
    limit = max(1, int(model.max_seq_length) - 2)  # [CLS] and [SEP]
    enc = model.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=limit,
                          return_offsets_mapping=True)
    return [t[:offsets[-1][1]] if offsets else t for t, offsets in zip(texts, enc["offset_mapping"])]


_SENTENCE_END = re.compile(r"\n|(?<=[.?!])\s")


def _sentence_bounds(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line or sentence of `text`, in order; the first is its opening."""
    bounds, begin = [], 0
    for m in _SENTENCE_END.finditer(text):
        bounds.append((begin, m.start()))
        begin = m.end()
    return bounds + [(begin, len(text))]


def leading_sentences(rows: pl.DataFrame, texts: dict[str, str], window_chars: int, max_words: int = 40,
                      min_words: int = 3) -> pl.DataFrame:
    """Each document's opening line or sentence as its pseudo-query (a title, a subject line, a
    lead), the rest of the document as the positive. Documents whose opening is shorter than
    `min_words` or longer than `max_words` give no query. Columns: query, positive, doc_id."""
    out = []
    for doc in sorted(set(rows["doc_id"].cast(pl.String))):
        text = texts[doc].strip()
        bounds = _sentence_bounds(text)
        if len(bounds) < 2:
            continue
        query, rest = text[:bounds[0][1]].strip(), text[bounds[1][0]:].strip()
        if min_words <= len(query.split()) <= max_words and rest:
            out.append((query, rest[:window_chars], doc))
    return pl.DataFrame(out, schema=["query", "positive", "doc_id"], orient="row")


def document_sentences(rows: pl.DataFrame, texts: dict[str, str], window_chars: int, per_document: int,
                       seed: int, max_queries: int | None = None, max_words: int = 40,
                       min_words: int = 5) -> pl.DataFrame:
    """Each document's opening line or sentence and up to `per_document - 1` of its other sentences
    (drawn by `seed`) as pseudo-queries; the positive is the document with that sentence cut out,
    read from its start as the evaluation reads it. The opening is a title-like query; the other
    sentences ask for what a document says further down, where the leading-sentence source has
    nothing to teach. Past `max_queries`, every document's opening is kept before any other
    sentence. Columns: query, positive, doc_id."""
    rng = np.random.default_rng(seed)
    out = []
    for doc in sorted(set(rows["doc_id"].cast(pl.String))):
        text = texts[doc].strip()
        bounds = _sentence_bounds(text)
        words = [len(text[start:end].split()) for start, end in bounds]
        # the opening follows leading_sentences' rule (a title may be 3 words); a body sentence needs min_words
        picked = [bounds[0]] if len(bounds) > 1 and 3 <= words[0] <= max_words else []
        body = [b for b, n in zip(bounds[1:], words[1:]) if min_words <= n <= max_words]
        extra = per_document - len(picked)
        if body and extra > 0:
            picked += [body[k] for k in sorted(rng.choice(len(body), size=min(extra, len(body)), replace=False))]
        for nth, (start, end) in enumerate(picked):
            positive = f"{text[:start].strip()} {text[end:].strip()}".strip()[:window_chars]
            if positive:
                out.append((text[start:end].strip(), positive, doc, nth, rng.random()))
    frame = pl.DataFrame(out, schema=["query", "positive", "doc_id", "_nth", "_draw"], orient="row")
    if max_queries is not None and frame.height > max_queries:
        frame = frame.sort(["_nth", "_draw"]).head(max_queries)
    return frame.drop("_nth", "_draw")


_WORD = re.compile(r"[^\W\d_][\w\-']*")


def keyword_queries(rows: pl.DataFrame, texts: dict[str, str], window_chars: int, seed: int,
                    min_terms: int = 2, max_terms: int = 5, sentences: pl.DataFrame | None = None) -> pl.DataFrame:
    """Each document's opening line or sentence (its title, subject line or lead) shortened to
    its most distinctive words, the way people type a query into a search box ("statin breast
    cancer survival"); the rest of the document is the positive. Distinctive = highest idf over
    the training documents (the statistics the teacher's lexical half uses); each query keeps
    `min_terms`..`max_terms` words (drawn by `seed`) in their order. A word of one document only,
    or of under three letters, is never kept (an identifier, a typo or an abbreviation). Whole
    openings are long, well-formed queries that a pre-trained model already matches; the short
    form is where it leans most on word meaning and least on the corpus' rare terms, which is
    what BM25 in the teacher knows. `sentences` (query, positive, doc_id; e.g. `document_sentences`)
    are shortened instead of the openings. Columns: query, positive, doc_id."""
    from emerge.training.lexical import tokenize

    openings = sentences if sentences is not None else leading_sentences(rows, texts, window_chars)
    index = BM25Index.build([_cut_at_space(texts[d].strip(), window_chars) for d in sorted(set(rows["doc_id"].cast(pl.String)))])
    df = np.bincount(index.weights.indices, minlength=len(index.vocab))
    rng = np.random.default_rng(seed)
    out = []
    for opening, rest, doc in openings.iter_rows():
        words = [m.group() for m in _WORD.finditer(opening)]
        stems = tokenize(words)
        scored, seen = [], set()
        for k, (word, stem) in enumerate(zip(words, stems)):
            if stem and len(word) >= 3 and stem[0] in index.vocab and stem[0] not in seen \
                    and df[index.vocab[stem[0]]] >= 2:
                seen.add(stem[0])
                scored.append((index.idf[index.vocab[stem[0]]], k, word))
        n = int(rng.integers(min_terms, max_terms + 1))
        if len(scored) < min_terms:
            continue
        keep = sorted(sorted(scored, key=lambda x: -x[0])[:n], key=lambda x: x[1])
        out.append((" ".join(w for _, _, w in keep), rest, doc))
    return pl.DataFrame(out, schema=["query", "positive", "doc_id"], orient="row")


def _cut_at_space(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, back to the last whitespace so no word is cut in two."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    return text[:cut if cut > 0 else limit]


def document_window(text: str, window_chars: int) -> str:
    """What a document looks like as a training negative: its opening `window_chars`."""
    return text[:window_chars].strip()


@dataclass
class HybridTeacher:
    """Scores = base-model cosine + `lexical_weight` * BM25, both z-normalised per query over the
    query's top `TEACHER_DEPTH` corpus candidates, returned in cosine units (times the dense spread)."""

    model: object
    corpus_texts: list[str]
    lexical_weight: float = 1.0
    batch_size: int = 64
    dtype: str = "float32"  # the forward pass of `model` (see emerge.training.retrieval.encode)

    def __post_init__(self):
        from emerge.training.retrieval import encode

        self._encode = lambda texts: encode(self.model, texts, self.batch_size, dtype=self.dtype)
        self.corpus_vectors = self._encode(self.corpus_texts)
        self.bm25 = BM25Index.build(self.corpus_texts)

    def corpus_scores(self, queries: list[str]):
        """(teacher scores over the corpus, per-query dense and lexical (mean, std) statistics, query vectors)."""
        q = self._encode(queries)
        dense = q @ self.corpus_vectors.T
        lexical = self.bm25.scores(queries)
        dense_stats, lexical_stats = _top_stats(dense), _top_stats(lexical)
        return self._fuse(dense, lexical, dense_stats, lexical_stats), dense_stats, lexical_stats, q

    def _fuse(self, dense, lexical, dense_stats, lexical_stats):
        return dense + lexical_factor(dense_stats, lexical_stats, self.lexical_weight) * (lexical - lexical_stats[0])


def _consistent(queries: pl.DataFrame, teacher: HybridTeacher, doc_index: dict[str, int], top_k: int,
                say, block: int = 512) -> pl.DataFrame:
    """The queries whose own document the teacher ranks within its top `top_k` training documents."""
    keep = np.zeros(queries.height, dtype=bool)
    own = np.array([doc_index[d] for d in queries["doc_id"]])
    texts = queries["query"].to_list()
    for start in range(0, len(texts), block):
        scores = teacher.corpus_scores(texts[start:start + block])[0]
        rows = np.arange(scores.shape[0])
        keep[start:start + len(rows)] = (scores > scores[rows, own[start:start + len(rows)]][:, None]).sum(axis=1) < top_k
    say(f"distillation: {int(keep.sum())}/{queries.height} generated queries rank their own document in the "
        f"teacher's top {top_k}; the rest are dropped")
    if not keep.any():
        raise InputError(f"no generated query ranks its own document in the teacher's top {top_k}: the generator "
                         "writes about something else (check the model) or query_consistency_top_k is too strict")
    return queries.filter(pl.Series(keep))


def _top_stats(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = min(TEACHER_DEPTH, scores.shape[1])
    top = -np.partition(-scores, k - 1, axis=1)[:, :k]
    std = top.std(axis=1, keepdims=True)
    return top.mean(axis=1, keepdims=True), np.where(std > 1e-6, std, 1.0)


def lexical_factor(dense_stats: tuple[np.ndarray, np.ndarray], lexical_stats: tuple[np.ndarray, np.ndarray],
                   lexical_weight: float) -> np.ndarray:
    """Per query (a column), what puts its BM25 scores on its dense scores' spread over each one's
    top documents (`_top_stats`), times `lexical_weight`: the hybrid teacher is dense + factor x BM25,
    up to a constant per query."""
    return lexical_weight * dense_stats[1] / lexical_stats[1]


@dataclass
class InBatchTeacher:
    """The hybrid teacher's score of any training query against any training text, on demand.

    A batch of B triplets holds B(1 + n) texts, and the teacher knows how every query ranks all
    of them, not only its own positive and negatives: `InBatchDistillationLoss` trains on all
    of them, 2B - 1 per query at B = 32 and n = 1 instead of one, for the same forward
    passes. Kept as base-model vectors and BM25 rows (linear in the corpus), so a batch's
    (B x B(1 + n)) block is two small products. Scores equal `HybridTeacher`'s up to a constant
    per query, which no margin sees. Texts 0..Q-1 are the queries' positives, Q.. the corpus.
    """

    query_vectors: np.ndarray
    text_vectors: np.ndarray
    query_terms: sparse.csr_matrix
    text_weights: sparse.csr_matrix
    lexical_scale: np.ndarray  # per query: lexical_weight * dense spread / lexical spread
    query_docs: np.ndarray  # document index of each query
    text_docs: np.ndarray  # document index of each text

    def scores(self, queries: np.ndarray, texts: np.ndarray) -> np.ndarray:
        dense = self.query_vectors[queries] @ self.text_vectors[texts].T
        lexical = (self.query_terms[queries] @ self.text_weights[texts].T).toarray()
        return (dense + self.lexical_scale[queries, None] * lexical).astype(np.float32)


@dataclass
class DistillationSet:
    """Training rows (anchor, positive, negative_1..n, score, group, teacher_ids) and the teacher
    that scores any query of them against any text of them. `score` lists the teacher's scores
    of the row's positive and negatives; `teacher_ids` = [query, positive text, negative texts]
    indices into `teacher`."""

    rows: pl.DataFrame
    teacher: InBatchTeacher

    @property
    def height(self) -> int:
        return self.rows.height


def distillation_triplets(rows: pl.DataFrame, texts: dict[str, str], model, *, queries_per_document: int,
                          negatives_per_query: int, negative_depth: int, window_chars: int,
                          lexical_weight: float, seed: int, max_queries: int | None = None,
                          query_source: str = "spans", keyword_terms: tuple[int, int] = (2, 5),
                          teacher_model=None, generator=None,
                          consistency_top_k: int | None = None, progress=None) -> DistillationSet:
    """Teacher-scored (query, positive, negatives) rows for distillation. Negatives are drawn from
    the teacher's top `negative_depth` training documents, never the query's own document.

    The teacher's dense half is `model` (the base) unless `teacher_model` is given: a larger model
    that ships offline (all-mpnet-base-v2) ranks the corpus better than the student's own base,
    so the student has more to learn than what BM25 adds. Texts are cut where the *student's*
    tokenizer stops (it trains on exactly what the teacher scored); a separate teacher, ~5x the
    cost per text, runs in bfloat16 where the CPU has it natively (`emerge.encoder.resolve_dtype`).

    `query_source="generated"` asks `generator` (`emerge.training.query_generation.QueryGenerator`) for
    each document's query; such a query is kept only if the teacher ranks its own document within
    its top `consistency_top_k` training documents (a query the model made up about something
    else would teach the wrong document)."""
    say = progress or log.info
    docs = sorted(set(rows["doc_id"].cast(pl.String)))
    if len(docs) < negatives_per_query + 2:
        raise InputError(f"distillation needs at least {negatives_per_query + 2} training documents, got {len(docs)}")
    if query_source == "leading_sentence":
        queries = leading_sentences(rows, texts, window_chars)
        if max_queries is not None and queries.height > max_queries:
            queries = queries.sample(n=max_queries, seed=seed)
    elif query_source == "sentences":
        queries = document_sentences(rows, texts, window_chars, queries_per_document, seed, max_queries)
    elif query_source in ("keywords", "sentence_keywords"):
        queries = keyword_queries(rows, texts, window_chars, seed, *keyword_terms,
                                  sentences=document_sentences(rows, texts, window_chars, queries_per_document, seed)
                                  if query_source == "sentence_keywords" else None)
        if max_queries is not None and queries.height > max_queries:
            queries = queries.sample(n=max_queries, seed=seed)
    elif query_source == "generated":
        from emerge.training.query_generation import generated_queries

        if generator is None:
            raise InputError("query_source='generated' needs a query generator (TrainingConfig.query_generator)")
        queries = generated_queries(rows, texts, window_chars, generator, seed, max_queries, progress=say)
    else:
        queries = pseudo_queries(rows, texts, queries_per_document, window_chars, seed, max_queries)
    if queries.height == 0:
        raise InputError("the query generator wrote no usable query (see its log lines)" if query_source == "generated"
                         else "no selected span left a document context to pair with")
    dense = "base model" if teacher_model is None else f"teacher model {getattr(teacher_model, 'emerge_name', '')}".rstrip()
    say(f"distillation: {queries.height} pseudo-queries from {len(docs)} documents; teacher = {dense} + BM25")
    corpus = fit_to_tokens(model, [document_window(texts[d], window_chars) for d in docs])
    queries = queries.with_columns(pl.Series("positive", fit_to_tokens(model, queries["positive"].to_list())))
    if teacher_model is None:
        teacher = HybridTeacher(model, corpus, lexical_weight)
    else:
        from emerge.encoder import resolve_dtype

        teacher = HybridTeacher(teacher_model, corpus, lexical_weight,
                                dtype=resolve_dtype("auto", str(teacher_model.device)))
    doc_index = {d: i for i, d in enumerate(docs)}
    if query_source == "generated" and consistency_top_k is not None:
        queries = _consistent(queries, teacher, doc_index, consistency_top_k, say)
    rng = np.random.default_rng(seed)
    q_texts, pos_texts = queries["query"].to_list(), queries["positive"].to_list()
    n_q = len(q_texts)
    own = np.array([doc_index[d] for d in queries["doc_id"]])
    pos_vectors = teacher._encode(pos_texts)
    pos_weights = teacher.bm25.text_weights(pos_texts)
    q_terms = teacher.bm25.query_terms(q_texts)  # tokenised once: the positives' BM25 and the in-batch teacher
    q_vectors = np.empty_like(pos_vectors)
    negatives = np.empty((n_q, negatives_per_query), dtype=np.int64)
    neg_scores = np.empty((n_q, negatives_per_query), dtype=np.float32)
    pos_scores = np.empty(n_q, dtype=np.float32)
    scale = np.empty(n_q, dtype=np.float64)
    depth = min(negative_depth, len(docs) - 1)
    block = 512
    for start in range(0, n_q, block):
        sl = slice(start, min(start + block, n_q))
        scores, d_stats, l_stats, q_vectors[sl] = teacher.corpus_scores(q_texts[sl])
        scores[np.arange(scores.shape[0]), own[sl]] = -np.inf
        ranked = np.argsort(-scores, axis=1)[:, :depth]
        for i, row in enumerate(ranked):
            pick = rng.choice(depth, size=min(negatives_per_query, depth), replace=False)
            negatives[start + i] = row[np.sort(pick)]
            neg_scores[start + i] = scores[i, negatives[start + i]]
        dense = np.einsum("ij,ij->i", q_vectors[sl], pos_vectors[sl])[:, None]
        lexical = np.asarray(q_terms[sl].multiply(pos_weights[sl]).sum(axis=1))
        pos_scores[sl] = teacher._fuse(dense, lexical, d_stats, l_stats).ravel()
        scale[sl] = lexical_factor(d_stats, l_stats, lexical_weight).ravel()
        say(f"distillation: teacher scored {sl.stop}/{n_q} pseudo-queries")
    in_batch = InBatchTeacher(q_vectors, np.vstack([pos_vectors, teacher.corpus_vectors]),
                              q_terms, sparse.vstack([pos_weights, teacher.bm25.weights]).tocsr(),
                              scale, own, np.concatenate([own, np.arange(len(docs))]))
    frame = {"anchor": q_texts, "positive": pos_texts}
    for j in range(negatives_per_query):
        frame[f"negative_{j + 1}"] = [corpus[i] for i in negatives[:, j]]
    frame["score"] = np.column_stack([pos_scores, neg_scores]).tolist()
    frame["group"] = queries["doc_id"].to_list()
    frame["teacher_ids"] = np.column_stack([np.arange(n_q), np.arange(n_q), n_q + negatives]).tolist()
    return DistillationSet(pl.DataFrame(frame).sample(fraction=1.0, shuffle=True, seed=seed), in_batch)
