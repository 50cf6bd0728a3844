"""The curated dataset: selection over labelled spans, export as Parquet + CSV + dataset card."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from emerge.atomic import atomic_write, atomic_write_text
from emerge.config import SelectionConfig, SpanConfig
from emerge.embedding import require_aligned, vectors_of
from emerge.errors import InputError
from emerge.ingest import document_texts
from emerge.label_scheme import CLUSTERS, LabelScheme, scheme_of
from emerge.quality import quality_components
from emerge.selection import cross_document_choice, per_document_choice, select_spans

CLUSTER_COLUMNS = CLUSTERS.dataset_columns
log = logging.getLogger(__name__)


def add_quality(spans: pl.DataFrame, texts: dict[str, str]) -> pl.DataFrame:
    return pl.concat([spans, quality_components(spans, texts)], how="horizontal")


def curate(labelled: pl.DataFrame, vectors: np.ndarray, texts: dict[str, str], selection: SelectionConfig,
           span_config: SpanConfig, label_col: str = "cluster_id",
           columns: list[str] | None = None) -> pl.DataFrame:
    """Quality-score the labelled spans, run Pareto selection, keep the export columns (by default
    those of the label scheme whose label column is `label_col`)."""
    scored = labelled if "quality" in labelled.columns else add_quality(labelled, texts)
    selected = select_spans(scored, vectors, selection, span_config, label_col=label_col)
    columns = columns or scheme_of(label_col).dataset_columns
    return selected.select([c for c in columns if c in selected.columns])


def document_accounting(inventories: list[pl.DataFrame | pl.LazyFrame], spans: pl.DataFrame,
                        dataset: pl.DataFrame) -> pl.DataFrame:
    """Each input's fate (`outcome`): in_dataset, no_span_selected, shorter_than_min_len or its ingest
    skip reason. `inventories`: every source's inputs (source, doc_id, path, record, status, reason)."""
    with_spans = spans["doc_id"].unique().implode()
    in_dataset = dataset["doc_id"].unique().implode()
    inventory = pl.concat([f.lazy().select("source", "doc_id", "path", "record", "status", "reason")
                           for f in inventories]).collect()
    return inventory.with_columns(
        pl.when(pl.col("status") == "skipped").then(pl.col("reason"))
        .when(pl.col("doc_id").is_in(in_dataset)).then(pl.lit("in_dataset"))
        .when(pl.col("doc_id").is_in(with_spans)).then(pl.lit("no_span_selected"))
        .otherwise(pl.lit("shorter_than_min_len")).alias("outcome"))


def label_balance(df: pl.DataFrame, label_col: str) -> float:
    """Smallest label share over the largest (1 = perfectly balanced, near 0 = one label dominates)."""
    if df.height == 0:
        return 0.0
    counts = df.group_by(label_col).len()["len"]
    return float(counts.min() / counts.max())


def label_summary(df: pl.DataFrame, label_col: str, title_col: str) -> pl.DataFrame:
    """Spans, mean relevance and mean quality per label (unsorted)."""
    return df.group_by(label_col, title_col).agg(pl.len().alias("spans"),
                                                 pl.col("relevance").mean().alias("mean_relevance"),
                                                 pl.col("quality").mean().alias("mean_quality"))


