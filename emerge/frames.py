"""Polars frames that own their bytes.

Polars stores strings as views into shared buffers, and a filter keeps the views: a few rows
picked out of a large scan keep that scan's whole text buffers alive. A step that gathers a small
sample from every source (the UMAP fit sample) then holds every source's text at once, which is
what made `umap_projection`'s memory grow with the number of sources (~30 MB a source of dense
spans; BENCHMARKS.md, "Why umap_projection grew")."""

from __future__ import annotations

import polars as pl


def owning_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its string columns copied into buffers of their own (the Arrow round trip
    copies only the rows present), so it no longer pins the buffers it was filtered from."""
    strings = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    if not strings or frame.height == 0:
        return frame
    copied = pl.from_arrow(frame.select(strings).to_arrow())
    return frame.with_columns(copied.get_columns())
