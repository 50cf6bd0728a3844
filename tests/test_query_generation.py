"""Generated pseudo-queries: bounded generation with a real (tiny) causal LM, the query filter, and
the teacher's consistency check that drops a query written about another document."""

import polars as pl
import pytest

from emerge.config import TrainingConfig
from emerge.errors import ConfigError, InputError
from emerge.training.query_generation import GeneratorConfig, QueryGenerator, clean_query, generated_queries

TEXTS = {
    "wing": "Rotor blade stall on a helicopter wing. The airfoil loses lift when the pressure gradient reverses.",
    "soup": "Onion soup simmers for an hour. Garlic and pepper season the broth before it is served.",
    "bank": "A refund reaches the card within five days. The bank charges no fee for a disputed payment.",
    "star": "The telescope tracked a comet across the galaxy. Its orbit brings it near the star every decade.",
}


@pytest.mark.parametrize("generated, expected", [
    (" statin breast cancer survival\nDocument: more", "statin breast cancer survival"),
    ('"why does sourdough rise overnight"', "why does sourdough rise overnight"),
    ("does vitamin D (cholecalciferol) prevent fractures?", "does vitamin D (cholecalciferol) prevent fractures?"),
    ("", None), ("cancer", None),                      # nothing, or one word
    ("Document: onion soup recipe", None),             # the prompt's own field
    ("cancer risk cancer cells cancer", None),         # a degenerate loop
    ("### ??? ***", None), (" ".join(["word"] * 2 + ["w%d" % i for i in range(25)]), None),
])
def test_clean_query_keeps_a_query_line_and_rejects_the_rest(generated, expected):
    assert clean_query(generated) == expected


def test_generation_is_bounded_by_documents_and_by_the_time_budget(tiny_causal_lm):
    rows = pl.DataFrame({"doc_id": list(TEXTS)})
    generator = QueryGenerator(GeneratorConfig(str(tiny_causal_lm), max_new_tokens=4, batch_size=2))
    asked = []
    generate = generator.generate
    generator.generate = lambda docs, progress=None: asked.append(len(docs)) or generate(docs, progress)
    out = generated_queries(rows, TEXTS, 200, generator, seed=0, max_queries=3)
    assert asked == [3]  # only the documents training can use are generated for
    assert set(out.columns) == {"query", "positive", "doc_id"} and out.height <= 3
    for query, positive, doc in out.iter_rows():  # the positive is the document itself, not a cut-out
        assert positive == TEXTS[doc].strip()[:200] and clean_query(query) == query

    said = []
    spent = QueryGenerator(GeneratorConfig(str(tiny_causal_lm), max_new_tokens=4, time_budget_s=1e-9))
    assert spent.generate(list(TEXTS.values()), progress=said.append) == [None] * len(TEXTS)
    assert "time budget" in said[0]


def test_a_query_about_another_document_is_dropped_by_the_teacher_check(tiny_model_dir):
    """The teacher ranks a query's own document first when the query asks about it; a query filed
    under the wrong document is dropped at top_k = 1. (The tiny dense half is random, so BM25 is
    weighted up to decide: this tests the filter, not the teacher's balance.)"""
    from emerge.training.distillation import HybridTeacher, _consistent
    from emerge.training.trainer import load_sentence_transformer

    docs = sorted(TEXTS)
    teacher = HybridTeacher(load_sentence_transformer(tiny_model_dir, "cpu", 64), [TEXTS[d] for d in docs],
                            lexical_weight=5.0)
    queries = pl.DataFrame({"query": ["comet orbit telescope", "garlic onion broth", "refund card fee"],
                            "positive": ["", "", ""], "doc_id": ["star", "soup", "wing"]})
    said = []
    kept = _consistent(queries, teacher, {d: i for i, d in enumerate(docs)}, 1, said.append)
    assert kept["doc_id"].to_list() == ["star", "soup"]
    assert "2/3 generated queries" in said[0]
    with pytest.raises(InputError, match="no generated query ranks its own document"):
        _consistent(queries[2:], teacher, {d: i for i, d in enumerate(docs)}, 1, said.append)


def test_generated_queries_need_a_generator_model_that_exists(tmp_path):
    with pytest.raises(ConfigError, match="query_generator"):
        TrainingConfig(query_source="generated")
    with pytest.raises(ConfigError, match="query_generator_gguf"):
        TrainingConfig(query_generator_gguf="model.gguf")
    with pytest.raises(ConfigError, match="no model folder"):
        GeneratorConfig(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no file 'model.gguf'"):
        GeneratorConfig(str(tmp_path), gguf_file="model.gguf")
