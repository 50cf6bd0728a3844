"""Pseudo-query distillation, BM25, WiSE-FT interpolation and the promotion gate."""

import numpy as np
import polars as pl
import pytest
import torch

from emerge.config import TrainingConfig
from emerge.errors import ConfigError
from emerge.training.lexical import BM25Index, bm25s_rankings

CORPUS = ["the rotor blade stalls at high angle of attack", "onion soup simmers with garlic and pepper",
          "a refund of the card payment was charged twice", "rotor wake and blade vortex interaction noise",
          "garlic bread with butter", "the bank fee for a late card payment"]


def test_bm25_index_ranks_like_the_bm25s_package():
    queries = ["blade rotor noise", "card payment fee", "garlic soup"]
    scores = BM25Index.build(CORPUS).scores(queries)
    theirs = bm25s_rankings(CORPUS, queries, 3)
    for q, row in enumerate(theirs):
        matched = [d for d in row if scores[q, d] > 0]  # documents that share a term, best first
        assert matched == sorted(np.flatnonzero(scores[q] > 0), key=lambda d: -scores[q, d])[:len(matched)]
        assert len(matched) >= 1


def test_bm25_pair_scores_equal_corpus_scores_for_corpus_documents():
    index = BM25Index.build(CORPUS)
    queries = ["blade rotor noise", "card payment fee"]
    full = index.scores(queries)
    pairs = index.pair_scores(queries, [CORPUS[3], CORPUS[5]])
    assert pairs == pytest.approx([full[0, 3], full[1, 5]], rel=1e-5)
    assert index.pair_scores(["zebra"], [CORPUS[0]])[0] == 0.0  # unknown terms score nothing


def _docs(n: int = 16):
    topics = ["rotor blade stall lift wing airfoil pressure", "soup onion garlic simmer broth pepper salt",
              "invoice refund payment card charge bank fee", "planet orbit telescope star galaxy comet"]
    rng = np.random.default_rng(0)
    texts, rows = {}, []
    for d in range(n):
        words = topics[d % len(topics)].split()
        sentences = [" ".join(rng.choice(words, size=9)) + f" item{d}x{s}." for s in range(4)]
        text = " ".join(sentences)
        texts[f"d{d:02d}"] = text
        for s in (1, 2):
            start = text.index(sentences[s])
            rows.append({"text_span": sentences[s], "doc_id": f"d{d:02d}", "start_char": start,
                         "end_char": start + len(sentences[s]), "cluster_id": d % len(topics),
                         "relevance": float(rng.uniform(0.5, 1.0))})
    return pl.DataFrame(rows), texts


def test_distillation_triplets_cut_the_query_out_and_never_use_its_document_as_negative(tiny_model_dir):
    from emerge.training.distillation import distillation_triplets
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs()
    model = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    triplets = distillation_triplets(rows, texts, model, queries_per_document=2, negatives_per_query=2,
                                     negative_depth=5, window_chars=400, lexical_weight=1.0, seed=0).rows
    assert triplets.height == rows.height
    window_of = {d: t[:400].strip() for d, t in texts.items()}
    for r in triplets.iter_rows(named=True):
        own = texts[r["group"]]
        assert r["anchor"] in own and r["anchor"] not in r["positive"]
        for neg in (r["negative_1"], r["negative_2"]):
            assert neg != window_of[r["group"]][:len(neg)] and neg in window_of.values() or \
                any(w.startswith(neg) for d, w in window_of.items() if d != r["group"])
            assert not window_of[r["group"]].startswith(neg)
        assert len(r["score"]) == 3 and all(np.isfinite(r["score"]))


def test_teacher_margins_are_the_base_margins_when_bm25_weighs_nothing(tiny_model_dir):
    """lexical_weight 0: the teacher is the base model, so its scores are the base's own cosines."""
    from emerge.training.distillation import distillation_triplets
    from emerge.training.retrieval import encode
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(8)
    model = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    triplets = distillation_triplets(rows, texts, model, queries_per_document=1, negatives_per_query=1,
                                     negative_depth=3, window_chars=400, lexical_weight=0.0, seed=1).rows
    q = encode(model, triplets["anchor"].to_list())
    p = encode(model, triplets["positive"].to_list())
    n = encode(model, triplets["negative_1"].to_list())
    labels = np.array(triplets["score"].to_list())
    assert labels[:, 0] == pytest.approx(np.einsum("ij,ij->i", q, p), abs=1e-4)
    assert labels[:, 1] == pytest.approx(np.einsum("ij,ij->i", q, n), abs=1e-4)


