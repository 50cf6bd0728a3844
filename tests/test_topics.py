import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emerge import ConfigError, LateInteractionCrossEncoder, Topic, load_topics
from emerge.config import SpanConfig
from emerge.embedding import TokenStore, embed_spans
from emerge.ingest import documents_from_texts
from emerge.topics.late_interaction import PartIndex, range_max
from emerge.spans import build_spans

TOPICS = [
    Topic(id=1, name="Customer Issues", description="Complaints/support requests",
          examples=["My product stopped working", "I can't access my account"]),
    Topic(id=2, name="Feature Requests", description="New features or improvements",
          examples=["Add dark mode", "Integrate with Slack"]),
]


# -- topic definitions ------------------------------------------------------------------------------
@pytest.mark.parametrize("topics, message", [
    ([], "at least one topic"),
    ([Topic(1, "a"), Topic(1, "b")], "duplicate topic id 1"),
    ([{"id": 3, "name": "  "}], "topic 3 has an empty name"),
    ([{"id": 4, "name": "x", "examples": "not a list"}], "topic 4: examples must be a list"),
])
def test_topic_validation_names_the_topic(topics, message):
    with pytest.raises(ConfigError, match=message):
        LateInteractionCrossEncoder(topics=topics)


def test_topics_load_from_yaml_and_json_alike(tmp_path):
    data = [{"id": "a", "name": "Alpha", "description": "first", "examples": ["one", "two"]},
            {"id": "b", "name": "Beta"}]
    (tmp_path / "t.json").write_text(json.dumps({"topics": data}))
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    assert load_topics(tmp_path / "t.json") == load_topics(tmp_path / "t.yaml")
    assert load_topics(tmp_path / "t.yaml")[1].examples == []


@pytest.mark.parametrize("name, content, message", [
    ("t.txt", "topics: []", "unknown topic file format '.txt'"),
    ("t.yaml", "topics: []", "at least one topic"),
    ("t.yaml", "- {id: 1, name: A}\n- {id: 1, name: B}", r"t.yaml, line 2: duplicate topic id 1"),
    ("t.yaml", "- {id: 1, name: A, colour: red}", r"t.yaml, line 1: topic 1 has unknown keys"),
    ("t.yaml", "topics:\n  - id: 3\n    name: C\n  - id: 7\n    description: no name\n",
     r"t.yaml, line 4: topic 7 has no name"),
    ("t.json", '{"topics": [\n  {"id": 1, "name": "A"},\n  {"id": 2, "name": ""}]}', r"t.json, line 3: topic 2 has an empty name"),
    ("t.json", '{"topics": [\n  {"id": 1,, "name": "A"}]}', r"t.json is not valid JSON at line 2, column 12"),
    ("t.yaml", "topics:\n  - id: 1\n    name: [unclosed\n  - id: 2\n", r"t.yaml is not valid YAML at line \d+, column \d+"),
    ("t.yaml", "topics:\n  - id: 1\n\tname: tab", r"t.yaml is not valid YAML at line 3"),
])
def test_bad_topic_files_fail_clearly(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_topics(tmp_path / name)


def test_invalid_analyzer_settings_name_the_field():
    with pytest.raises(ConfigError, match="relevance_threshold"):
        LateInteractionCrossEncoder(topics=TOPICS, relevance_threshold=1.5)
    with pytest.raises(ConfigError, match="prediction_mode"):
        LateInteractionCrossEncoder(topics=TOPICS, prediction_mode="colbert")


# -- scoring primitives -----------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 5)),
              elements=st.floats(-1, 1, width=32)), st.data())
def test_range_max_matches_brute_force(matrix, data):
    n = len(matrix)
    starts = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20)))
    ends = np.array([data.draw(st.integers(s + 1, n)) for s in starts])
    expected = np.stack([matrix[s:e].max(axis=0) for s, e in zip(starts, ends)])
    np.testing.assert_array_equal(range_max(matrix, starts, ends), expected)


