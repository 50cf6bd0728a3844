"""Span well-formedness: does the span read like a self-contained piece of text?

Scores use only the span and its immediate neighbourhood in the document, so they are cheap
(vectorised over all dense spans) and explainable: each component is stored separately.
"""

from __future__ import annotations

import numpy as np
import polars as pl

SENTENCE_END = set(".!?…")
CLAUSE_MARK = set(",;:–—-(")
CLOSERS = set("\"')]}»”’")
FUNCTION_WORDS = frozenset(
    "a an the and or but nor so yet of to in on at by for with from as into onto than that which who whom "
    "whose this these those is are was were be been being has have had do does did not no if then because "
    "while whereas although though its it's their our your my his her".split())


_STRIP = "\"'()[]{}.,;:!?-–—“”‘’"
_BOUNDARY = 0  # code point standing for "no character" (before/after the document)


def _codes(chars) -> np.ndarray:
    return np.array([ord(c) for c in chars], np.uint32)


def _neighbour_codes(spans: pl.DataFrame, texts: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous, next, last) code point per span: the last non-blank (space/tab) character
    before the span, the first non-blank after it (`_BOUNDARY` at a document edge) and the
    span's own last character. All documents are laid out in one code-point array, so this is
    a handful of numpy passes instead of a Python loop over millions of spans."""
    doc_ids = spans["doc_id"].unique(maintain_order=True).to_list()
    docs = [texts[d] for d in doc_ids]
    lengths = np.array([len(t) for t in docs], np.int64)
    offsets = np.concatenate([[1], 1 + np.cumsum(lengths + 1)[:-1]]) if docs else np.zeros(0, np.int64)
    flat = "\x00" + "\x00".join(docs) + "\x00"
    codes = np.frombuffer(flat.encode("utf-32-le"), dtype=np.uint32).copy()
    boundary = np.zeros(len(codes), bool)
    boundary[offsets - 1] = True
    boundary[-1] = True
    codes[boundary] = _BOUNDARY  # a literal NUL inside a text reads as an edge too
    positions = np.arange(len(codes))
    solid = (codes != 32) & (codes != 9)
    last_solid = np.maximum.accumulate(np.where(solid, positions, 0))
    next_solid = np.minimum.accumulate(np.where(solid, positions, len(codes) - 1)[::-1])[::-1]
    doc_pos = pl.Series(doc_ids).to_frame("doc_id").with_row_index("_doc")
    base = offsets[spans.select("doc_id").join(doc_pos, on="doc_id", how="left", maintain_order="left")["_doc"]
                   .to_numpy()]
    a = base + spans["start_char"].to_numpy()
    b = base + spans["end_char"].to_numpy()
    prev = codes[last_solid[a - 1]]
    nxt = codes[next_solid[b]]
    last = np.where(b > a, codes[np.maximum(b - 1, 0)], _BOUNDARY)
    return prev, nxt, last


def quality_components(spans: pl.DataFrame, texts: dict[str, str]) -> pl.DataFrame:
    """Per span: start, end, function-word, completeness components and their blend `quality`.

    start: 1 after a sentence end or at a paragraph/document start, 0.6 after a clause mark,
    0.2 mid-clause. end: 1 on a sentence end (or a closer before a break), 0.9 before a line or
    document end, 0.5 on a clause mark, 0.2 otherwise. function words: minus 0.5 for each edge
    word like "the"/"of" (the first only when the span does not start a paragraph).
    completeness: balanced brackets/quotes and a letter share of at least 60 %.
    """
    if spans.height == 0:
        empty = pl.Series([], dtype=pl.Float32)
        return pl.DataFrame({k: empty for k in ("q_start", "q_end", "q_function_words", "q_completeness", "quality")})
    prev, nxt, last = _neighbour_codes(spans, texts)
    at_edge = (prev == _BOUNDARY) | (prev == 10)
    start = np.where(at_edge | np.isin(prev, _codes(SENTENCE_END)), 1.0,
                     np.where(np.isin(prev, _codes(CLAUSE_MARK)), 0.6, 0.2)).astype(np.float32)
    next_is_break = (nxt == _BOUNDARY) | (nxt == 10)
    end = np.where(np.isin(last, _codes(SENTENCE_END)) | (np.isin(last, _codes(CLOSERS)) & (next_is_break | (nxt == 32))),
                   1.0, np.where(next_is_break, 0.9, np.where(np.isin(last, _codes(",;:")), 0.5, 0.2))).astype(np.float32)
    text = pl.col("text_span")
    words = list(FUNCTION_WORDS)
    balanced = ((text.str.count_matches("(", literal=True) == text.str.count_matches(")", literal=True))
                & (text.str.count_matches("[", literal=True) == text.str.count_matches("]", literal=True))
                & (text.str.count_matches('"', literal=True) % 2 == 0)
                & (text.str.count_matches("“", literal=True) == text.str.count_matches("”", literal=True)))
    non_space = (text.str.len_chars() - text.str.count_matches(r"\s")).clip(lower_bound=1)
    parts = spans.select(
        text.str.extract(r"^\s*(\S+)", 1).str.strip_chars(_STRIP).str.to_lowercase().is_in(words)
        .fill_null(False).alias("first_fw"),
        text.str.extract(r"(\S+)\s*$", 1).str.strip_chars(_STRIP).str.to_lowercase().is_in(words)
        .fill_null(False).alias("last_fw"),
        balanced.alias("balanced"),
        (text.str.count_matches(r"\p{L}") / non_space).alias("alpha"))
    dang = (1.0 - 0.5 * (parts["first_fw"].to_numpy() & ~at_edge)
            - 0.5 * parts["last_fw"].to_numpy()).astype(np.float32)
    comp = (np.where(parts["balanced"].to_numpy(), 1.0, 0.5)
            * np.minimum(1.0, parts["alpha"].to_numpy() / 0.6)).astype(np.float32)
    quality = (0.35 * start + 0.35 * end + 0.15 * dang + 0.15 * comp) * np.minimum(1.0, comp + 0.5)
    return pl.DataFrame({"q_start": start, "q_end": end, "q_function_words": dang, "q_completeness": comp,
                         "quality": np.clip(quality, 0.0, 1.0).astype(np.float32)})


def selectable(spans: pl.DataFrame, texts: dict[str, str], min_quality: float | None,
               components: pl.DataFrame | None = None) -> np.ndarray:
    """Which spans reach `min_quality` (all when None): selection's quality threshold drops the
    rest before any label or vector is read, so a labelling stage that skips them changes
    nothing a dataset at that threshold (or a stricter one) can contain. At the default 0.5 that
    is 23-43 % of the dense spans of news, abstracts and forum posts, so labelling only these
    saves most of the labelling work. `components`: the spans' `quality_components`, when the
    caller has them already."""
    if min_quality is None or spans.height == 0:
        return np.ones(spans.height, bool)
    if components is None:
        components = quality_components(spans, texts)
    # the comparison selection makes (emerge.selection.per_document_choice), so the two never disagree
    return components.select(pl.col("quality") >= min_quality).to_series().to_numpy()