def test_in_batch_teacher_gives_each_rows_own_margins_and_scores_every_other_text(tiny_model_dir):
    """The in-batch teacher must agree with the row's own teacher scores (up to a per-query
    constant, which margins cancel) and score a query against another row's texts as the hybrid
    does: base cosine + scaled BM25 of that text."""
    from emerge.training.distillation import HybridTeacher, distillation_triplets, document_window, fit_to_tokens
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(10)
    model = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    made = distillation_triplets(rows, texts, model, queries_per_document=1, negatives_per_query=2,
                                 negative_depth=4, window_chars=400, lexical_weight=1.0, seed=3)
    frame, teacher = made.rows, made.teacher
    ids = np.array(frame["teacher_ids"].to_list())
    scores = np.array(frame["score"].to_list())
    for (q, *text_ids), own in zip(ids, scores):
        got = teacher.scores(np.array([q]), np.array(text_ids))[0]
        assert got[0] - got[1:] == pytest.approx(own[0] - own[1:], abs=1e-4)
    # any query against the whole corpus: the hybrid's corpus scores, up to the query's constant
    corpus = fit_to_tokens(model, [document_window(texts[d], 400) for d in sorted(texts)])
    fused = HybridTeacher(model, corpus, 1.0).corpus_scores(frame["anchor"].head(3).to_list())[0]
    n_q = frame.height
    for i in range(3):
        got = teacher.scores(np.array([ids[i, 0]]), n_q + np.arange(len(corpus)))[0]
        assert np.ptp(got - fused[i]) < 1e-4


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_in_batch_loss_is_zero_when_the_student_is_the_teacher_and_positive_otherwise(tiny_model_dir, kind):
    """lexical_weight 0 makes the teacher the base model: the untrained student reproduces every
    in-batch margin (loss 0); a teacher that adds BM25 disagrees with it (loss > 0)."""
    import torch

    from emerge.training.distill_loss import InBatchDistillationLoss
    from emerge.training.distillation import distillation_triplets
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(10)
    model = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    model.eval()
    losses = {}
    for weight in (0.0, 1.0):
        made = distillation_triplets(rows, texts, model, queries_per_document=1, negatives_per_query=1,
                                     negative_depth=4, window_chars=400, lexical_weight=weight, seed=0)
        batch = made.rows.head(6)
        features = [model.tokenize(batch[c].to_list()) for c in ("anchor", "positive", "negative_1")]
        labels = torch.tensor(batch["teacher_ids"].to_list(), dtype=torch.float32)
        with torch.no_grad():
            losses[weight] = float(InBatchDistillationLoss(model, made.teacher, kind=kind)(features, labels))
    assert losses[0.0] == pytest.approx(0.0, abs=1e-6)
    assert losses[1.0] > 1e-4


def test_a_step_above_the_token_budget_is_cached_with_the_same_loss_and_gradients(tiny_model_dir):
    """Gradient caching (max_tokens_per_forward) must change memory, not the step: the same loss
    and the same parameter gradients as one forward pass. Dropout is off here, since one merged
    pass and per-mini-batch passes draw different masks; that the cached second pass replays the
    first's masks is sentence-transformers' RandContext."""
    import torch

    from emerge.training.distill_loss import InBatchDistillationLoss
    from emerge.training.distillation import distillation_triplets
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(12)
    model = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    made = distillation_triplets(rows, texts, model, queries_per_document=1, negatives_per_query=2,
                                 negative_depth=4, window_chars=400, lexical_weight=1.0, seed=0)
    batch = made.rows.head(8)
    columns = ("anchor", "positive", "negative_1", "negative_2")
    labels = torch.tensor(batch["teacher_ids"].to_list(), dtype=torch.float32)
    model.eval()
    runs = {}
    for budget in (None, 100):
        features = [model.tokenize(batch[c].to_list()) for c in columns]
        tokens = sum(f["attention_mask"].numel() for f in features)
        loss_fn = InBatchDistillationLoss(model, made.teacher, max_tokens_per_forward=budget)
        model.zero_grad()
        torch.manual_seed(7)
        loss = loss_fn(features, labels)
        loss.backward()
        runs[budget] = (float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                        loss_fn.cached_steps, loss_fn.mini_batch_size)
    (plain, plain_grads, plain_cached, _), (cached, cached_grads, n_cached, mini) = runs[None], runs[100]
    assert plain_cached == 0 and n_cached == 1 and tokens > 100
    assert 1 <= mini < 8  # mini-batches of a few texts, not the whole column
    assert cached == pytest.approx(plain, rel=1e-5) and plain > 0
    assert set(cached_grads) == set(plain_grads) and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        assert torch.allclose(cached_grads[name], grad, atol=1e-5, rtol=1e-3), name
    # a step within the budget takes the single forward pass
    small = InBatchDistillationLoss(model, made.teacher, max_tokens_per_forward=10 * tokens)
    small([model.tokenize(batch[c].to_list()) for c in columns], labels).backward()
    assert small.cached_steps == 0