def unit(rng, n, d=8):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_maxsim_is_mean_over_topic_tokens_of_best_span_token():
    rng = np.random.default_rng(0)
    parts = [unit(rng, 3), unit(rng, 5)]
    index = PartIndex(vectors=np.concatenate(parts), token_ids=np.zeros(8, np.int64), offsets=np.array([0, 3]),
                      lengths=np.array([3, 5]),
                      part_topic=np.array([0, 1]), part_kind=["name", "name"])
    doc = unit(rng, 30)
    starts, ends = np.array([0, 5, 10]), np.array([30, 9, 11])
    got = index.maxsim(doc, starts, ends)
    for k, (s, e) in enumerate(zip(starts, ends)):
        for p, q in enumerate(parts):
            assert got[k, p] == pytest.approx(float((q @ doc[s:e].T).max(axis=1).mean()), abs=1e-6)
    # normalised over topic tokens: repeating a part's tokens does not change its score
    doubled = PartIndex(vectors=np.concatenate([parts[0], parts[0]]), token_ids=np.zeros(6, np.int64),
                        offsets=np.array([0]), lengths=np.array([6]),
                        part_topic=np.array([0]), part_kind=["name"])
    np.testing.assert_allclose(doubled.maxsim(doc, starts, ends)[:, 0], got[:, 0], atol=1e-6)


# -- the analyzer, tiny random model (fast) ---------------------------------------------------------
DOCS = ["My product stopped working after the update and support never answered.",
        "Please add dark mode and an integration with Slack, that would be great.",
        "The weather was mild and we walked along the river in the afternoon."]


@pytest.fixture(scope="module")
def tiny_scored(tiny_encoder):
    docs = documents_from_texts(DOCS).documents
    spans, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=3, max_len=12, stride=2))
    store = TokenStore()
    vectors = embed_spans(docs, spans, tiny_encoder, on_document=store.add)
    analyzer = LateInteractionCrossEncoder(topics=TOPICS, relevance_threshold=0.5).prepare(tiny_encoder)
    return docs, spans, vectors, store, analyzer


def test_calibrated_relevance_is_bounded(tiny_scored, tiny_encoder):
    _, spans, vectors, store, analyzer = tiny_scored
    raw = analyzer.score_spans(spans, vectors, token_store=store, encoder=tiny_encoder)
    cal = analyzer.calibrate(raw)
    assert raw.shape == (spans.height, 2) and np.isfinite(raw).all()
    assert cal.min() >= 0.0 and cal.max() <= 1.0
    # calibration is monotone within a topic
    for t in range(2):
        order = np.argsort(raw[:, t])
        assert (np.diff(cal[order, t]) >= -1e-7).all()
    assert (analyzer.calibration.hi > analyzer.calibration.lo).all()


def test_late_chunking_and_independent_agree_on_whole_document_spans(tiny_encoder):
    text = "Add dark mode please"  # shorter than one window, so context == the text itself
    docs = documents_from_texts([text]).documents
    spans, _ = build_spans(docs, tiny_encoder.tokenizer, SpanConfig(min_len=1, max_len=64, stride=1))
    whole = spans.filter((pl.col("start_char") == 0) & (pl.col("end_char") == len(text)))
    assert whole.height == 1
    store = TokenStore()
    vectors = embed_spans(docs, whole, tiny_encoder, on_document=store.add)
    late = LateInteractionCrossEncoder(topics=TOPICS).prepare(tiny_encoder)
    indep = LateInteractionCrossEncoder(topics=TOPICS, prediction_mode="independent").prepare(tiny_encoder)
    a = late.score_spans(whole, vectors, token_store=store, encoder=tiny_encoder)
    b = indep.score_spans(whole, vectors, encoder=tiny_encoder)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_late_chunking_mode_runs_no_transformer_pass(tiny_scored, tiny_encoder):
    _, spans, vectors, store, analyzer = tiny_scored
    calls = []
    hook = tiny_encoder.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        analyzer.score_spans(spans, vectors, token_store=store, encoder=tiny_encoder)
    finally:
        hook.remove()
    assert calls == []


