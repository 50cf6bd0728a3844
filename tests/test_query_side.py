"""Query-side adaptation (`trained_side="query"`): only the query encoder trains, documents keep the base's vectors."""

import numpy as np
import polars as pl
import pytest
import torch

from emerge.config import TrainingConfig
from emerge.errors import ConfigError
from tests.test_distillation import _docs


def _query_set(tiny_model_dir, lexical_weight=1.0, n=16):
    from emerge.training.query_side import query_side_set
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(n)
    base = load_sentence_transformer(tiny_model_dir, "cpu")
    qset = query_side_set(rows, texts, base, queries_per_document=2, window_chars=400, lexical_weight=lexical_weight,
                          seed=0)
    return qset, base, rows, texts


def _perturbed(model, amount=0.05):
    import copy

    changed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(amount * torch.randn(p.shape, generator=generator))
    return changed


def test_the_query_set_asks_for_training_documents_and_scores_every_one_of_them(tiny_model_dir):
    qset, base, rows, texts = _query_set(tiny_model_dir)
    assert qset.doc_ids == sorted(texts) and qset.height > len(texts)  # two keyword draws per document
    assert len(set(zip(qset.queries, qset.query_docs.tolist()))) == qset.height  # no duplicate query
    for query, doc in zip(qset.queries, qset.query_docs):
        words = set(texts[qset.doc_ids[doc]].lower().replace(".", " ").split())
        assert set(query.lower().split()) <= words  # a query is words of its own document
    scores = qset.teacher_scores(np.arange(5))
    assert scores.shape == (5, len(texts)) and np.isfinite(scores).all()
    # the teacher's dense half is the base's cosine of the query and the whole document
    dense_only, *_ = _query_set(tiny_model_dir, lexical_weight=0.0)
    documents = base.encode([texts[d] for d in dense_only.doc_ids], normalize_embeddings=True)
    queries = base.encode(dense_only.queries[:5], normalize_embeddings=True)
    assert np.allclose(dense_only.teacher_scores(np.arange(5)), queries @ documents.T, atol=1e-5)
    # BM25 moves the teacher towards documents sharing the query's words
    assert not np.allclose(scores, dense_only.teacher_scores(np.arange(5)))


def test_the_loss_is_zero_for_the_base_without_bm25_and_positive_for_another_model(tiny_model_dir):
    from emerge.training.query_side import CorpusDistillationLoss

    qset, base, *_ = _query_set(tiny_model_dir, lexical_weight=0.0)
    rows = torch.arange(8)
    features = base.tokenize(qset.queries[:8])
    base.eval()
    with torch.no_grad():
        assert CorpusDistillationLoss(base, qset)([features], rows).item() == pytest.approx(0.0, abs=1e-5)
        other = _perturbed(base).eval()
        assert CorpusDistillationLoss(other, qset)([features], rows).item() > 1e-4


def test_an_asymmetric_model_reads_queries_with_one_encoder_and_documents_with_the_other(tiny_model_dir, tmp_path):
    from emerge.training.promotion import interpolate
    from emerge.training.query_side import asymmetric_model, is_asymmetric, query_encoder
    from emerge.training.retrieval import encode
    from emerge.training.trainer import load_sentence_transformer

    base = load_sentence_transformer(tiny_model_dir, "cpu")
    trained = _perturbed(base)
    model = asymmetric_model(trained, base)
    texts = ["rotor blade stall", "soup onion garlic broth simmer"]
    assert is_asymmetric(model) and not is_asymmetric(base)
    assert np.allclose(encode(model, texts, role="query"), encode(trained, texts), atol=1e-6)
    assert np.allclose(encode(model, texts, role="document"), encode(base, texts), atol=1e-6)
    assert np.allclose(encode(model, texts), encode(base, texts), atol=1e-6)  # a plain encode reads documents
    assert not np.allclose(encode(model, texts, role="query"), encode(base, texts), atol=1e-4)

    model.save(str(tmp_path / "asym"))  # and so does the saved model, offline
    loaded = load_sentence_transformer(tmp_path / "asym", "cpu")
    assert is_asymmetric(loaded) and loaded.emerge_window == base.emerge_window
    assert np.allclose(encode(loaded, texts, role="query"), encode(trained, texts), atol=1e-5)
    assert np.allclose(encode(loaded, texts, role="document"), encode(base, texts), atol=1e-5)

    half = interpolate(base, loaded, 0.5)  # WiSE-FT moves the query encoder only
    for (name, b), t, m in zip(base.named_parameters(), query_encoder(loaded).parameters(),
                               query_encoder(half).parameters()):
        assert torch.allclose(m, 0.5 * b + 0.5 * t, atol=1e-6), name
    assert np.allclose(encode(half, texts, role="document"), encode(base, texts), atol=1e-6)