def test_interpolation_is_the_weighted_mean_of_the_weights(tiny_model_dir):
    import torch

    from emerge.training.promotion import interpolate
    from emerge.training.trainer import load_sentence_transformer

    base = load_sentence_transformer(tiny_model_dir, "cpu")
    tuned = load_sentence_transformer(tiny_model_dir, "cpu")
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(1.0)
    mixed = interpolate(base, tuned, 0.25)
    for (name, b), t, m in zip(base.named_parameters(), tuned.parameters(), mixed.parameters()):
        assert torch.allclose(m, 0.75 * b + 0.25 * t, atol=1e-6), name
    assert not torch.allclose(next(tuned.parameters()), next(base.parameters()))  # inputs untouched


@pytest.mark.parametrize("criterion", ["self_retrieval", "search_queries", "self_and_search"])
def test_gate_rejects_a_model_made_worse_and_an_unchanged_one(tiny_model_dir, criterion):
    import copy

    import torch

    from emerge.training.promotion import choose_and_gate, label_free_criterion
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(16)
    train_rows, eval_rows = rows.filter(pl.col("doc_id") < "d08"), rows.filter(pl.col("doc_id") >= "d08")
    task = label_free_criterion(criterion, eval_rows, train_rows, texts, 400, seed=0)
    assert task.name == criterion and task.queries > 0
    base = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    broken = copy.deepcopy(base)
    with torch.no_grad():  # every token the same vector: the model has forgotten everything
        broken[0].auto_model.embeddings.word_embeddings.weight.fill_(0.1)
    _, decision = choose_and_gate(base, broken, task, (1.0,), 0.0)
    assert not decision.promoted and decision.candidate_score <= decision.base_score
    assert decision.scores_by_weight[1.0] < decision.base_score
    assert decision.criterion == criterion and decision.description in decision.reason
    # every view the criterion took is kept, under its own name: the mean's parts too
    parts = {"self_and_search": {"self_retrieval", "search_queries"}}.get(criterion, set())
    assert set(decision.base_measures) == set(decision.measures_by_weight[1.0]) == {criterion} | parts
    if parts:
        assert decision.base_score == pytest.approx(sum(decision.base_measures[p] for p in parts) / 2)
    _, same = choose_and_gate(base, copy.deepcopy(base), task, (1.0,), 0.0)
    assert not same.promoted  # equal is not better
    _, forced = choose_and_gate(base, broken, task, (1.0,), 0.0, gate=False)
    assert forced.promoted and "without the gate" in forced.reason


def test_the_mean_of_both_tasks_embeds_each_shared_document_once_with_the_same_scores(tiny_model_dir):
    """The two gate tasks share their distractors, and a search query's answer is its document as a
    distractor: embedding each distinct text once must give the scores of scoring each task alone."""
    from emerge.training import retrieval
    from emerge.training.promotion import (label_free_criterion, search_query_task, self_retrieval_score,
                                           self_retrieval_task)
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(16)
    train_rows, eval_rows = rows.filter(pl.col("doc_id") < "d08"), rows.filter(pl.col("doc_id") >= "d08")
    spans = self_retrieval_task(eval_rows, train_rows, texts, 400, 0)
    searches = search_query_task(eval_rows, train_rows, texts, 400, 0)
    model = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    alone = {"self_retrieval": self_retrieval_score(model, spans)["mrr@10"],
             "search_queries": self_retrieval_score(model, searches)["mrr@10"]}
    embedded, encode = [], retrieval.encode

    def counting(model_, batch, *args, **kwargs):
        embedded.extend(batch)
        return encode(model_, batch, *args, **kwargs)

    retrieval.encode = counting
    try:
        measured = label_free_criterion("self_and_search", eval_rows, train_rows, texts, 400, 0).measure(model)
    finally:
        retrieval.encode = encode
    for name, score in alone.items():
        assert measured[name] == pytest.approx(score, abs=1e-6)
    separately = sum(len(t.queries) + len(t.answers) + len(t.distractors) for t in (spans, searches))
    assert len(embedded) == len(set(embedded)) < separately - len(spans.distractors)  # each text once


