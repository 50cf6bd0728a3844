"""Parquet IO manager for polars frames on any fsspec path (local disk, S3, GCS, ...).

Written here instead of dagster-polars, which breaks on polars 2.x reads. Local writes go to
a temp file and are renamed, so a killed run never leaves a truncated Parquet file behind.

An input whose definition metadata says `lazy: True` arrives as a `pl.LazyFrame` per partition (a
scan of the file, nothing read yet): the global assets over every source read only the columns
and rows they need, one source at a time, instead of holding every source's frames at once.
`lazy_when_many: True` does the same only when a step loads several partitions (a single-run
backfill), and an output may be a LazyFrame (a spilled partition, see
`emerge_assets.partitions.SpilledFrames`): each file is then written from one partition's frame.
"""

import shutil
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field
from upath import UPath

from emerge.atomic import atomic_write
from emerge.embedding import write_parquet


def _is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def _local(path: UPath) -> str:
    return str(path.path if hasattr(path, "path") else path)


class _ParquetUPathIOManager(dg.UPathIOManager):
    extension = ".parquet"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """One partition as usual; a single-run backfill over many partitions returns a dict
        {partition key: frame}, written one file per partition (UPathIOManager refuses it)."""
        if not (context.has_asset_partitions and len(context.asset_partition_keys) > 1):
            return super().handle_output(context, obj)
        paths = self._get_paths_for_partitions(context)
        if not isinstance(obj, dict) or set(obj) != set(paths):
            raise TypeError(f"asset {context.asset_key.to_user_string()} ran for {len(paths)} partitions and must "
                            "return a dict {partition key: DataFrame} with exactly those keys")
        spilled = getattr(obj, "files", {})
        for key, path in paths.items():
            self.make_directory(path.parent)
            if key in spilled and _is_local(path):  # the spill already is the file: move it, do not rewrite it
                atomic_write(_local(path), lambda tmp, src=spilled[key]: shutil.move(src, tmp))
            else:
                self.dump_to_path(context=context, obj=obj[key], path=path)
        if hasattr(obj, "cleanup"):
            obj.cleanup()

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if isinstance(obj, pl.LazyFrame):  # one spilled partition: only it is read back
            obj = obj.collect()
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"ParquetIOManager stores polars DataFrames; asset {context.asset_key.to_user_string()} "
                            f"returned {type(obj).__name__}")
        if _is_local(path):
            atomic_write(_local(path), lambda tmp: write_parquet(obj, tmp))
        else:  # object stores: a PUT is atomic already
            with path.open("wb") as fh:
                write_parquet(obj, fh)

    def load_input(self, context: dg.InputContext) -> Any:
        """Inputs marked `partitions_as_dict` (the global assets' view of every source) are always
        {partition key: frame}, also when one source or none exists (Dagster hands a lone partition
        over bare, which a one-source corpus would trip on)."""
        loaded = super().load_input(context)
        if not ((context.definition_metadata or {}).get("partitions_as_dict") and context.has_asset_partitions):
            return loaded
        if isinstance(loaded, dict):
            return loaded
        keys = context.asset_partition_keys
        return {} if loaded is None else {keys[0]: loaded}

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pl.DataFrame | pl.LazyFrame:
        if _lazy(context):
            if not path.exists():  # a scan would fail only when collected; missing partitions are skipped here
                raise FileNotFoundError(str(path))
            if _is_local(path):
                return pl.scan_parquet(_local(path))
            # object stores: fsspec credentials do not carry over to polars' reader, so the file is
            # read here and handed over as a LazyFrame (same interface, no memory saving)
        with path.open("rb") as fh:
            frame = pl.read_parquet(fh)
        return frame.lazy() if _lazy(context) else frame


def _lazy(context: dg.InputContext) -> bool:
    """Whether this input is handed over as scans: always (`lazy`), or when the step loads several
    partitions of it (`lazy_when_many`)."""
    metadata = context.definition_metadata or {}
    return bool(metadata.get("lazy") or (metadata.get("lazy_when_many") and context.has_asset_partitions
                                         and len(context.asset_partition_keys) > 1))


class ParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Stores each asset (partition) as `<base_path>/<asset key>/<partition>.parquet`."""

    base_path: str = Field(description="Local folder or fsspec URL (s3://bucket/prefix) for asset values.")

    def create_io_manager(self, context) -> _ParquetUPathIOManager:
        return _ParquetUPathIOManager(base_path=UPath(self.base_path))