def test_late_chunking_reads_an_asymmetric_model_with_its_document_encoder(tiny_model_dir, tmp_path):
    from emerge.config import EncoderConfig
    from emerge.encoder import TokenEncoder
    from emerge.training.query_side import asymmetric_model
    from emerge.training.trainer import load_sentence_transformer

    base = load_sentence_transformer(tiny_model_dir, "cpu")
    asymmetric_model(_perturbed(base), base).save(str(tmp_path / "asym"))
    encoder = TokenEncoder.from_config(EncoderConfig(model_name_or_path=str(tmp_path / "asym"), device="cpu",
                                                     dtype="float32"))
    plain = TokenEncoder.from_config(EncoderConfig(model_name_or_path=str(tiny_model_dir), device="cpu",
                                                   dtype="float32"))
    texts = ["rotor blade stall lift wing", "invoice refund payment card"]
    assert np.allclose(encoder.embed_texts(texts), plain.embed_texts(texts), atol=1e-5)


def test_query_side_fine_tune_keeps_the_documents_vectors_and_trains_the_queries(tiny_model_dir, tmp_path):
    from emerge.training.finetune import fine_tune_and_evaluate
    from emerge.training.query_side import is_asymmetric
    from emerge.training.retrieval import encode
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(24)
    config = TrainingConfig(trained_side="query", min_pairs=4, batch_size=8, learning_rate=1e-3, eval_fraction=0.25,
                            epochs=2, gate=False)
    losses = []
    report = fine_tune_and_evaluate(rows, "cluster_id", tiny_model_dir, tmp_path / "model", config, texts=texts,
                                    on_log=lambda line: losses.append(line["loss"]) if "loss" in line else None)
    assert report.promotion.promoted and report.training.steps > 0 and losses
    assert report.dataset_stats["train_pairs"] > report.dataset_stats["train_documents"]
    published = load_sentence_transformer(tmp_path / "model", "cpu")
    base = load_sentence_transformer(tiny_model_dir, "cpu")
    assert is_asymmetric(published) and published.max_seq_length == base.max_seq_length
    sample = [texts[d] for d in sorted(texts)[:4]]
    assert np.allclose(encode(published, sample, role="document"), encode(base, sample), atol=1e-5)
    assert not np.allclose(encode(published, sample, role="query"), encode(base, sample), atol=1e-4)
    assert {"self_and_search.base.mrr@10", "self_and_search.fine_tuned.mrr@10"} <= set(report.metrics)
    assert not (tmp_path / "model.candidate").exists()


@pytest.mark.parametrize("changes", [{"pairing": "same_cluster"}, {"query_source": "spans"},
                                     {"teacher_model": "/somewhere/else"}, {"trained_side": "documents"}])
def test_query_side_training_refuses_recipes_it_cannot_run(changes):
    with pytest.raises(ConfigError, match="trained_side"):
        TrainingConfig(**({"trained_side": "query"} | changes))


def test_too_few_keyword_queries_fail_clearly(tiny_model_dir, tmp_path):
    from emerge.errors import InputError
    from emerge.training.finetune import fine_tune_and_evaluate

    rows, texts = _docs(8)
    with pytest.raises(InputError, match="keyword queries; min_pairs"):
        fine_tune_and_evaluate(rows, "cluster_id", tiny_model_dir, tmp_path / "m",
                               TrainingConfig(trained_side="query", min_pairs=10_000), texts=texts)


def test_a_corpus_is_embedded_once_per_document_encoder(tiny_model_dir, monkeypatch):
    """The gate and the evaluation embed the same corpus with the base and with every interpolation of
    a query-side model: its document encoder is the base's, so the base's vectors are reused; a model
    whose document weights differ is embedded anew (no stale vectors)."""
    from emerge.training import retrieval
    from emerge.training.promotion import interpolate
    from emerge.training.query_side import asymmetric_model
    from emerge.training.trainer import load_sentence_transformer

    monkeypatch.setattr(retrieval, "_DOCUMENT_VECTORS", type(retrieval._DOCUMENT_VECTORS)())
    monkeypatch.setattr(retrieval, "_CACHE_MIN_TEXTS", 1)
    base = load_sentence_transformer(tiny_model_dir, "cpu")
    trained = _perturbed(base)
    corpus = [f"document {i} about rotor blades and soup" for i in range(6)]
    embedded = []

    def counting(model):
        plain = model.encode_document
        model.encode_document = lambda texts, **kw: embedded.append(len(texts)) or plain(texts, **kw)
        return model

    first = retrieval.encode(counting(base), corpus, role="document")
    asymmetric = counting(asymmetric_model(trained, base))
    half = counting(interpolate(base, asymmetric, 0.5))
    assert np.allclose(retrieval.encode(asymmetric, corpus, role="document"), first)
    assert np.allclose(retrieval.encode(half, corpus, role="document"), first)
    assert embedded == [6]  # the base embedded the corpus; its query-side models found its vectors
    assert not np.allclose(retrieval.encode(counting(trained), corpus, role="document"), first, atol=1e-4)
    assert embedded == [6, 6]
    base.max_seq_length = 8  # another window is another key
    retrieval.encode(base, corpus, role="document")
    assert embedded == [6, 6, 6]