def test_search_query_task_asks_for_held_out_documents_with_a_few_words_of_their_opening():
    from emerge.training.promotion import label_free_criterion, search_query_task

    rows, texts = _docs(16)
    train_rows, eval_rows = rows.filter(pl.col("doc_id") < "d08"), rows.filter(pl.col("doc_id") >= "d08")
    task = search_query_task(eval_rows, train_rows, texts, 400, seed=0, keyword_terms=(2, 3))
    assert len(task.queries) == 8 and set(task.query_docs) == {f"d{d:02d}" for d in range(8, 16)}
    for query, answer, doc in zip(task.queries, task.answers, task.query_docs):
        opening = texts[doc].split(".")[0]
        assert 2 <= len(query.split()) <= 3 and set(query.split()) <= set(opening.split())
        assert answer == texts[doc][:400].strip()  # its own document, shown as every distractor is
    assert set(task.distractor_docs) == set(texts)  # every held-out document, and training ones
    # two held-out documents of different topics share no word, so no search query: the run gates on
    # self-retrieval alone, and says so
    said = []
    fallback = label_free_criterion("search_queries", rows.filter(pl.col("doc_id").is_in(["d08", "d09"])),
                                    train_rows, texts, 400, 0, progress=said.append)
    assert fallback.name == "self_retrieval" and "gating on self-retrieval alone" in said[0]


def test_gate_on_judged_queries_rejects_a_model_made_worse(tiny_model_dir, tmp_path):
    """The user's own judged queries as the gate's criterion: nDCG@10 at the model's window, named in
    the decision, and a wrecked model stays unpublished."""
    import copy
    import json

    import torch

    from emerge.training.promotion import choose_and_gate, judged_queries_criterion
    from emerge.training.retrieval import evaluate_beir, load_beir
    from emerge.training.trainer import load_sentence_transformer

    _, texts = _docs(16)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d, "text": t}) for d, t in texts.items()))
    queries = {f"q{d}": texts[d].split(".")[0] for d in list(texts)[:8]}  # each document's first sentence
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in queries.items()))
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{q[1:]}\t1\n" for q in queries))
    collection = load_beir(tmp_path, "dev")
    base = load_sentence_transformer(tiny_model_dir, "cpu", 16)  # trained at 16 tokens; judged at its window
    broken = copy.deepcopy(base)
    with torch.no_grad():
        broken[0].auto_model.embeddings.word_embeddings.weight.fill_(0.1)
    criterion = judged_queries_criterion(collection)
    _, decision = choose_and_gate(base, broken, criterion, (1.0,), 0.0)
    assert not decision.promoted and decision.scores_by_weight[1.0] < decision.base_score
    assert decision.criterion == "judged_queries" and decision.metric == "ndcg@10"
    assert "judged queries nDCG@10 (8 queries)" in decision.reason
    at_window = load_sentence_transformer(tiny_model_dir, "cpu")
    assert decision.base_score == pytest.approx(evaluate_beir(at_window, collection)["ndcg@10"])
    assert base.max_seq_length == 16  # scored at the window, left as it was