def test_unfitting_spans_are_left_unlabelled(tiny_scored, tiny_encoder):
    _, spans, vectors, store, _ = tiny_scored
    strict = LateInteractionCrossEncoder(topics=TOPICS, relevance_threshold=1.0).prepare(tiny_encoder)
    labelled = strict.analyze(spans, vectors, token_store=store, encoder=tiny_encoder)
    unlabelled = labelled.filter(pl.col("topic_id").is_null())
    assert unlabelled.height > 0 and unlabelled["topic_name"].null_count() == unlabelled.height
    assert (labelled.filter(pl.col("topic_id").is_not_null())["relevance"] >= 1.0).all()
    assert labelled["best_topic_id"].null_count() == 0


def test_a_label_mask_scores_only_its_spans_and_changes_none_of_their_labels(tiny_scored, tiny_encoder):
    _, spans, vectors, store, analyzer = tiny_scored
    every = analyzer.analyze(spans, vectors, token_store=store, encoder=tiny_encoder)
    mask = np.arange(spans.height) % 3 == 0
    masked = analyzer.analyze(spans, vectors, token_store=store, encoder=tiny_encoder, label_mask=mask)
    assert 0 < masked.height < every.height
    assert set(masked["span_idx"]) <= set(spans.filter(pl.Series(mask))["span_idx"])
    same = every.join(masked.select("span_idx"), on="span_idx").sort("span_idx")
    assert same.select("span_idx", "topic_id", "best_topic_id", "relevance").equals(
        masked.sort("span_idx").select("span_idx", "topic_id", "best_topic_id", "relevance"))


def test_very_long_examples_are_truncated_and_reported(tiny_encoder):
    long_example = "refund please " * 400
    analyzer = LateInteractionCrossEncoder(topics=[Topic(1, "Refunds", examples=[long_example, "money back"]),
                                                   Topic(2, "Shipping")]).prepare(tiny_encoder)
    assert analyzer.truncated_parts == 1
    assert analyzer.index.lengths.max() <= tiny_encoder.max_seq_length - 2
    assert np.isfinite(analyzer.score_texts(["where is my refund"], tiny_encoder)).all()


def test_topic_part_without_tokens_is_a_clear_error(tiny_encoder):
    analyzer = LateInteractionCrossEncoder(topics=[Topic(1, "\u200b\u200b"), Topic(2, "Shipping")])
    with pytest.raises(ConfigError, match="has no tokens"):
        analyzer.prepare(tiny_encoder)


def _combine_by_definition(analyzer, parts, pooled, exclude=None):
    """The documented score, topic by topic: best part per kind, weighted, then the prototype mix."""
    li = np.zeros((len(parts), len(analyzer.topics)), np.float32)
    protos = analyzer.prototypes.copy()
    for t in range(len(analyzer.topics)):
        total = weight = 0.0
        for kind in ("name", "description", "example"):
            cols = [p for p in range(len(analyzer.index.part_kind)) if analyzer.index.part_topic[p] == t
                    and analyzer.index.part_kind[p] == kind and (t, p) != exclude]
            if cols:
                total = total + analyzer.part_weights[kind] * parts[:, cols].max(axis=1)
                weight += analyzer.part_weights[kind]
        li[:, t] = total / weight
    if exclude is not None:
        protos[exclude[0]] = analyzer._prototype(exclude[0], exclude_part=exclude[1])
    w = analyzer.prototype_weight
    return (1 - w) * li + w * (pooled @ protos.T)


