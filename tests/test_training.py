"""Fine-tuning: pair construction, the group-exclusive sampler, retrieval metrics, BEIR loading,
and a real training run of a tiny random BERT through SentenceTransformerTrainer."""

import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emerge.config import TrainingConfig
from emerge.errors import ConfigError, InputError
from emerge.training.pairs import build_pairs, split_by_document
from emerge.training.retrieval import load_beir, retrieval_metrics, top_k
from emerge.training.trainer import group_exclusive_batches

WORDS = {
    0: "rotor blade stall lift wing airfoil pressure",
    1: "soup onion garlic simmer broth pepper salt",
    2: "invoice refund payment card charge bank fee",
}


def make_dataset(n_docs: int = 12, spans_per_doc: int = 3, n_labels: int = 3, seed: int = 0) -> pl.DataFrame:
    """A curated-dataset-shaped frame: each document about one label, spans in order, no overlap."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_docs):
        label = d % n_labels
        vocab = WORDS[label % 3].split()
        for s in range(spans_per_doc):
            text = " ".join(rng.choice(vocab, size=8)) + f" doc{d} part{s}"
            rows.append({"text_span": text, "doc_id": f"d{d:03d}", "source": "src", "start_char": s * 100,
                         "end_char": s * 100 + 60, "cluster_id": label, "cluster_title": f"t{label}",
                         "relevance": float(rng.uniform(0.5, 1.0)), "quality": 0.9})
    return pl.DataFrame(rows)


def test_training_config_names_the_bad_field():
    with pytest.raises(ConfigError, match="^batch_size"):
        TrainingConfig(batch_size=1)
    with pytest.raises(ConfigError, match="^pairing"):
        TrainingConfig(pairing="random")
    with pytest.raises(ConfigError, match="^eval_fraction"):
        TrainingConfig(eval_fraction=1.0)


@settings(max_examples=30, deadline=None)
@given(n_docs=st.integers(2, 40), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 10))
def test_split_by_document_never_shares_a_document(n_docs, fraction, seed):
    data = make_dataset(n_docs=n_docs, spans_per_doc=2)
    train, held = split_by_document(data, fraction, seed)
    assert train.height + held.height == data.height
    assert set(train["doc_id"]).isdisjoint(set(held["doc_id"]))
    assert train.height and held.height


def test_split_needs_two_documents():
    with pytest.raises(InputError, match="at least 2 documents"):
        split_by_document(make_dataset(n_docs=1), 0.2, 0)


def test_same_document_pairs_are_two_spans_of_one_document_and_label():
    data = make_dataset()
    pairs = build_pairs(data, "cluster_id", TrainingConfig(pairing="same_document", min_pairs=1))
    by_text = {r["text_span"]: r for r in data.iter_rows(named=True)}
    for row in pairs.iter_rows(named=True):
        a, p = by_text[row["anchor"]], by_text[row["positive"]]
        assert a["doc_id"] == p["doc_id"] == row["group"]
        assert a["cluster_id"] == p["cluster_id"]
        assert a["text_span"] != p["text_span"]
    # 3 spans per document -> 2 neighbouring pairs per document
    assert pairs.height == 2 * data["doc_id"].n_unique()


def test_same_cluster_pairs_cross_documents_and_group_by_cluster():
    data = make_dataset()
    pairs = build_pairs(data, "cluster_id", TrainingConfig(pairing="same_cluster", min_pairs=1))
    label_of = dict(zip(data["text_span"], data["cluster_id"]))
    doc_of = dict(zip(data["text_span"], data["doc_id"]))
    assert pairs.height > 0
    for row in pairs.iter_rows(named=True):
        assert label_of[row["anchor"]] == label_of[row["positive"]] == int(row["group"])
        assert doc_of[row["anchor"]] != doc_of[row["positive"]]


def test_noise_spans_never_enter_pairs():
    data = make_dataset().with_columns(pl.when(pl.col("doc_id") < "d004").then(-1).otherwise(pl.col("cluster_id"))
                                       .alias("cluster_id"))
    pairs = build_pairs(data, "cluster_id", TrainingConfig(pairing="same_document", min_pairs=1))
    noise_texts = set(data.filter(pl.col("cluster_id") == -1)["text_span"])
    assert noise_texts.isdisjoint(set(pairs["anchor"]) | set(pairs["positive"]))


def test_pairs_per_label_keeps_the_most_relevant():
    data = make_dataset(n_docs=30)
    all_pairs = build_pairs(data, "cluster_id", TrainingConfig(pairing="same_document", min_pairs=1))
    capped = build_pairs(data, "cluster_id", TrainingConfig(pairing="same_document", min_pairs=1, pairs_per_label=3))
    assert capped.group_by("label").len()["len"].max() == 3
    for label, part in capped.group_by("label"):
        pool = all_pairs.filter(pl.col("label") == label[0])["relevance"].sort(descending=True)
        assert sorted(part["relevance"], reverse=True) == pytest.approx(pool.head(3).to_list())


def test_self_training_pairs_join_only_texts_of_one_topic():
    from emerge.topics.self_training import self_training_pairs
    from emerge.topics.topic import Topic

    topics = [Topic("a", "Refunds", "money back", ["refund please", "give my money back"]),
              Topic("b", "Shipping", examples=["where is my parcel"])]
    texts = ["refund me now", "I want a refund", "parcel is late", "hello there", "refund twice"]
    labels = np.array([0, 0, 1, -1, 0])
    docs = ["d1", "d2", "d3", "d4", "d1"]
    pairs = self_training_pairs(topics, texts, labels, docs, pairs_per_text=3, seed=0)
    topic_of = {"refund please": "a", "give my money back": "a", "where is my parcel": "b",
                "Refunds: money back": "a", "Shipping": "b"} | {t: "ab"[l] for t, l in zip(texts, labels) if l >= 0}
    for anchor, positive, group in pairs.iter_rows():
        assert topic_of[anchor] == topic_of[positive] == group  # never across topics
    assert "hello there" not in set(pairs["anchor"]) | set(pairs["positive"])  # unlabelled text: never a pair
    # the topic text anchors each example; same-topic text pairs never join one document
    assert {("Refunds: money back", e) for e in topics[0].examples} <= set(zip(pairs["anchor"], pairs["positive"]))
    doc_of = dict(zip(texts, docs))
    assert all(doc_of[a] != doc_of[p] for a, p in zip(pairs["anchor"], pairs["positive"]) if a in doc_of)


def test_confident_rows_keep_the_largest_margins_per_topic_above_the_floor():
    from emerge.topics.self_training import confident_rows

    best = np.array([0, 0, 0, 1, 1, 1])
    relevance = np.array([0.9, 0.8, 0.3, 0.9, 0.6, 0.7])
    margin = np.array([0.1, 0.5, 0.9, 0.2, 0.3, 0.01])
    rows = confident_rows(best, relevance, margin, n_topics=2, per_topic=1, min_relevance=0.5)
    assert rows.tolist() == [1, 4]  # row 2 has the largest margin but is below the relevance floor


@pytest.mark.parametrize("data, config, match", [
    (make_dataset(n_docs=2, spans_per_doc=2), TrainingConfig(pairing="same_document", min_pairs=16), "min_pairs=16"),
    (make_dataset(n_labels=1), TrainingConfig(pairing="same_cluster", min_pairs=1), "single-cluster"),
    (make_dataset().with_columns(pl.lit(-1).alias("cluster_id")), TrainingConfig(pairing="same_document"), "all noise"),
])
def test_datasets_that_cannot_train_fail_clearly(data, config, match):
    with pytest.raises(InputError, match=match):
        build_pairs(data, "cluster_id", config)


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(0, 6), min_size=0, max_size=120), batch=st.integers(2, 9), seed=st.integers(0, 5))
def test_group_exclusive_batches(groups, batch, seed):
    groups = np.array(groups)
    batches = group_exclusive_batches(groups, batch, seed)
    used = [i for b in batches for i in b]
    assert len(used) == len(set(used))  # each row at most once
    for b in batches:
        assert 2 <= len(b) <= batch
        assert len(set(groups[b])) == len(b)  # no group twice in a batch
    # rows are only left out once a single group remains
    left = np.setdiff1d(np.arange(len(groups)), used)
    assert len(set(groups[left])) <= 1


def test_retrieval_metrics_by_hand():
    # ranking a, b, c; b is grade 2, c grade 1, d (not retrieved) grade 1
    m = retrieval_metrics([["a", "b", "c"]], [{"b": 2, "c": 1, "d": 1, "e": 0}])
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["recall@100"] == pytest.approx(2 / 3)
    assert (m["hits@1"], m["hits@5"]) == (0.0, 1.0)


def test_top_k_is_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2]]


def write_beir(root, qrels: str):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": str(i), "title": f"t{i}", "text": f"text {i}"})
                                                 for i in range(4)))
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": f"query {q}"}) for q in "123"))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)


def test_beir_queries_without_judgments_are_skipped_and_counted(tmp_path):
    write_beir(tmp_path, "1\t0\t1\n2\t1\t0\n1\t99\t1\n")
    coll = load_beir(tmp_path)
    assert coll.query_ids == ["1"]
    assert coll.skipped == {"queries_without_judgments": 2, "judgments_unknown_doc": 1}
    assert coll.corpus_texts[0] == "t0\ntext 0"


def test_beir_without_any_judgment_or_file_fails(tmp_path):
    write_beir(tmp_path / "a", "2\t1\t0\n")
    with pytest.raises(InputError, match="no query has a positive judgment"):
        load_beir(tmp_path / "a")
    with pytest.raises(InputError, match="missing qrels"):
        load_beir(tmp_path / "a", split="dev")


def test_fine_tune_changes_the_model_and_reports_base_and_tuned(tiny_model_dir, tmp_path):
    """A real SentenceTransformerTrainer run on the tiny random BERT; the saved folder loads again."""
    import torch
    from sentence_transformers import SentenceTransformer

    from emerge.training.finetune import fine_tune_and_evaluate

    data = make_dataset(n_docs=24)
    config = TrainingConfig(pairing="same_document", min_pairs=4, batch_size=8, max_seq_length=32, learning_rate=1e-3, epochs=2,
                            eval_fraction=0.25)
    logged = []
    report = fine_tune_and_evaluate(data, "cluster_id", tiny_model_dir, tmp_path / "model", config,
                                    on_log=logged.append)
    tuned = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    base = SentenceTransformer(str(tiny_model_dir), device="cpu")
    w_tuned = tuned[0].auto_model.embeddings.word_embeddings.weight
    w_base = base[0].auto_model.embeddings.word_embeddings.weight
    assert not torch.allclose(w_tuned, w_base)
    assert report.training.steps > 0 and logged
    for metric in ("ndcg@10", "mrr@10", "hits@1", "hits@10"):
        delta = report.metrics[f"heldout.fine_tuned.{metric}"] - report.metrics[f"heldout.base.{metric}"]
        assert report.metrics[f"heldout.delta.{metric}"] == pytest.approx(delta, abs=1e-4)
    stats = report.dataset_stats
    assert stats["train_documents"] + stats["eval_documents"] == 24
    assert not list(tmp_path.glob(".model.tmp-*"))  # the temporary training folder is gone
    assert set(report.sanity.columns) >= {"query", "model", "span", "same_label"}


def test_missing_base_model_is_named(tmp_path):
    from emerge.training.finetune import fine_tune_and_evaluate

    with pytest.raises(InputError, match="does not exist"):
        fine_tune_and_evaluate(make_dataset(n_docs=24), "cluster_id", tmp_path / "nope", tmp_path / "m",
                               TrainingConfig(pairing="same_document", min_pairs=4))


def test_span_context_pairs_cut_the_span_out_of_its_own_document():
    texts = {f"d{d:03d}": " ".join(f"w{d}_{i}" for i in range(200)) for d in range(6)}
    rows = []
    for d, text in enumerate(texts.values()):
        start = text.index(f"w{d}_50 ")
        end = text.index(f"w{d}_60 ") - 1
        rows.append({"text_span": text[start:end], "doc_id": f"d{d:03d}", "start_char": start, "end_char": end,
                     "cluster_id": d % 2, "relevance": 1.0})
    pairs = build_pairs(pl.DataFrame(rows), "cluster_id", TrainingConfig(pairing="span_context", min_pairs=1,
                                                                         context_chars=300), texts)
    assert pairs.height == 6
    for row in pairs.iter_rows(named=True):
        doc = texts[row["group"]]
        assert row["anchor"] in doc and row["anchor"] not in row["positive"]
        assert all(word in doc.split() for word in row["positive"].split())
        assert len(row["positive"]) <= 300 + 1
    with pytest.raises(InputError, match="needs the documents' texts"):
        build_pairs(pl.DataFrame(rows), "cluster_id", TrainingConfig(pairing="span_context", min_pairs=1))


def test_a_self_trained_model_keeps_the_base_models_share_of_none_of_the_topics(tiny_model_dir, tmp_path):
    """Self-training stretches the calibrated scale; the trained model's saved threshold leaves the
    same share of the unlabelled texts outside every topic as the base model did at its own."""
    from emerge.topics.late_interaction import DEFAULT_RELEVANCE_THRESHOLD
    from emerge.topics.self_training import (RELEVANCE_FILE, SelfTrainingConfig, default_scorer,
                                      model_relevance_threshold, self_train)
    from emerge.topics.topic import Topic

    topics = [Topic("r", "Refunds", "money back", ["refund please", "give my money back", "I want a refund"]),
              Topic("s", "Shipping", "parcels", ["where is my parcel", "the parcel is late", "track my package"]),
              Topic("w", "Weather", "forecast", ["will it rain", "is it sunny today", "weather this weekend"])]
    texts = [f"{w} {n}" for n in range(8) for w in ("refund my order", "parcel not here", "rain tomorrow",
                                                     "the cat sat", "a song about trains")]
    config = SelfTrainingConfig(per_topic=6, min_relevance=0.0, threshold_sample=30).with_training(batch_size=3, seed=1)
    report = self_train(topics, texts, tiny_model_dir, tmp_path / "model", config)

    assert (tmp_path / "model" / RELEVANCE_FILE).is_file()
    assert model_relevance_threshold(tmp_path / "model", None) == report.relevance_threshold
    assert model_relevance_threshold(tiny_model_dir, None) is None  # the base carries none
    assert len(report.threshold_texts) == 30 and set(report.threshold_texts) <= set(texts)
    base = default_scorer(topics)(tiny_model_dir)
    assert base.relevance_threshold == DEFAULT_RELEVANCE_THRESHOLD
    _, base_rel = base.decide(base.score_texts(report.threshold_texts))
    assert report.none_share == pytest.approx(float(np.mean(base_rel < DEFAULT_RELEVANCE_THRESHOLD)), abs=1e-4)
    trained = default_scorer(topics)(tmp_path / "model")
    assert trained.relevance_threshold == report.relevance_threshold  # the factory reads the saved threshold
    _, rel = trained.decide(trained.score_texts(report.threshold_texts))
    assert abs(float(np.mean(rel < trained.relevance_threshold)) - report.none_share) <= 2 / 30
    assert report.relevance_threshold == pytest.approx(float(np.quantile(rel, report.none_share)), abs=1e-4)


def test_hard_negatives_come_from_another_group_and_keep_the_margin(tiny_model_dir):
    """Each mined negative is another group's positive, at least `margin` less similar to the
    anchor than its own positive; a margin nothing can meet leaves every row without one."""
    from sentence_transformers import SentenceTransformer

    from emerge.training.retrieval import encode
    from emerge.training.trainer import mine_cross_group_negatives

    data = make_dataset(n_docs=18)
    pairs = pl.DataFrame({"anchor": data["text_span"].to_list()[0::3], "positive": data["text_span"].to_list()[1::3],
                          "group": data["cluster_id"].to_list()[0::3]})
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    margin = 0.05
    mined = mine_cross_group_negatives(model, pairs, margin)
    assert mined.height == pairs.height and mined["negative"].null_count() < mined.height
    group_of = dict(zip(pairs["positive"].to_list(), pairs["group"].to_list()))
    rows = mined.filter(pl.col("negative").is_not_null())
    a, p, n = (encode(model, rows[c].to_list()) for c in ("anchor", "positive", "negative"))
    for i, (group, negative) in enumerate(zip(rows["group"].to_list(), rows["negative"].to_list())):
        assert group_of[negative] != group
        assert a[i] @ n[i] <= a[i] @ p[i] - margin + 1e-5
    assert mine_cross_group_negatives(model, pairs, margin=3.0)["negative"].null_count() == pairs.height


def test_a_small_fine_tune_retrieves_better_than_its_base_on_held_out_documents(tiny_model_dir, tmp_path):
    """Behaviour, not timing: spans of held-out documents find their document's other spans better
    after training than before (the random base model knows nothing of the vocabulary)."""
    from emerge.training.finetune import fine_tune_and_evaluate

    config = TrainingConfig(pairing="same_document", min_pairs=4, batch_size=8, max_seq_length=32,
                            learning_rate=1e-3, epochs=3, eval_fraction=0.25)
    report = fine_tune_and_evaluate(make_dataset(n_docs=24), "cluster_id", tiny_model_dir, tmp_path / "model", config)
    assert report.metrics["heldout.base.ndcg@10"] < 1.0  # room to improve: the check can fail
    assert report.metrics["heldout.fine_tuned.ndcg@10"] > report.metrics["heldout.base.ndcg@10"]
    assert report.metrics["heldout.fine_tuned.mrr@10"] >= report.metrics["heldout.base.mrr@10"]


def test_near_groups_marks_each_groups_nearest_others_both_ways():
    from emerge.training.near_label_loss import near_groups

    # two tight pairs of centroids far apart: (0, 1) and (2, 3); group 4 sits between them
    centroids = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [0.7, 0.7]])
    near = near_groups(centroids, 0.25)  # ceil(0.25 * 4) = 1 nearest other group each
    assert near[0, 1] and near[1, 0] and near[2, 3] and near[3, 2]
    assert not near[0, 2] and not near[1, 3] and not near.diagonal().any()
    assert (near == near.T).all()
    assert not near_groups(centroids, 0.0).any()
    assert near_groups(centroids, 1.0).sum() == 5 * 4  # every other group


def test_near_group_loss_ignores_masked_negatives_and_equals_mnrl_without_a_mask():
    """The loss is cross-entropy over anchor->positive cosines; a masked positive of a near group
    cannot raise it, and with nothing masked it is sentence-transformers' own MNRL."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from emerge.training.near_label_loss import NearGroupMaskedRankingLoss

    torch.manual_seed(0)
    anchors, positives = torch.randn(4, 8), torch.randn(4, 8)
    positives[1] = anchors[0] * 3  # row 1's positive looks exactly like row 0's anchor: a hard negative for row 0

    class Fixed(torch.nn.Module):  # "encodes" a column by handing back fixed vectors
        def forward(self, features):
            return {"sentence_embedding": features["vectors"]}

    features = [{"vectors": anchors}, {"vectors": positives}]
    labels = torch.tensor([0, 1, 2, 3])
    none = NearGroupMaskedRankingLoss(Fixed(), np.zeros((4, 4), dtype=bool))(features, labels)
    mnrl = MultipleNegativesRankingLoss(Fixed())(features, labels)
    assert float(none) == pytest.approx(float(mnrl), rel=1e-5)
    near = np.zeros((4, 4), dtype=bool)
    near[0, 1] = near[1, 0] = True
    masked = NearGroupMaskedRankingLoss(Fixed(), near)(features, labels)
    assert float(masked) < float(none)