def test_training_config_rejects_bad_distillation_values():
    with pytest.raises(ConfigError, match="interpolation_weights"):
        TrainingConfig(interpolation_weights=(0.0,))
    with pytest.raises(ConfigError, match="negative_depth"):
        TrainingConfig(negatives_per_query=5, negative_depth=2)
    with pytest.raises(ConfigError, match="lexical_weight"):
        TrainingConfig(lexical_weight=-1)
    with pytest.raises(ConfigError, match="gate_criterion"):
        TrainingConfig(gate_criterion="judged")
    for budget in (0, 2.5):
        with pytest.raises(ConfigError, match="max_tokens_per_forward"):
            TrainingConfig(max_tokens_per_forward=budget)
    assert TrainingConfig(max_seq_length=512, max_tokens_per_forward=128).max_tokens_per_forward == 128  # 1 text a pass
    assert TrainingConfig(max_tokens_per_forward=None).max_tokens_per_forward is None
    for rate in (-0.1, 1.0, "0"):
        with pytest.raises(ConfigError, match="dropout"):
            TrainingConfig(dropout=rate)
    for terms in ((0, 3), (4, 2), (1,)):
        with pytest.raises(ConfigError, match="keyword_terms"):
            TrainingConfig(keyword_terms=terms)


def test_distill_fine_tune_publishes_at_the_models_window_or_keeps_the_base(tiny_model_dir, tmp_path):
    """The whole loop on the tiny BERT: trained at 32 tokens, evaluated and published at its own window;
    without the gate the model is published, with an impossible gain it is not."""
    from sentence_transformers import SentenceTransformer

    from emerge.training.finetune import fine_tune_and_evaluate
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(24)
    config = TrainingConfig(trained_side="both",
                            min_pairs=4, batch_size=8, max_seq_length=32, learning_rate=1e-3, eval_fraction=0.25,
                            negatives_per_query=1, negative_depth=4, gate=False)
    report = fine_tune_and_evaluate(rows, "cluster_id", tiny_model_dir, tmp_path / "model", config, texts=texts)
    window = load_sentence_transformer(tiny_model_dir, "cpu").max_seq_length
    assert SentenceTransformer(str(tmp_path / "model"), device="cpu").max_seq_length == window != 32
    assert report.promotion.promoted and report.training.steps > 0
    views = ("self_retrieval", "search_queries", "self_and_search")  # the default gate logs its mean and both parts
    assert {f"{v}.{m}.mrr@10" for v in views for m in ("base", "fine_tuned", "delta")} <= set(report.metrics)
    assert report.metrics["self_and_search.fine_tuned.mrr@10"] == pytest.approx(
        (report.metrics["self_retrieval.fine_tuned.mrr@10"] + report.metrics["search_queries.fine_tuned.mrr@10"]) / 2,
        abs=1e-4)
    assert not (tmp_path / "model.candidate").exists()

    strict = TrainingConfig(trained_side="both",
                            min_pairs=4, batch_size=8, max_seq_length=32, eval_fraction=0.25, negatives_per_query=1,
                            negative_depth=4, promotion_min_gain=1.0, gate_criterion="self_and_search")
    seen = {}
    report = fine_tune_and_evaluate(rows, "cluster_id", tiny_model_dir, tmp_path / "strict", strict, texts=texts,
                                    inspect_candidate=lambda base, trained: seen.update(base=base, trained=trained))
    assert not report.promotion.promoted and not (tmp_path / "strict").exists()
    assert report.promotion.criterion == "self_and_search" and "self_and_search.base.mrr@10" in report.metrics
    assert report.dataset_stats["gate_queries"] > 0
    # a rejected candidate is still handed to the diagnostic hook, at the evaluation window, with its trained weights
    assert seen["trained"].max_seq_length == seen["base"].max_seq_length == window
    base_state, trained_state = seen["base"].state_dict(), seen["trained"].state_dict()
    assert any(not torch.equal(base_state[k], v) for k, v in trained_state.items() if v.is_floating_point())


def test_leading_sentences_take_the_opening_line_or_sentence_as_the_query():
    from emerge.training.distillation import leading_sentences

    texts = {"a": "Statin use and breast cancer survival\nRecent studies suggest statins delay recurrence.",
             "b": "what similarity laws apply to heated aircraft models ? the models were built in a tunnel .",
             "c": "Too short. The rest is here.",
             "d": "no sentence end at all in this one"}
    rows = pl.DataFrame({"doc_id": list(texts)})
    q = {r["doc_id"]: r for r in leading_sentences(rows, texts, 1000).iter_rows(named=True)}
    assert q["a"]["query"] == "Statin use and breast cancer survival"
    assert q["a"]["positive"] == "Recent studies suggest statins delay recurrence."
    assert q["b"]["query"].endswith("models ?") and q["b"]["positive"].startswith("the models")
    assert "c" not in q and "d" not in q  # an opening under 3 words, or no opening at all


