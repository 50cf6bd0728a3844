"""The two ways Emerge labels spans: discovered clusters or the user's topics.

Each is one `LabelScheme` that owns its label and title columns, the columns its labelling stage
adds to a span, the exported dataset's columns, and which fine-tuning route its datasets take,
so the selection, export, checks, pairing and evaluation read those from the scheme instead of
switching on a column name. `scheme_of(label_col)` finds a scheme from a dataset's label column
(the public functions keep taking `label_col` strings).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from emerge.errors import InputError

PROVENANCE_COLUMNS = ("text_span", "doc_id", "source", "start_char", "end_char", "n_tokens")
SCORE_COLUMNS = ("relevance", "quality", "length_fit", "score")


@dataclass(frozen=True)
class LabelScheme:
    name: str
    label_col: str
    title_col: str
    label_dtypes: tuple  # the polars dtypes a label column of this scheme may have
    label_columns: tuple[str, ...]  # what the labelling stage adds to each span row (joined onto spans)
    description_cols: tuple[str, ...]  # exported beside the title
    labels_asset: str  # the Dagster asset that produces the labels (named in error messages)
    self_trains: bool  # its datasets train by self-training on the topics, not on label pairs

    @property
    def dataset_columns(self) -> list[str]:
        """The exported dataset's columns, in order: provenance, label, title, scores."""
        return [*PROVENANCE_COLUMNS, self.label_col, self.title_col, *self.description_cols, *SCORE_COLUMNS]

    def labelled(self, frame: pl.DataFrame) -> pl.DataFrame:
        return labelled_rows(frame, self.label_col)

    def unlabelled_count(self, frame: pl.DataFrame) -> int:
        """Rows of `frame` without a real label (noise or "none of the topics")."""
        return frame.height - self.labelled(frame).height


CLUSTERS = LabelScheme(name="clusters", label_col="cluster_id", title_col="cluster_title",
                       label_dtypes=(pl.Int64, pl.Int32),
                       label_columns=("cluster_id", "cluster_title", "membership", "centroid_sim", "relevance"),
                       description_cols=(), labels_asset="span_clusters", self_trains=False)
TOPICS = LabelScheme(name="topics", label_col="topic_id", title_col="topic_name", label_dtypes=(pl.String,),
                     label_columns=("topic_id", "topic_name", "topic_description", "relevance"),
                     description_cols=("topic_description",), labels_asset="topic_scores", self_trains=True)
SCHEMES = (CLUSTERS, TOPICS)


def labelled_rows(frame: pl.DataFrame, label_col: str) -> pl.DataFrame:
    """Rows with a real label: noise (-1) and unlabelled (null) spans carry no label signal."""
    if label_col not in frame.columns:
        raise InputError(f"the dataset has no {label_col!r} column (columns: {frame.columns})")
    rows = frame.filter(pl.col(label_col).is_not_null())
    if rows.schema[label_col].is_numeric():
        rows = rows.filter(pl.col(label_col) >= 0)
    return rows


def scheme_of(label_col: str) -> LabelScheme:
    """The scheme whose label column is `label_col`."""
    for scheme in SCHEMES:
        if scheme.label_col == label_col:
            return scheme
    raise InputError(f"unknown label column {label_col!r}: expected one of {[s.label_col for s in SCHEMES]}")
