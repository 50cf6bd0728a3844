import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from emerge.config import SpanConfig
from emerge.spans import build_spans, span_bounds, word_boundaries
from emerge.tokenize import tokenize_batch

WORDS = ["revenue", "grew", "15%", "year-over-year,", "the", "café", "naïve", "Q3.", "(profit)", "margin!",
         "supply-chain", "日本語", "emoji🙂", "don't", "x", "antidisestablishmentarianism", "—", "\"quoted\""]
SEPARATORS = [" ", "  ", "\n", "\n\n", "\t", " \u00a0"]


@st.composite
def documents(draw):
    n = draw(st.integers(min_value=0, max_value=120))
    parts = []
    for _ in range(n):
        parts.append(draw(st.sampled_from(WORDS)))
        parts.append(draw(st.sampled_from(SEPARATORS)))
    return draw(st.sampled_from(["", " ", "\n"])) + "".join(parts)


@st.composite
def span_configs(draw):
    min_len = draw(st.integers(1, 20))
    max_len = draw(st.integers(min_len, 40))
    return SpanConfig(min_len=min_len, max_len=max_len, stride=draw(st.integers(1, 8)),
                      length_step=draw(st.none() | st.integers(1, 10)))


@settings(max_examples=150, deadline=None)
@given(text=documents(), config=span_configs())
def test_span_invariants(tokenizer, text, config):
    (ids, offsets), = tokenize_batch(tokenizer, [text])
    starts, ends = span_bounds(text, offsets, config)
    word_start, word_end = word_boundaries(text, offsets)
    assert len(set(zip(starts.tolist(), ends.tolist()))) == len(starts), "spans are unique"
    for s, e in zip(starts.tolist(), ends.tolist()):
        assert config.min_len <= e - s <= config.max_len
        assert s in word_start and e in word_end, "both ends on word boundaries"
        a, b = offsets[s, 0], offsets[e - 1, 1]
        span = text[a:b]
        assert span == span.strip() and span, "no leading/trailing whitespace, never empty"
        assert a == 0 or text[a - 1].isspace(), "never starts mid-word"
        assert b == len(text) or text[b].isspace(), "never ends mid-word"


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(documents(), min_size=1, max_size=4), config=span_configs())
def test_build_spans_text_matches_offsets(tokenizer, texts, config):
    from emerge.ingest import documents_from_texts

    docs = documents_from_texts(texts).documents
    spans, skipped = build_spans(docs, tokenizer, config)
    by_id = dict(zip(docs["doc_id"], docs["text"]))
    for doc_id, a, b, span in spans.select("doc_id", "start_char", "end_char", "text_span").iter_rows():
        assert span == by_id[doc_id][a:b]
    assert spans["span_idx"].to_list() == list(range(spans.height))
    # every document either yields spans or is reported as too short
    assert set(spans["doc_id"]) | set(skipped["doc_id"]) == set(docs["doc_id"])
    assert not set(spans["doc_id"]) & set(skipped["doc_id"])


def test_dense_spans_cover_every_stride_start(tokenizer):
    text = " ".join(f"word{i}" for i in range(200))  # every word is several tokens
    (ids, offsets), = tokenize_batch(tokenizer, [text])
    cfg = SpanConfig(min_len=8, max_len=32, stride=4)
    starts, ends = span_bounds(text, offsets, cfg)
    word_start, _ = word_boundaries(text, offsets)
    gaps = np.diff(np.unique(starts))
    # starts follow the stride grid (snapped forward to word starts), so no gap exceeds
    # stride + the longest word in tokens
    longest_word = int(np.diff(word_start).max())
    assert gaps.max() <= cfg.stride + longest_word
    lengths = ends - starts
    assert lengths.min() >= 8 and lengths.max() <= 32 and len(np.unique(lengths)) > 3


def test_document_shorter_than_min_len_is_reported(tokenizer):
    from emerge.ingest import documents_from_texts

    docs = documents_from_texts(["tiny text", "a much longer document " * 10]).documents
    spans, skipped = build_spans(docs, tokenizer, SpanConfig(min_len=8, max_len=16, stride=4))
    assert skipped["reason"].to_list() == ["shorter_than_min_len"]
    assert spans["doc_id"].unique().to_list() == [docs["doc_id"][1]]
    assert isinstance(spans, pl.DataFrame)
