import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emerge.config import SelectionConfig, SpanConfig
from emerge.quality import quality_components
from emerge.selection import length_fit, pareto_front, select_spans
from emerge.titles import ctfidf_keyphrases, title_from_keyphrases


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 40), st.just(3)), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])))
def test_pareto_front_matches_brute_force(obj):
    mask = pareto_front(obj, chunk=7)
    for i in range(len(obj)):
        dominated = any((obj[j] >= obj[i]).all() and (obj[j] > obj[i]).any() for j in range(len(obj)))
        assert mask[i] == (not dominated)
    assert mask.any()


def test_length_fit_peaks_at_target():
    cfg = SpanConfig(min_len=10, max_len=50)
    fit = length_fit(np.array([10, 30, 50, 40]), cfg, None)
    assert fit[1] == 1.0 and fit[0] == 0.0 and fit[2] == 0.0 and 0 < fit[3] < 1


def make_candidates(rng, n_docs=4, per_doc=30):
    rows = []
    for d in range(n_docs):
        for i in range(per_doc):
            s = int(rng.integers(0, 400))
            n = int(rng.integers(8, 40))
            rows.append({"doc_id": f"d{d}", "start_char": s, "end_char": s + 5 * n, "n_tokens": n,
                         "cluster_id": int(rng.integers(-1, 3)), "relevance": float(rng.random()),
                         "quality": float(rng.random()), "text_span": "x"})
    return pl.DataFrame(rows)


