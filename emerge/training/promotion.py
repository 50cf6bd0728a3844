"""Promotion gate: is the fine-tuned model better than its base on this corpus, by a measure
that needs no label? And which point between base and fine-tuned weights is best (WiSE-FT)?

The measures are retrieval on held-out documents (never trained on), each query's document to
be found among the other held-out documents and a sample of training documents. Self-retrieval:
each selected span of a held-out document is a query, its own document with the span cut out
the answer. Search queries: each held-out document's opening cut to its rarest words, the form of
a query typed into a search box. The default gates on their mean: self-retrieval alone rejected
candidates that gained on real queries (a span shares most of its words with its document, so
it measures little of what short-query training teaches), and a model that forgot how to
retrieve, or collapsed, loses on both. They read the corpus only, so they may choose the
interpolation weight and gate promotion.

It guards against forgetting and collapse, not against every loss on a user's own queries: a
recipe that learns the corpus' words the wrong way can raise self-retrieval and still lose on real
queries (BENCHMARKS.md, topic-level queries on NFCorpus). A user who has judged queries of their
own can gate on those instead (`judged_queries_criterion`, a split kept apart from the one the run
reports).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from emerge.training.distillation import document_window, keyword_queries, pseudo_queries
from emerge.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class SelfRetrievalTask:
    queries: list[str]
    answers: list[str]  # each query's own document, span cut out
    query_docs: np.ndarray
    distractors: list[str]
    distractor_docs: np.ndarray


def self_retrieval_task(eval_rows: pl.DataFrame, train_rows: pl.DataFrame, texts: dict[str, str],
                        window_chars: int, seed: int, max_queries: int = 400,
                        max_distractors: int = 600) -> SelfRetrievalTask:
    """Queries from held-out documents; distractors = every held-out document plus training ones."""
    queries = pseudo_queries(eval_rows, texts, 1, window_chars, seed)
    return _retrieval_task(queries, "self-retrieval", eval_rows, train_rows, texts, window_chars, seed,
                           max_queries, max_distractors)


def search_query_task(eval_rows: pl.DataFrame, train_rows: pl.DataFrame, texts: dict[str, str],
                      window_chars: int, seed: int, keyword_terms: tuple[int, int] = (2, 5),
                      max_queries: int = 400, max_distractors: int = 600) -> SelfRetrievalTask:
    """Search-box queries of held-out documents (`keyword_queries`: an opening's most distinctive
    words, idf over the held-out documents), each to find its document among the same distractors
    as self-retrieval. A short query leans on word meaning the way users' queries do, where a whole
    span shares most of its words with its own document. The answer is the document as every
    distractor is shown (its opening window, title included, as a search engine indexes it), so
    that nothing but relevance tells it apart."""
    queries = keyword_queries(eval_rows, texts, window_chars, seed, *keyword_terms)
    queries = queries.with_columns(pl.Series("positive", [document_window(texts[d], window_chars)
                                                          for d in queries["doc_id"]], dtype=pl.String))
    return _retrieval_task(queries, "search-query", eval_rows, train_rows, texts, window_chars, seed,
                           max_queries, max_distractors)


def _retrieval_task(queries: pl.DataFrame, what: str, eval_rows: pl.DataFrame, train_rows: pl.DataFrame,
                    texts: dict[str, str], window_chars: int, seed: int, max_queries: int,
                    max_distractors: int) -> SelfRetrievalTask:
    if queries.height < 2:
        raise InputError(f"only {queries.height} held-out document(s) give a {what} query; "
                         "hold out more documents (eval_fraction)")
    queries = queries.sample(n=min(max_queries, queries.height), shuffle=True, seed=seed)
    rng = np.random.default_rng(seed)
    held = sorted(set(eval_rows["doc_id"].cast(pl.String)))
    trained = sorted(set(train_rows["doc_id"].cast(pl.String)))
    n_extra = max(0, min(len(trained), max_distractors - len(held)))
    extra = [trained[i] for i in sorted(rng.choice(len(trained), size=n_extra, replace=False))] if n_extra else []
    docs = held + extra
    return SelfRetrievalTask(queries["query"].to_list(), queries["positive"].to_list(),
                             queries["doc_id"].to_numpy(), [document_window(texts[d], window_chars) for d in docs],
                             np.array(docs, dtype=object))


def encode_tasks(model, tasks: list[SelfRetrievalTask], batch_size: int = 64) -> dict[tuple[str, str], np.ndarray]:
    """Each distinct text of `tasks` embedded once per role, keyed by (role, text): the tasks share
    their distractors, and a search query's answer is its document shown as a distractor, so the
    mean of both tasks embeds ~1,000 documents a model instead of ~2,000 (the gate's main cost).
    Queries are embedded as queries and answers and distractors as documents, which an asymmetric
    model (`emerge.training.query_side`) reads with different encoders."""
    from emerge.training.retrieval import encode

    out = {}
    for role, texts in (("query", [t for task in tasks for t in task.queries]),
                        ("document", [t for task in tasks for t in (*task.answers, *task.distractors)])):
        unique = list(dict.fromkeys(texts))
        out |= {(role, t): v for t, v in zip(unique, encode(model, unique, batch_size, role=role))}
    return out


def self_retrieval_score(model, task: SelfRetrievalTask, batch_size: int = 64,
                         vectors: dict[tuple[str, str], np.ndarray] | None = None) -> dict[str, float]:
    """MRR@10 and hits@1 of each query's own document (its other distractor copy excluded).
    `vectors`: the texts already embedded by this model (`encode_tasks`)."""
    vectors = vectors if vectors is not None else encode_tasks(model, [task], batch_size)
    q = np.stack([vectors["query", t] for t in task.queries])
    answers = np.nan_to_num(np.einsum("ij,ij->i", q, np.stack([vectors["document", t] for t in task.answers])),
                            nan=-np.inf)
    others = np.nan_to_num(q @ np.stack([vectors["document", t] for t in task.distractors]).T, nan=-np.inf)
    others[task.query_docs[:, None] == task.distractor_docs[None, :]] = -np.inf
    # a tie counts against the answer: a collapsed model (every vector alike) must score ~0, not 1
    rank = np.where(np.isfinite(answers), 1 + (others >= answers[:, None]).sum(axis=1), others.shape[1] + 1)
    return {"mrr@10": float(np.where(rank <= 10, 1.0 / rank, 0.0).mean()), "hits@1": float((rank == 1).mean())}


@dataclass(frozen=True)
class GateCriterion:
    """What the gate compares: `measure(model)[name]`, higher is better, named `name.metric` in metrics.

    `measure(model)` returns every label-free score the criterion computes on the way (the mean of
    two tasks returns both tasks too), so a run records each view under the same name whichever
    criterion gated it, and nothing has to score them a second time."""

    name: str  # "self_retrieval", "search_queries", "self_and_search" or "judged_queries"
    metric: str
    description: str
    measure: Callable[[object], dict[str, float]]  # its own score under `name`, and any parts of it
    queries: int = 0  # how many queries it scores a model on


def self_retrieval_criterion(task: SelfRetrievalTask) -> GateCriterion:
    return GateCriterion("self_retrieval", "mrr@10", "held-out self-retrieval MRR@10",
                         lambda model: {"self_retrieval": self_retrieval_score(model, task)["mrr@10"]},
                         len(task.queries))


def search_query_criterion(task: SelfRetrievalTask) -> GateCriterion:
    return GateCriterion("search_queries", "mrr@10", "held-out search-query MRR@10",
                         lambda model: {"search_queries": self_retrieval_score(model, task)["mrr@10"]},
                         len(task.queries))


def self_and_search_criterion(spans: SelfRetrievalTask, searches: SelfRetrievalTask) -> GateCriterion:
    """The mean of the two held-out MRR@10s: a candidate must gain on one more than it loses on the other."""

    def measure(model) -> dict[str, float]:
        vectors = encode_tasks(model, [spans, searches])
        parts = {"self_retrieval": self_retrieval_score(model, spans, vectors=vectors)["mrr@10"],
                 "search_queries": self_retrieval_score(model, searches, vectors=vectors)["mrr@10"]}
        return parts | {"self_and_search": 0.5 * (parts["self_retrieval"] + parts["search_queries"])}

    return GateCriterion("self_and_search", "mrr@10", "mean of held-out self-retrieval and search-query MRR@10",
                         measure, len(spans.queries) + len(searches.queries))


def label_free_criterion(name: str, eval_rows: pl.DataFrame, train_rows: pl.DataFrame, texts: dict[str, str],
                         window_chars: int, seed: int, keyword_terms: tuple[int, int] = (2, 5),
                         progress=None) -> GateCriterion:
    """`self_retrieval`, `search_queries` or `self_and_search` on the held-out documents. Where the held-out
    documents give too few search-box queries (a tiny corpus), it says so and gates on
    self-retrieval alone rather than stopping a run that trained fine."""
    spans = self_retrieval_task(eval_rows, train_rows, texts, window_chars, seed)
    if name == "self_retrieval":
        return self_retrieval_criterion(spans)
    try:
        searches = search_query_task(eval_rows, train_rows, texts, window_chars, seed, keyword_terms)
    except InputError as exc:
        (progress or log.info)(f"gate: {exc}; gating on self-retrieval alone")
        return self_retrieval_criterion(spans)
    return search_query_criterion(searches) if name == "search_queries" else self_and_search_criterion(spans, searches)


def judged_queries_criterion(collection, window: int | None = None) -> GateCriterion:
    """nDCG@10 on the user's judged queries (a BEIR collection), at `window` tokens (default: the
    model's own)."""
    from emerge.training.retrieval import evaluate_beir

    def score(model) -> float:
        kept = model.max_seq_length
        model.max_seq_length = window or getattr(model, "emerge_window", kept)
        try:
            return evaluate_beir(model, collection)["ndcg@10"]
        finally:
            model.max_seq_length = kept

    return GateCriterion("judged_queries", "ndcg@10", f"judged queries nDCG@10 ({len(collection.query_ids)} queries)",
                         lambda model: {"judged_queries": score(model)}, len(collection.query_ids))


def interpolate(base, tuned, weight: float):
    """WiSE-FT: a copy of `tuned` with weights (1 - weight) * base + weight * tuned. Of an
    asymmetric `tuned` (`emerge.training.query_side`), only the query encoder moves: its document
    encoder is the base's already."""
    from emerge.training.query_side import asymmetric_model, is_asymmetric, query_encoder

    if is_asymmetric(tuned):
        mixed = asymmetric_model(interpolate(base, query_encoder(tuned), weight), base)
        mixed.emerge_window = getattr(tuned, "emerge_window", mixed.max_seq_length)
        mixed.max_seq_length = tuned.max_seq_length
        return mixed
    mixed = copy.deepcopy(tuned)
    base_state = base.state_dict()
    state = {k: (v if not v.is_floating_point() else (1.0 - weight) * base_state[k] + weight * v)
             for k, v in tuned.state_dict().items()}
    mixed.load_state_dict(state)
    return mixed


@dataclass
class PromotionDecision:
    weight: float  # the chosen interpolation weight (1.0 = the trained weights as they are)
    promoted: bool
    min_gain: float
    gated: bool = True
    criterion: str = "self_retrieval"
    metric: str = "mrr@10"
    description: str = "held-out self-retrieval MRR@10"
    # every measure of the criterion (its own, under `criterion`, and its parts): at the base, and at each weight
    base_measures: dict[str, float] = field(default_factory=dict)
    measures_by_weight: dict[float, dict[str, float]] = field(default_factory=dict)

    @property
    def base_score(self) -> float:
        return self.base_measures[self.criterion]

    @property
    def scores_by_weight(self) -> dict[float, float]:
        return {w: measured[self.criterion] for w, measured in self.measures_by_weight.items()}

    @property
    def candidate_score(self) -> float:
        return self.measures_by_weight[self.weight][self.criterion]

    @property
    def reason(self) -> str:
        verdict = "promoted" if self.promoted else "not promoted: the base (or the previous model) stays current"
        if not self.gated:
            verdict = "published without the gate (gate=false)"
        return (f"{self.description} base {self.base_score:.4f} vs fine-tuned {self.candidate_score:.4f} "
                f"(weight {self.weight:g}; needs > base + {self.min_gain:g}): {verdict}")


def choose_and_gate(base, tuned, task: SelfRetrievalTask | GateCriterion, weights: tuple[float, ...],
                    min_gain: float, progress=None, gate: bool = True):
    """(the model to publish or None, decision). Scores base and every interpolation weight by the
    criterion (a self-retrieval task: held-out self-retrieval); the best weight is the candidate,
    promoted only if it beats the base by more than `min_gain`."""
    say = progress or log.info
    criterion = task if isinstance(task, GateCriterion) else self_retrieval_criterion(task)
    base_measures = criterion.measure(base)
    base_score = base_measures[criterion.name]
    say(f"gate: base {criterion.description} {base_score:.4f}{_parts(base_measures, criterion.name)}")
    measures, models = {}, {}
    for w in weights:
        models[w] = tuned if w == 1.0 else interpolate(base, tuned, w)
        measures[w] = criterion.measure(models[w])
        say(f"gate: weight {w:g} -> {criterion.metric} {measures[w][criterion.name]:.4f}"
            f"{_parts(measures[w], criterion.name)}")
    scores = {w: m[criterion.name] for w, m in measures.items()}
    best = max(weights, key=lambda w: (scores[w], -abs(1.0 - w)))
    better = scores[best] > base_score + min_gain
    decision = PromotionDecision(best, better or not gate, min_gain, gate, criterion.name, criterion.metric,
                                 criterion.description, base_measures, measures)
    return models[best], decision


def _parts(measures: dict[str, float], name: str) -> str:
    parts = [f"{k} {v:.4f}" for k, v in measures.items() if k != name]
    return f" ({', '.join(parts)})" if parts else ""