def test_document_sentences_cut_each_query_sentence_out_and_keep_openings_first():
    from emerge.training.distillation import document_sentences

    texts = {"a": "Statin use and breast cancer survival\nRecent studies suggest statins delay the recurrence. "
                  "We followed thirty thousand patients for ten years. Statin users died less often of cancer.",
             "b": "rotor noise in hover . the blade vortex interaction was measured in a wind tunnel ."}
    rows = pl.DataFrame({"doc_id": list(texts)})
    q = document_sentences(rows, texts, 1000, per_document=3, seed=0)
    assert q.filter(pl.col("doc_id") == "a").height == 3 and q.filter(pl.col("doc_id") == "b").height == 2
    for query, positive, doc in q.iter_rows():
        assert query in texts[doc] and query not in positive  # the sentence is cut out of its positive
        assert positive.split()[0] == texts[doc].split()[0] or query.startswith(texts[doc].split()[0])
    assert set(q.filter(pl.col("doc_id") == "a")["query"]) >= {"Statin use and breast cancer survival"}
    capped = document_sentences(rows, texts, 1000, per_document=3, seed=1, max_queries=2)
    assert sorted(capped["query"]) == ["Statin use and breast cancer survival", "rotor noise in hover ."]
    assert document_sentences(rows, texts, 1000, per_document=3, seed=0).equals(q)  # the draw is the seed's


@pytest.mark.parametrize("loss", ["in_batch_kl", "in_batch_mse", "pairwise"])
def test_every_distillation_loss_trains_the_model(tiny_model_dir, tmp_path, loss):
    """Each loss reads its labels (teacher ids or scores) from the rows and moves the weights."""
    import torch

    from emerge.training.distillation import distillation_triplets
    from emerge.training.trainer import load_sentence_transformer, train

    rows, texts = _docs(16)
    model = load_sentence_transformer(tiny_model_dir, "cpu", 32)
    made = distillation_triplets(rows, texts, model, queries_per_document=1, negatives_per_query=1,
                                 negative_depth=4, window_chars=400, lexical_weight=1.0, seed=0)
    config = TrainingConfig(trained_side="both",
                            min_pairs=4, batch_size=8, max_seq_length=32, learning_rate=1e-3, distill_loss=loss)
    result = train(made, tiny_model_dir, tmp_path / "m", config)
    tuned = load_sentence_transformer(result.model_dir, "cpu")
    assert result.steps > 0 and np.isfinite(result.train_loss)
    changed = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), tuned.state_dict().values())]
    assert any(changed)
    with pytest.raises(ConfigError, match="distill_loss"):
        TrainingConfig(distill_loss="listwise")