def test_combined_score_follows_its_definition_for_every_topic(tiny_encoder):
    topics = [Topic(1, "Refunds", "Money back for an order", ["refund please", "I want my money back"]),
              Topic(2, "Shipping", examples=["where is my parcel"]),
              Topic(3, "Dark mode", "Display settings")]
    analyzer = LateInteractionCrossEncoder(topics=topics).prepare(tiny_encoder)
    texts = ["refund my order", "the parcel is late", "dark screen please", "hello"]
    parts, pooled = analyzer._score_texts(tiny_encoder, texts)
    np.testing.assert_allclose(analyzer.combine(parts, pooled), _combine_by_definition(analyzer, parts, pooled),
                               atol=1e-5)
    first_example = analyzer.index.part_kind.index("example")
    np.testing.assert_allclose(analyzer.combine(parts, pooled, exclude=(0, first_example)),
                               _combine_by_definition(analyzer, parts, pooled, exclude=(0, first_example)), atol=1e-5)
    only_example = [p for p in range(len(analyzer.index.part_kind))
                    if analyzer.index.part_topic[p] == 1 and analyzer.index.part_kind[p] == "example"][0]
    np.testing.assert_allclose(analyzer.combine(parts, pooled, exclude=(1, only_example)),
                               _combine_by_definition(analyzer, parts, pooled, exclude=(1, only_example)), atol=1e-5)


def test_texts_scored_end_to_end_equal_texts_scored_one_by_one(tiny_encoder):
    """Whole texts are scored as spans of one concatenated sequence, in chunks: same numbers as
    scoring each text on its own, whatever the chunk size, and an empty text scores zero."""
    from emerge.topics.late_interaction import encode_alone

    analyzer = LateInteractionCrossEncoder(topics=TOPICS).prepare(tiny_encoder)
    texts = ["refund my order please", "", "the parcel is late again", "dark mode", "x"]
    ids, embs, _ = encode_alone(tiny_encoder, texts)
    one_by_one = np.stack([analyzer.part_scores(i, e, np.array([0]), np.array([len(i)]))[0] if len(i)
                           else np.zeros(len(analyzer.index.lengths), np.float32) for i, e in zip(ids, embs)])
    for chunk_tokens in (1, 7, 4096):
        parts, pooled = analyzer.score_token_embeddings(ids, embs, chunk_tokens=chunk_tokens)
        np.testing.assert_allclose(parts, one_by_one, atol=1e-5)
        assert np.allclose(np.linalg.norm(pooled[[0, 2, 3, 4]], axis=1), 1.0) and not pooled[1].any()


def test_calibration_maps_unrelated_text_to_zero_and_held_out_examples_to_one(tiny_encoder):
    """What calibration means: 0 = the typical score of text about something else (background
    sentences and the other topics' parts), 1 = the typical score of the topic's own examples,
    each scored without itself; a topic with fewer than two examples borrows the others' span.
    (Where 0 and 1 fall on real text needs a real model: see BENCHMARKS.md, topic labelling.)"""
    topics = TOPICS + [Topic(id=3, name="Weather", description="Rain and sunshine", examples=["It rained"])]
    analyzer = LateInteractionCrossEncoder(topics=topics).prepare(tiny_encoder)
    lo, hi = analyzer.calibration.lo, analyzer.calibration.hi
    assert (hi > lo).all()
    # 0 and 1 are where they are defined: a raw score at lo calibrates to 0, at hi to 1, halfway to 0.5
    np.testing.assert_allclose(analyzer.calibrate(np.stack([lo, hi, (lo + hi) / 2])),
                               [[0] * 3, [1] * 3, [0.5] * 3], atol=1e-4)
    # topic 3 has one example, so no leave-one-out score: its span is the median of the others'
    np.testing.assert_allclose(hi[2] - lo[2], np.median(hi[:2] - lo[:2]), rtol=1e-5)
    # a topic without examples borrows too (here the only other topic's span)
    fewer = LateInteractionCrossEncoder(topics=[TOPICS[0], Topic(id=2, name="Feature Requests")]).prepare(tiny_encoder)
    assert fewer.calibration.hi[1] - fewer.calibration.lo[1] == pytest.approx(
        fewer.calibration.hi[0] - fewer.calibration.lo[0], rel=1e-5)


