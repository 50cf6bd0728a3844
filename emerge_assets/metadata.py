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
