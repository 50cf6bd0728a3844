"""The label schemes (clusters, topics): each owns its columns, and the stages read them from it."""

import polars as pl
import pytest

from emerge import Curator
from emerge.errors import InputError
from emerge.label_scheme import CLUSTERS, SCHEMES, TOPICS, scheme_of


def test_each_scheme_is_found_by_its_label_column_and_an_unknown_one_is_named():
    assert [scheme_of(s.label_col) for s in SCHEMES] == list(SCHEMES)
    with pytest.raises(InputError, match="label_id.*cluster_id.*topic_id"):
        scheme_of("label_id")


def test_exported_columns_hold_provenance_label_title_and_scores_once_each():
    for scheme in SCHEMES:
        cols = scheme.dataset_columns
        assert len(cols) == len(set(cols))
        assert {"text_span", "doc_id", "source", "start_char", "end_char", scheme.label_col, scheme.title_col,
                "relevance", "quality"} <= set(cols)
        # every label column the labelling stage joins onto the spans reaches the export
        assert set(scheme.label_columns) - {"membership", "centroid_sim"} <= set(cols)
    assert "topic_description" in TOPICS.dataset_columns and "topic_id" not in CLUSTERS.dataset_columns


def test_noise_and_none_of_the_topics_are_not_labels():
    clusters = pl.DataFrame({"cluster_id": [0, -1, 3, None]}, schema={"cluster_id": pl.Int64})
    topics = pl.DataFrame({"topic_id": ["a", None, "-1"]})
    assert CLUSTERS.labelled(clusters)["cluster_id"].to_list() == [0, 3]
    assert CLUSTERS.unlabelled_count(clusters) == 2
    assert TOPICS.labelled(topics)["topic_id"].to_list() == ["a", "-1"]  # a string id is an id
    with pytest.raises(InputError, match="no 'topic_id' column"):
        TOPICS.labelled(clusters)


def test_curator_names_what_an_analyzer_lacks():
    class Labeller:  # analyzes, but says nothing of its label scheme or its inputs
        def analyze(self, spans, vectors, **_):
            return spans

    with pytest.raises(TypeError, match=r"Labeller lacks \['config', 'label_scheme', 'needs_token_embeddings'\]"):
        Curator(analyzer=Labeller())