def dataset_card(df: pl.DataFrame, *, title: str, config: dict, model: str, counts: dict,
                 label_col: str = "cluster_id", title_col: str | None = None) -> str:
    title_col = title_col or scheme_of(label_col).title_col
    per_label = (label_summary(df, label_col, title_col)
                 .sort(["spans", label_col], descending=[True, False])) if df.height else None  # ties: stable
    lines = [f"# {title}", "", f"Created {datetime.now(timezone.utc).isoformat(timespec='seconds')} by Emerge.", "",
             "## Counts", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items()]
    lines += [f"- rows: {df.height}", f"- label balance (min/max share): {label_balance(df, label_col):.3f}", "",
              "## Model", "", f"- {model}", "", "## Spans per label", "",
              f"| {label_col} | title | spans | mean relevance | mean quality |", "|---|---|---|---|---|"]
    if per_label is not None:
        for row in per_label.iter_rows(named=True):
            lines.append(f"| {row[label_col]} | {row[title_col]} | {row['spans']} | "
                         f"{row['mean_relevance']:.3f} | {row['mean_quality']:.3f} |")
    lines += ["", "## Columns", "", ", ".join(f"`{c}`" for c in df.columns), "", "## Configuration", "",
              "```json", json.dumps(config, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_dataset(df: pl.DataFrame, path: str | Path, card: str | None = None) -> dict[str, Path]:
    """Write `<stem>.parquet`, `<stem>.csv` and `<stem>.card.md` next to `path` (suffix picks the stem).

    Each file is written to a temp name and renamed, so a killed run never leaves a half file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("") if path.suffix in (".csv", ".parquet") else path
    out = {"parquet": stem.with_suffix(".parquet"), "csv": stem.with_suffix(".csv"),
           "card": stem.with_name(stem.name + ".card.md")}
    atomic_write(out["parquet"], lambda p: df.write_parquet(p))
    atomic_write(out["csv"], lambda p: df.write_csv(p))
    if card is not None:
        atomic_write_text(out["card"], card)
    else:
        out.pop("card")
    return out


@dataclass
class CuratedDataset:
    """What `build_curated_dataset` made: the exported rows, each input's outcome, and the
    numbers the dataset card and the Dagster UI report."""

    frame: pl.DataFrame
    outcomes: dict[str, int]  # inputs per outcome (in_dataset, no_span_selected, skip reasons ...)
    counts: dict[str, int]  # sources, inputs, documents_in_dataset, spans_considered, labels
    unlabelled_fraction: float  # over every span the labelling stage saw
    paths: dict[str, Path]

    def per_label(self, scheme: LabelScheme) -> pl.DataFrame:
        return label_summary(self.frame, scheme.label_col, scheme.title_col).sort(scheme.label_col)


@dataclass
class SourceSpans:
    """One source's inputs to the curated dataset. `spans` and `embeddings` may be lazy (scans of
    the assets' Parquet files): `build_curated_dataset` reads one source at a time and loads the
    vectors of only the spans that survive the per-document selection steps, so no step holds
    every span vector of every source."""

    name: str
    spans: pl.DataFrame | pl.LazyFrame  # the `spans` asset of this source
    embeddings: pl.DataFrame | pl.LazyFrame  # span_idx + embedding, row-aligned with `spans`
    labels: pl.DataFrame | pl.LazyFrame  # span_idx + the scheme's label columns
    documents: pl.DataFrame | pl.LazyFrame  # the source's `raw_texts` table (the texts quality is scored against)


@dataclass
class _SourcePicks:
    picked: pl.DataFrame  # rows kept by the per-document steps, `_pos` global
    vectors: np.ndarray | None  # row-aligned with `picked`
    labelled: int  # spans with a label row
    unlabelled: int  # of those, noise / "none of the topics"
    doc_ids: pl.Series  # documents with at least one span


class _LabelSpill:
    """Every source's per-document picks on disk, one folder per label. The cross-document step
    (near-duplicates and the cap) works within one label, so it reads one label's picks and
    vectors at a time: the dataset step holds the largest label's picks, not every source's
    (which grew with the corpus: ~3M picks with their vectors at 1M documents)."""

    def __init__(self, root: Path, label_col: str):
        self.root, self.label_col = root, label_col
        self.folders: dict = {}
        self.rows = self._sources = 0

    def add(self, picked: pl.DataFrame, vectors: np.ndarray) -> None:
        if picked.height == 0:
            return
        dtype = pl.Float16 if vectors.dtype == np.float16 else pl.Float32
        frame = picked.with_columns(pl.Series("embedding", vectors, dtype=pl.Array(dtype, vectors.shape[1])))
        for (label,), part in frame.group_by(self.label_col, maintain_order=True):
            folder = self.folders.setdefault(label, self.root / f"label-{len(self.folders):06d}")
            folder.mkdir(exist_ok=True)
            part.write_parquet(folder / f"{self._sources:06d}.parquet")
        self.rows += picked.height
        self._sources += 1

    def choose(self, selection: SelectionConfig) -> pl.DataFrame:
        """`cross_document_choice` label by label, in its output order (labels ascending, no label first)."""
        kept, largest = [], 0
        for label in sorted(self.folders, key=lambda x: (x is not None, x)):
            part = pl.concat([pl.read_parquet(f) for f in sorted(self.folders[label].iterdir())],
                             how="diagonal_relaxed")
            largest = max(largest, part.height)
            kept.append(cross_document_choice(part.drop("embedding"), vectors_of(part), selection, self.label_col))
        out = pl.concat(kept, how="diagonal_relaxed")
        log.info("selection across documents: %d non-overlapping spans -> %d kept (near-duplicates and the cap "
                 "removed, one label at a time; the largest held %d)", self.rows, out.height, largest)
        return out


def _source_picks(source: SourceSpans, scheme: LabelScheme, selection: SelectionConfig, span_config: SpanConfig,
                  first_pos: int) -> _SourcePicks:
    """The per-document selection of one source, and the vectors of the spans it kept."""
    spans, embeddings = source.spans.lazy(), source.embeddings.lazy()
    require_aligned(source.name, spans, embeddings)
    frame = spans.collect()
    labels = source.labels.lazy().select("span_idx", *scheme.label_columns).collect()
    labelled = frame.join(labels, on="span_idx", how="inner", maintain_order="left")
    scored = labelled if "quality" in labelled.columns else add_quality(
        labelled, document_texts(source.documents.lazy().collect()))
    picked = per_document_choice(scored, selection, span_config, scheme.label_col, first_pos)
    wanted = picked.select("span_idx")
    vectors = vectors_of(wanted.join(embeddings.filter(pl.col("span_idx").is_in(wanted["span_idx"].implode()))
                                     .select("span_idx", "embedding").collect(), on="span_idx", how="left",
                                     maintain_order="left"))
    return _SourcePicks(picked, vectors, labelled.height, scheme.unlabelled_count(labelled),
                        frame["doc_id"].unique())


def build_curated_dataset(*, name: str, out_dir: str | Path, scheme: LabelScheme, sources: list[SourceSpans],
                          inventories: list[pl.DataFrame | pl.LazyFrame], selection: SelectionConfig,
                          span_config: SpanConfig,
                          model_name: str) -> CuratedDataset:
    """Join each source's labels onto its spans (on span_idx), select, export Parquet + CSV + card,
    and account for every input document (`inventories`: every source's `raw_texts`, those without
    spans included).

    Selection runs in two parts (`emerge.selection`): the per-document steps source by source,
    then near-duplicate removal and the per-label cap over what they kept, across sources. The
    result is the one `select_spans` gives on all sources concatenated in the given order."""
    picks: list[_SourcePicks] = []
    first_pos = 0
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".picks-") as tmp:
        spill = _LabelSpill(Path(tmp), scheme.label_col)
        for source in sources:
            source_picks = _source_picks(source, scheme, selection, span_config, first_pos)
            spill.add(source_picks.picked, source_picks.vectors)
            picks.append(dataclasses.replace(source_picks, picked=source_picks.picked.head(0), vectors=None))
            first_pos += source_picks.labelled
        labelled = sum(p.labelled for p in picks)
        if labelled == 0 and any(p.doc_ids.len() for p in picks):
            raise InputError(f"no span has a {scheme.labels_asset} row; re-materialize {scheme.labels_asset} "
                             "after spans changed")
        selected = spill.choose(selection) if spill.rows else (picks[0].picked.drop("_pos") if picks
                                                                else pl.DataFrame())
    dataset = selected.select([c for c in scheme.dataset_columns if c in selected.columns])
    with_spans = pl.DataFrame({"doc_id": pl.concat([p.doc_ids for p in picks]) if picks
                               else pl.Series([], dtype=pl.String)})
    accounting = document_accounting(inventories, with_spans, dataset)
    outcomes = dict(accounting.group_by("outcome").len().sort("outcome").iter_rows())
    counts = {"sources": len(inventories), "inputs": accounting.height,
              "documents_in_dataset": outcomes.get("in_dataset", 0), "spans_considered": labelled,
              "labels": int(dataset[scheme.label_col].n_unique()) if dataset.height else 0}
    card = dataset_card(dataset, title=f"Emerge dataset: {name}", model=model_name,
                        config={"selection": asdict(selection), "spans": asdict(span_config)},
                        counts=counts | {f"inputs_{k}": v for k, v in outcomes.items()},
                        label_col=scheme.label_col, title_col=scheme.title_col)
    paths = write_dataset(dataset, Path(out_dir) / name, card)
    unlabelled = sum(p.unlabelled for p in picks) / labelled if labelled else 0.0
    return CuratedDataset(dataset, outcomes, counts, unlabelled, paths)