def test_recipe_a_with_near_clusters_trains_and_saves(tiny_model_dir, tmp_path):
    from emerge.training.trainer import train

    data = make_dataset(n_docs=24)
    config = TrainingConfig(pairing="same_cluster", near_cluster_fraction=0.5, min_pairs=4, batch_size=4,
                            max_seq_length=32, learning_rate=1e-3)
    result = train(build_pairs(data, "cluster_id", config), tiny_model_dir, tmp_path / "model", config)
    assert result.steps > 0 and (tmp_path / "model" / "modules.json").exists()


def test_training_arguments_warm_up_the_configured_fraction_of_steps(tmp_path):
    """transformers 5 deprecates warmup_ratio; the fraction now travels as warmup_steps, which reads
    1.0 as one step, so a ratio of 1 must arrive as the whole run's step count."""
    import warnings

    from emerge.config import TrainingConfig
    from emerge.training.trainer import training_arguments

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        tenth = training_arguments(TrainingConfig(warmup_ratio=0.1, batch_size=10, epochs=1), tmp_path, 200, "cpu")
    assert tenth.get_warmup_steps(20) == 2
    whole = training_arguments(TrainingConfig(warmup_ratio=1.0, batch_size=10, epochs=2), tmp_path, 200, "cpu")
    assert whole.get_warmup_steps(40) == 40
    none = training_arguments(TrainingConfig(warmup_ratio=0.0, batch_size=10, epochs=1), tmp_path, 200, "cpu")
    assert none.get_warmup_steps(20) == 0