def test_a_subset_of_an_embedded_corpus_is_read_back_and_only_new_texts_are_embedded(tiny_model_dir, monkeypatch):
    """A seed's training documents are a subset of the corpus the base evaluation embedded: their
    vectors come out of the cache (in the order asked), and a list that adds new texts embeds only
    those; the answers equal what embedding each list afresh gives."""
    from emerge.training import retrieval
    from emerge.training.trainer import load_sentence_transformer

    monkeypatch.setattr(retrieval, "_DOCUMENT_VECTORS", type(retrieval._DOCUMENT_VECTORS)())
    monkeypatch.setattr(retrieval, "_CACHE_MIN_TEXTS", 1)
    base = load_sentence_transformer(tiny_model_dir, "cpu")
    corpus = [f"document {i} about {'rotor blades' if i % 2 else 'lentil soup'} number {i * 7}" for i in range(8)]
    fresh = {t: v for t, v in zip(corpus + ["a new text on wings", "another new one"],
                                  base.encode_document(corpus + ["a new text on wings", "another new one"],
                                                       normalize_embeddings=True))}
    embedded = []
    plain = base.encode_document
    base.encode_document = lambda texts, **kw: embedded.append(list(texts)) or plain(texts, **kw)

    retrieval.encode(base, corpus, role="document")
    subset = [corpus[5], corpus[1], corpus[6]]
    assert np.allclose(retrieval.encode(base, subset, role="document"), [fresh[t] for t in subset], atol=1e-5)
    assert len(embedded) == 1  # read back, not embedded
    mixed = [corpus[2], "a new text on wings", corpus[2], "another new one"]
    assert np.allclose(retrieval.encode(base, mixed, role="document"), [fresh[t] for t in mixed], atol=1e-5)
    assert embedded[1] == ["a new text on wings", "another new one"]  # only what was missing
    assert np.allclose(retrieval.encode(base, ["another new one"], role="document"), fresh["another new one"],
                       atol=1e-5)
    assert len(embedded) == 2
    # over the budget: the answer is still right, and what did not fit is not kept
    monkeypatch.setattr(retrieval, "DOCUMENT_CACHE_BYTES", retrieval._DOCUMENT_VECTORS[
        next(iter(retrieval._DOCUMENT_VECTORS))].vectors.nbytes)
    over = [corpus[3], "a third new text", "a fourth"]
    assert np.allclose(retrieval.encode(base, over, role="document"),
                       base.encode_document(over, normalize_embeddings=True), atol=1e-5)
    retrieval.encode(base, ["a fourth"], role="document")
    assert embedded[-1] == ["a fourth"]  # not kept, so embedded again


def test_sentence_keywords_shorten_the_opening_and_other_sentences_of_each_document(tiny_model_dir):
    from emerge.training.distillation import document_sentences, keyword_queries
    from emerge.training.query_side import query_side_set
    from emerge.training.trainer import load_sentence_transformer

    rows, texts = _docs(16)
    sentences = document_sentences(rows, texts, 400, 3, seed=0)
    queries = keyword_queries(rows, texts, 400, 0, sentences=sentences)
    assert queries.height > len(texts)  # more than the openings alone
    for query, doc in zip(queries["query"], queries["doc_id"]):
        words = query.lower().split()
        assert 2 <= len(words) <= 5
        assert any(set(words) <= set(s.lower().rstrip(".").split())
                   for s in sentences.filter(pl.col("doc_id") == doc)["query"])  # shortened from one of its sentences
    body = {q for q, d in zip(queries["query"], queries["doc_id"]) if not set(q.lower().split())
            <= set(texts[d].split(".")[0].lower().split())}
    assert body  # some queries come from below the opening
    qset = query_side_set(rows, texts, load_sentence_transformer(tiny_model_dir, "cpu"), queries_per_document=3,
                          window_chars=400, lexical_weight=1.0, seed=0, from_sentences=True)
    assert set(qset.queries) == set(queries["query"])
    assert TrainingConfig(query_source="sentence_keywords").side == "query"
