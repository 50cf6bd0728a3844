"""Turning engine outputs into what the Dagster UI shows: tables, counts, a cluster map."""

import base64
import io
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from emerge.atomic import atomic_write_bytes


def markdown_table(frame: pl.DataFrame, max_rows: int = 30, max_chars: int = 160) -> dg.MarkdownMetadataValue:
    if frame.height == 0:
        return dg.MetadataValue.md("_(empty)_")
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.head(max_rows).iter_rows():
        cells = []
        for v in row:
            text = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(shorten(text.replace("\n", " "), max_chars).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    if frame.height > max_rows:
        lines.append(f"\n_{frame.height - max_rows} more rows_")
    return dg.MetadataValue.md("\n".join(lines))


def shorten(text: str, max_chars: int) -> str:
    """`text` cut at a word boundary within `max_chars`, with an ellipsis when cut."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip() + "…"


def counts_table(counts: dict[str, int]) -> dg.MarkdownMetadataValue:
    return markdown_table(pl.DataFrame({"reason": list(counts), "count": list(counts.values())},
                                       schema={"reason": pl.String, "count": pl.Int64}))


def cluster_map(coords: np.ndarray, labels: np.ndarray, titles: dict[int, str], path: Path) -> dg.MarkdownMetadataValue:
    """2-D view (PCA of the UMAP coordinates) coloured by cluster, saved to `path` and inlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centred = coords - coords.mean(axis=0)
    if coords.shape[1] > 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    else:
        xy = centred
    fig, ax = plt.subplots(figsize=(7, 5), dpi=90)
    noise = labels < 0
    ax.scatter(xy[noise, 0], xy[noise, 1], s=6, c="lightgrey", label="noise")
    cmap = plt.get_cmap("tab20")
    for i, c in enumerate(sorted(set(labels[~noise].tolist()))):
        pts = xy[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, color=cmap(i % 20), label=f"{c}: {titles.get(c, '')}"[:40])
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("Span clusters (fit sample, UMAP -> 2-D PCA)")
    ax.legend(fontsize=6, loc="best", markerscale=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    encoded = base64.b64encode(buf.getvalue()).decode()
    return dg.MetadataValue.md(f"![cluster map](data:image/png;base64,{encoded})")


def score_histograms(frame: pl.DataFrame, bins: int = 10) -> pl.DataFrame:
    """Relevance histogram of each topic's best-scoring spans, one row per topic."""
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for topic, group in frame.group_by("best_topic_id", maintain_order=True):
        counts, _ = np.histogram(group["relevance"].to_numpy(), bins=edges)
        bar = " ".join(str(int(c)) for c in counts)
        rows.append({"topic": topic[0], "spans": group.height, "counts per 0.1 of relevance (0 -> 1)": bar})
    return pl.DataFrame(rows).sort("topic") if rows else pl.DataFrame()


def dataset_metadata(made, scheme) -> dict:
    """What the UI shows for a curated dataset (`emerge.dataset.CuratedDataset`)."""
    from emerge.dataset import label_balance

    frame = made.frame
    return {
        "dagster/row_count": frame.height,
        **made.counts,
        "document_outcomes": counts_table(made.outcomes),
        "spans_per_label": markdown_table(made.per_label(scheme)),
        "label_balance": round(label_balance(frame, scheme.label_col), 4),
        "unlabelled_fraction_labelled_spans": round(made.unlabelled_fraction, 4),
        "parquet_path": dg.MetadataValue.path(str(made.paths["parquet"])),
        "csv_path": dg.MetadataValue.path(str(made.paths["csv"])),
        "card_path": dg.MetadataValue.path(str(made.paths["card"])),
        "preview": markdown_table(frame.select(scheme.title_col, "relevance", "quality", "text_span").head(10)),
    }


def topic_scores_metadata(labelled: pl.DataFrame, out: pl.DataFrame, analyzer) -> dict:
    """What the UI shows for one source's topic scores: spans and relevance per topic, the best
    spans, and each topic's calibration anchors."""
    per_topic = (out.group_by("topic_id", "topic_name").agg(pl.len().alias("spans"),
                                                            pl.col("relevance").mean().alias("mean_relevance"))
                 .sort("spans", descending=True))
    top = (labelled.filter(pl.col("topic_id").is_not_null()).sort("relevance", descending=True)
           .group_by("topic_id", maintain_order=True).head(3).select("topic_id", "relevance", "text_span"))
    return {
        "dagster/row_count": out.height,
        "topics": len(analyzer.topics),
        "unlabelled_fraction": round(unlabelled_share(out), 4),
        "spans_per_topic": markdown_table(per_topic),
        "relevance_histograms": markdown_table(score_histograms(out)),
        "top_spans_per_topic": markdown_table(top),
        "topic_parts_truncated": analyzer.truncated_parts,
        "calibration": markdown_table(pl.DataFrame({
            "topic_id": [str(t.id) for t in analyzer.topics],
            "raw_score_of_unrelated_text": analyzer.calibration.lo.round(4),
            "raw_score_of_own_examples": analyzer.calibration.hi.round(4)})),
    }


def unlabelled_share(scores: pl.DataFrame) -> float:
    return float(scores["topic_id"].is_null().mean()) if scores.height else 0.0
