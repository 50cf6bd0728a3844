"""One partition per document source (a sub-folder of the input root), and how per-source assets
run for one source or for many sources in one step (single-run backfill).

The per-source assets carry `BackfillPolicy.single_run()`: a backfill over many sources (or
`dagster asset materialize --partition-range a...z`) is then one run, one step per asset, so
the embedding model loads once instead of once per source. In such a run Dagster hands each
input over as {source: frame} and expects {source: frame} back; `for_each_source` runs the
one-source body per key, so each asset body keeps its simple one-source shape.

Such a step holds one source's frames at a time, however many sources it covers: its inputs
arrive as {source: LazyFrame} scans (`SOURCE_IN`'s `lazy_when_many`), each read when its source's
turn comes, and each source's output is spilled to a local Parquet file as soon as it is computed
(`SpilledFrames`), which the IO manager moves into place as that partition's file.
"""

import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import polars as pl

document_source = dg.DynamicPartitionsDefinition(name="document_source")
SINGLE_RUN = dg.BackfillPolicy.single_run()

SourceFrames = dg.DagsterType(
    name="SourceFrames",
    type_check_fn=lambda _, value: isinstance(value, (pl.DataFrame, dict)),
    description="One source's frame, or {source: frame} when a single run covers many sources.")

# An upstream per-source input that may arrive as {source: LazyFrame} (see module docstring).
SOURCE_IN = dg.AssetIn(dagster_type=SourceFrames, metadata={"lazy_when_many": True})


class SpilledFrames(dict):
    """{source: LazyFrame} over Parquet files in a private temp folder: the output of a step over
    many sources, each frame written out when computed so the step never holds them all. The IO
    manager moves each spilled file into place on local storage (`files`; it is written the way the
    IO manager writes, so it already is the partition's file) or writes it from its scan elsewhere,
    and then calls `cleanup` (which a garbage collection of the dict does as well, so a failed step
    leaves no folder behind)."""

    def __init__(self):
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="emerge-spill-"))
        self.files: dict[str, Path] = {}
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def spill(self, key: str, frame: pl.DataFrame) -> None:
        from emerge.embedding import write_parquet

        path = self.folder / f"{len(self)}.parquet"  # partition keys may hold any character
        write_parquet(frame, path)
        self.files[key] = path
        self[key] = pl.scan_parquet(path)

    def cleanup(self) -> None:
        self._finalizer()


def latest_partition_metadata(instance: dg.DagsterInstance, asset: str, source: str) -> dict:
    """The metadata (key -> MetadataValue) of `asset`'s latest materialization of `source`; {} when none."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[source]), limit=1).records
    if not records or records[0].asset_materialization is None:
        return {}
    return dict(records[0].asset_materialization.metadata)


def for_each_source(context: dg.AssetExecutionContext, compute: Callable[..., dg.Output],
                    **inputs: pl.DataFrame | dict) -> dg.Output:
    """`compute(source, **frames) -> Output` for each partition key of this step.

    One key: the Output as is. Several: one Output holding {source: frame}, each source's
    metadata attached to its own partition's materialization.
    """
    keys = context.partition_keys
    if len(keys) == 1:
        return compute(keys[0], **inputs)
    values = SpilledFrames()
    for key in keys:
        out = compute(key, **{name: _collected(frames[key]) for name, frames in inputs.items()})
        values.spill(key, out.value)
        context.add_asset_metadata(out.metadata, partition_key=key)
    return dg.Output(values)


def _collected(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame
