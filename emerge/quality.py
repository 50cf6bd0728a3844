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


def quality_components(spans: pl.DataFrame, texts: dict[str, str]) -> pl.DataFrame:
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