def test_training_dropout_switches_every_dropout_layer_and_the_saved_model_keeps_its_own(tiny_model_dir, tmp_path):
    """`dropout=0.0` trains without dropout (a train-mode forward pass is then deterministic), and
    what is published keeps the base's configured rates for whoever fine-tunes it next."""
    import json

    import torch

    from emerge.training.distillation import distillation_triplets
    from emerge.training.trainer import load_sentence_transformer, set_dropout, train

    model = load_sentence_transformer(tiny_model_dir, "cpu", 32)
    model.train()
    features = model.tokenize(["the rotor blade stalls at high angle of attack"])
    torch.manual_seed(0)
    assert not torch.equal(model(dict(features))["sentence_embedding"], model(dict(features))["sentence_embedding"])
    assert set_dropout(model, 0.0) > 2  # embeddings, attention and output dropouts of every layer
    assert torch.equal(model(dict(features))["sentence_embedding"], model(dict(features))["sentence_embedding"])

    rows, texts = _docs(16)
    made = distillation_triplets(rows, texts, model, queries_per_document=1, negatives_per_query=1,
                                 negative_depth=4, window_chars=400, lexical_weight=1.0, seed=0)
    config = TrainingConfig(trained_side="both",
                            min_pairs=4, batch_size=8, max_seq_length=32, learning_rate=1e-3, dropout=0.0)
    result = train(made, tiny_model_dir, tmp_path / "m", config)
    assert result.steps > 0
    saved = json.loads((result.model_dir / "config.json").read_text())
    base = json.loads((tiny_model_dir / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == base["hidden_dropout_prob"] > 0


def test_a_separate_teacher_model_gives_the_dense_half_of_the_teacher(tiny_model_dir, tmp_path):
    """teacher_model: the teacher's scores are that model's cosines (at its own precision), not the
    base's; texts are still cut by the student's tokenizer. A missing teacher names the field."""
    import torch
    from transformers import BertConfig, BertModel

    from emerge.training.distillation import distillation_triplets
    from emerge.encoder import resolve_dtype
    from emerge.errors import InputError
    from emerge.training.finetune import fine_tune_and_evaluate
    from emerge.training.retrieval import encode
    from emerge.training.trainer import load_sentence_transformer

    torch.manual_seed(7)
    other = tmp_path / "teacher"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).eval().save_pretrained(other)
    load_sentence_transformer(tiny_model_dir, "cpu").tokenizer.save_pretrained(other)
    rows, texts = _docs(8)
    student = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    teacher = load_sentence_transformer(other, "cpu")
    triplets = distillation_triplets(rows, texts, student, queries_per_document=1, negatives_per_query=1,
                                     negative_depth=3, window_chars=400, lexical_weight=0.0, seed=1,
                                     teacher_model=teacher).rows
    labels = np.array(triplets["score"].to_list())[:, 0]
    dtype = resolve_dtype("auto", "cpu")
    cosines = {name: np.einsum("ij,ij->i", encode(m, triplets["anchor"].to_list(), dtype=dtype),
                               encode(m, triplets["positive"].to_list(), dtype=dtype))
               for name, m in (("teacher", teacher), ("base", student))}
    assert labels == pytest.approx(cosines["teacher"], abs=1e-4)
    assert np.abs(labels - cosines["base"]).max() > 1e-3

    config = TrainingConfig(min_pairs=4, batch_size=8, max_seq_length=32, eval_fraction=0.25,
                            negatives_per_query=1, negative_depth=4, teacher_model=str(tmp_path / "missing"))
    rows, texts = _docs(24)
    with pytest.raises(InputError, match="teacher_model directory"):
        fine_tune_and_evaluate(rows, "cluster_id", tiny_model_dir, tmp_path / "m", config, texts=texts)


def test_keyword_queries_shorten_the_opening_to_its_rarest_shared_words():
    from emerge.training.distillation import keyword_queries

    texts = {"a": "Rotor blade stall in the slipstream of a propeller. The rotor stalls early.",
             "b": "Propeller noise and the rotor wake. Blade vortex noise is loud.",
             "c": "Stall of a thin blade wing at high angle. Slipstream effects are small.",
             "d": "Zyxwv qqq of the rotor. Nothing else."}
    rows = pl.DataFrame({"doc_id": list(texts)})
    queries = {r["doc_id"]: r for r in keyword_queries(rows, texts, 400, seed=0).iter_rows(named=True)}
    assert set(queries) == {"a", "b", "c"}  # d's opening has one word shared with another document
    for doc, r in queries.items():
        words, opening = r["query"].split(), texts[doc].split(".")[0]
        assert 2 <= len(words) <= 5 and opening not in r["positive"]
        positions = [opening.index(w) for w in words]
        assert positions == sorted(positions)  # in the opening's order
        assert all(len(w) >= 3 and w.lower() not in {"the", "and", "of"} for w in words)
    # "Zyxwv" occurs in one document only, so it is never a keyword
    assert all("Zyxwv" not in r["query"] for r in queries.values())
    # two words: the rarest shared ones (stall, slipstream, propeller: 2 documents each; rotor, blade: 3)
    two = keyword_queries(rows, texts, 400, seed=0, min_terms=2, max_terms=2).filter(pl.col("doc_id") == "a")
    assert set(two["query"][0].lower().split()) < {"stall", "slipstream", "propeller"}
    # one-word queries (keyword_terms (1, 1)): d's opening has its one shared word, "rotor", now
    one = {r["doc_id"]: r["query"]
           for r in keyword_queries(rows, texts, 400, seed=0, min_terms=1, max_terms=1).iter_rows(named=True)}
    assert set(one) == {"a", "b", "c", "d"} and one["d"] == "rotor" and all(len(q.split()) == 1 for q in one.values())