# -- the ablation switches: each must change what its docstring says it changes -------------------
def _one_text(encoder, text):
    from emerge.topics.late_interaction import encode_alone

    ids, embs, _ = encode_alone(encoder, [text])
    return ids[0], embs[0]


def test_direction_topic_to_span_only_grows_as_a_span_grows_and_both_is_their_mean(tiny_encoder):
    """topic_to_span asks "is every topic token somewhere in the span?": with late chunking the
    token vectors are fixed, so a longer span can only match better. span_to_topic averages over
    the span's tokens, so unrelated tokens added to a span may pull it down."""
    text = "refund my order please, the weather was mild and we walked along the river"
    scores = {}
    for direction in ("both", "topic_to_span", "span_to_topic"):
        analyzer = LateInteractionCrossEncoder(topics=TOPICS, direction=direction).prepare(tiny_encoder)
        ids, embs = _one_text(tiny_encoder, text)
        starts, ends = np.zeros(len(ids) - 2, np.int64), np.arange(3, len(ids) + 1)  # nested spans from token 0
        scores[direction] = analyzer.part_scores(ids, embs, starts, ends)
    assert (np.diff(scores["topic_to_span"], axis=0) >= -1e-6).all()
    assert (np.diff(scores["span_to_topic"], axis=0) < -1e-4).any()
    assert not np.allclose(scores["topic_to_span"], scores["span_to_topic"])
    np.testing.assert_allclose(scores["both"], (scores["topic_to_span"] + scores["span_to_topic"]) / 2, atol=1e-5)


def test_topic_idf_weights_a_token_of_every_topic_below_a_token_of_one_topic(tiny_encoder):
    topics = [Topic(1, "order refund"), Topic(2, "order shipping"), Topic(3, "order tracking")]
    vocab = tiny_encoder.tokenizer.convert_tokens_to_ids
    idf = LateInteractionCrossEncoder(topics=topics, token_weighting="topic_idf").prepare(tiny_encoder)
    flat = LateInteractionCrossEncoder(topics=topics, token_weighting="none").prepare(tiny_encoder)
    shared, own, punct = vocab("order"), vocab("refund"), vocab(",")
    assert idf._vocab_weights[shared] < idf._vocab_weights[own]
    assert flat._vocab_weights[shared] == flat._vocab_weights[own] > 0
    assert idf._vocab_weights[punct] == flat._vocab_weights[punct] == 0.0  # punctuation never votes


def test_prototype_weight_moves_the_score_between_token_matching_and_the_pooled_vector(tiny_encoder):
    texts = ["refund my order", "the parcel is late", "dark mode please"]
    rng = np.random.default_rng(0)
    for weight, ignored in ((1.0, "parts"), (0.0, "pooled")):
        analyzer = LateInteractionCrossEncoder(topics=TOPICS, prototype_weight=weight).prepare(tiny_encoder)
        parts, pooled = analyzer._score_texts(tiny_encoder, texts)
        before = analyzer.combine(parts, pooled)
        other_parts = parts + rng.normal(0, 0.3, parts.shape).astype(np.float32)
        other_pooled = pooled[::-1].copy()
        if ignored == "parts":  # weight 1: the token matches do not count
            np.testing.assert_allclose(analyzer.combine(other_parts, pooled), before, atol=1e-6)
            assert not np.allclose(analyzer.combine(parts, other_pooled), before)
        else:                   # weight 0: the pooled vector does not count
            np.testing.assert_allclose(analyzer.combine(parts, other_pooled), before, atol=1e-6)
            assert not np.allclose(analyzer.combine(other_parts, pooled), before)