def test_selection_respects_thresholds_overlap_and_noise():
    rng = np.random.default_rng(0)
    cands = make_candidates(rng)
    vecs = rng.normal(size=(cands.height, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cfg = SelectionConfig(quality_threshold=0.3, min_relevance=0.2)
    out = select_spans(cands, vecs, cfg, SpanConfig(min_len=8, max_len=40))
    assert out.height > 0
    assert (out["quality"] >= 0.3).all() and (out["relevance"] >= 0.2).all()
    assert (out["cluster_id"] >= 0).all()
    for doc in out.partition_by("doc_id"):
        iv = sorted(doc.select("start_char", "end_char").iter_rows())
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(iv, iv[1:]))
    with_noise = select_spans(cands, vecs, SelectionConfig(quality_threshold=0.3, include_noise=True),
                              SpanConfig(min_len=8, max_len=40))
    assert (with_noise["cluster_id"] == -1).any()


def test_near_duplicates_and_caps():
    rows = [{"doc_id": f"d{i}", "start_char": 0, "end_char": 10, "n_tokens": 20, "cluster_id": 0,
             "relevance": 0.9 - i * 0.01, "quality": 0.9, "text_span": f"t{i}"} for i in range(6)]
    cands = pl.DataFrame(rows)
    vecs = np.tile(np.eye(4, dtype=np.float32)[0], (6, 1))
    vecs[3:] = np.eye(4, dtype=np.float32)[1]
    out = select_spans(cands, vecs, SelectionConfig(quality_threshold=0.0), SpanConfig(min_len=8, max_len=40))
    assert sorted(out["text_span"].to_list()) == ["t0", "t3"]  # best of each identical group
    capped = select_spans(cands, np.eye(6, dtype=np.float32), SelectionConfig(quality_threshold=0.0,
                          max_spans_per_cluster=2), SpanConfig(min_len=8, max_len=40))
    assert capped["text_span"].to_list() == ["t0", "t1"]


def test_quality_prefers_sentence_aligned_spans():
    text = "The cat sat on the mat. Dogs run fast in the park, and the birds sing."
    spans = pl.DataFrame({
        "doc_id": ["d"] * 3,
        "start_char": [0, 4, 24],
        "end_char": [23, 27, 49],
        "text_span": [text[0:23], text[4:27], text[24:49]],
    })
    q = quality_components(spans, {"d": text})["quality"].to_list()
    assert q[0] > q[2] > q[1]  # full sentence > sentence start, clause end > mid-to-mid
    assert all(0 <= v <= 1 for v in q)


def test_ctfidf_titles_pick_distinctive_terms():
    texts = {0: ["the goalkeeper saved the penalty", "a penalty kick for the striker", "penalty shootout"],
             1: ["sow carrot seeds in the garden", "garden compost for carrot beds", "weed the garden"]}
    phrases = ctfidf_keyphrases(texts, top_n=3)
    assert "penalty" in phrases[0][0] and "garden" in phrases[1][0]
    assert title_from_keyphrases(["revenue growth", "profit"]) == "Revenue Growth / Profit"
    assert title_from_keyphrases([]) == "Untitled"


# --- the per-span reference the vectorised quality scores must reproduce ---------------------
from emerge.quality import CLAUSE_MARK, CLOSERS, FUNCTION_WORDS, SENTENCE_END  # noqa: E402

def _start_score(prev: str) -> float:
    if prev == "" or prev == "\n" or prev in SENTENCE_END:
        return 1.0
    if prev in CLAUSE_MARK:
        return 0.6
    return 0.2


def _end_score(last: str, nxt: str) -> float:
    if last in SENTENCE_END or (last in CLOSERS and nxt in ("", "\n", " ")):
        return 1.0
    if nxt in ("", "\n"):
        return 0.9
    if last in ",;:":
        return 0.5
    return 0.2


def _balanced(text: str) -> bool:
    return (text.count("(") == text.count(")") and text.count("[") == text.count("]")
            and text.count('"') % 2 == 0 and text.count("“") == text.count("”"))


def _edge_word(text: str, last: bool) -> str:
    words = text.split()
    if not words:
        return ""
    return words[-1 if last else 0].strip("\"'()[]{}.,;:!?-–—“”‘’").lower()


def reference_quality(spans: pl.DataFrame, texts: dict[str, str]) -> pl.DataFrame:
    """Per span: start, end, function-word, completeness components and their blend `quality`."""
    starts, ends, dangling, complete = [], [], [], []
    for doc_id, a, b, span in spans.select("doc_id", "start_char", "end_char", "text_span").iter_rows():
        doc = texts[doc_id]
        before = doc[:a].rstrip(" \t")
        prev = before[-1] if before else ""
        after = doc[b:].lstrip(" \t")
        nxt = after[0] if after else ""
        starts.append(_start_score(prev))
        ends.append(_end_score(span[-1] if span else "", nxt))
        dangling.append(1.0 - 0.5 * (_edge_word(span, False) in FUNCTION_WORDS and prev not in ("", "\n"))
                        - 0.5 * (_edge_word(span, True) in FUNCTION_WORDS))
        non_space = sum(1 for ch in span if not ch.isspace()) or 1
        alpha = sum(1 for ch in span if ch.isalpha()) / non_space
        complete.append((1.0 if _balanced(span) else 0.5) * min(1.0, alpha / 0.6))
    start = np.asarray(starts, np.float32)
    end = np.asarray(ends, np.float32)
    dang = np.asarray(dangling, np.float32)
    comp = np.asarray(complete, np.float32)
    quality = (0.35 * start + 0.35 * end + 0.15 * dang + 0.15 * comp) * np.minimum(1.0, comp + 0.5)
    return pl.DataFrame({"q_start": start, "q_end": end, "q_function_words": dang, "q_completeness": comp,
                         "quality": np.clip(quality, 0.0, 1.0).astype(np.float32)})


def test_vectorised_quality_matches_the_per_span_definition():
    rng = np.random.default_rng(11)
    texts = {
        "a": "The (quick) brown fox, it said: \"jump!\" Then  it ran.\nA new line\tstarts here; and the end",
        "b": "   Leading spaces. “Quoted words” of the [bracket list]... 42 7 9 — and? Yes!  ",
        "c": "x",
        "d": "Ünïcödé wörds arè létters. ß and Ωmega; the of",
    }
    rows = []
    for doc_id, text in texts.items():
        for _ in range(60):
            a = int(rng.integers(0, len(text)))
            b = int(rng.integers(a + 1, len(text) + 1))
            rows.append({"doc_id": doc_id, "start_char": a, "end_char": b, "text_span": text[a:b]})
    spans = pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=1)  # documents interleaved
    got = quality_components(spans, texts)
    want = reference_quality(spans, texts)
    for col in want.columns:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), atol=1e-6, err_msg=col)
