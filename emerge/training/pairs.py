"""Training pairs from a curated dataset, split by document so evaluation never sees a trained document.

Both recipes produce (anchor, positive) rows for MultipleNegativesRankingLoss plus a `group`
column that the batch sampler uses to keep false negatives out of a batch: two rows of one
group never share a batch, because the loss would treat one's positive as the other's negative.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from emerge.config import TrainingConfig
from emerge.errors import InputError
from emerge.label_scheme import labelled_rows, scheme_of

PAIR_COLUMNS = ["anchor", "positive", "group", "label", "anchor_doc", "positive_doc", "relevance"]



def split_by_document(dataset: pl.DataFrame, eval_fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, eval) with every document's spans on one side only."""
    docs = np.array(sorted(dataset["doc_id"].unique().to_list()), dtype=object)
    if len(docs) < 2:
        raise InputError(f"need spans from at least 2 documents to hold some out for evaluation, got {len(docs)}")
    order = np.random.default_rng(seed).permutation(len(docs))
    n_eval = min(len(docs) - 1, max(1, int(round(eval_fraction * len(docs)))))
    eval_docs = pl.Series(docs[order[:n_eval]].tolist(), dtype=dataset.schema["doc_id"]).implode()
    is_eval = pl.col("doc_id").is_in(eval_docs)
    return dataset.filter(~is_eval), dataset.filter(is_eval)


def _cap_per_label(pairs: pl.DataFrame, per_label: int) -> pl.DataFrame:
    return (pairs.sort(["label", "relevance"], descending=[False, True])
            .group_by("label", maintain_order=True).head(per_label))


def cut_out(text: str, start: int, end: int, window_chars: int) -> str:
    """`window_chars` of `text` around [start, end) with the span itself removed."""
    half = max(0, (window_chars - (end - start)) // 2)
    left, right = text[max(0, start - half):start], text[end:end + half]
    return " ".join(part.strip() for part in (left, right) if part.strip())


def same_document_pairs(train: pl.DataFrame, label_col: str) -> pl.DataFrame:
    """Neighbouring selected spans of one document and one label.

    Selected spans never overlap, so a pair is two different stretches of text about the same
    thing: the inverse-cloze signal that retrieval models learn from, restricted to spans the
    clustering agrees on. Group = document: other documents' spans, including same-cluster
    ones, are the in-batch negatives that teach fine distinctions inside a topic.
    """
    ordered = train.sort(["doc_id", label_col, "start_char"])
    nxt = ordered.select(pl.all().shift(-1).over(["doc_id", label_col]).name.suffix("_next"))
    both = pl.concat([ordered, nxt], how="horizontal").filter(pl.col("text_span_next").is_not_null())
    return both.select(
        pl.col("text_span").alias("anchor"), pl.col("text_span_next").alias("positive"),
        pl.col("doc_id").cast(pl.String).alias("group"), pl.col(label_col).cast(pl.String).alias("label"),
        pl.col("doc_id").cast(pl.String).alias("anchor_doc"), pl.col("doc_id").cast(pl.String).alias("positive_doc"),
        ((pl.col("relevance") + pl.col("relevance_next")) / 2).alias("relevance"))


def context_pairs(train: pl.DataFrame, texts: dict[str, str], label_col: str, context_chars: int) -> pl.DataFrame:
    """Span -> the document around it with the span cut out (the inverse cloze task).

    The span plays a query, the rest of its document the passage that answers it: exactly the
    mapping retrieval needs, and it works when selection keeps a single span per document.
    Cutting the span out stops the model from matching the copy word for word. Group = document.
    """
    missing = sorted(set(train["doc_id"].cast(pl.String)) - set(texts))
    if missing:
        raise InputError(f"{len(missing)} training documents have no text (first: {missing[0]!r})")
    rows = []
    for r in train.iter_rows(named=True):
        context = cut_out(texts[str(r["doc_id"])], r["start_char"], r["end_char"], context_chars)
        if context:
            rows.append((r["text_span"], context, str(r["doc_id"]), str(r[label_col]), str(r["doc_id"]),
                         str(r["doc_id"]), float(r["relevance"])))
    return pl.DataFrame(rows, schema=PAIR_COLUMNS, orient="row")


def same_cluster_pairs(train: pl.DataFrame, label_col: str, seed: int) -> pl.DataFrame:
    """Spans of different documents in one cluster, paired in relevance order.

    Group = cluster: any other row of the cluster would be a false negative in the batch.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for label, part in train.sort("relevance", descending=True).group_by(label_col, maintain_order=True):
        texts, docs, rel = part["text_span"].to_list(), part["doc_id"].cast(pl.String).to_list(), part["relevance"]
        rel = rel.to_numpy()
        # pair the i-th most relevant span with a random other-document span of the same cluster
        # (8 draws per span: a full permutation per span would make large clusters quadratic)
        for i in range(len(texts)):
            others = [j for j in rng.integers(0, len(texts), size=8) if docs[j] != docs[i]]
            if others:
                j = others[0]
                rows.append((texts[i], texts[j], str(label[0]), str(label[0]), docs[i], docs[j],
                             float(rel[i] + rel[j]) / 2))
    return pl.DataFrame(rows, schema=PAIR_COLUMNS, orient="row")


def build_pairs(train: pl.DataFrame, label_col: str, config: TrainingConfig,
                texts: dict[str, str] | None = None) -> pl.DataFrame:
    """Cluster-dataset pairs (recipe A and its variants), top `pairs_per_label` by relevance per label.

    Raises InputError when the data cannot make a meaningful training set (fewer than
    `min_pairs` pairs, or fewer than two groups so no batch can hold a negative).
    """
    rows = labelled_rows(train, label_col)
    if rows.height == 0:
        raise InputError(f"no span in the training documents has a {label_col} (all noise/unlabelled)")
    if scheme_of(label_col).self_trains:
        raise InputError("topic datasets train by self-training on the topics (emerge.topics.self_training), "
                         "not on label pairs")
    if config.pairing == "distill":
        raise InputError("pairing='distill' trains on teacher-scored triplets (emerge.training.distillation."
                         "distillation_triplets), not on label pairs")
    elif config.pairing == "same_document":
        pairs = same_document_pairs(rows, label_col)
    elif config.pairing == "span_context":
        if texts is None:
            raise InputError("pairing='span_context' needs the documents' texts")
        pairs = context_pairs(rows, texts, label_col, config.context_chars)
    else:
        if rows[label_col].n_unique() < 2:
            raise InputError("a single-cluster dataset cannot train with pairing='same_cluster': every in-batch "
                             "negative would be a false negative; use pairing='same_document'")
        pairs = same_cluster_pairs(rows, label_col, config.seed)
    pairs = _cap_per_label(pairs, config.pairs_per_label)
    if pairs.height < config.min_pairs:
        raise InputError(f"only {pairs.height} training pairs ({config.pairing}"
                         f" pairing, {rows.height} labelled spans); min_pairs={config.min_pairs}. Curate more "
                         "documents or lower min_pairs")
    if pairs["group"].n_unique() < 2:
        raise InputError("all training pairs fall in one group, so no batch can hold an in-batch negative")
    return pairs.sample(fraction=1.0, shuffle=True, seed=config.seed)
