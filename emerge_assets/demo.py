"""`python -m emerge_assets.demo`: run the whole pipeline on a folder of sources and print a summary.

Uses the Dagster instance in $DAGSTER_HOME (SQLite), so every materialization shows up in
`dagster dev` afterwards. Each source is one partition of the per-source job; the model
loads once for the whole demo because all runs execute in this process.
"""

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    from emerge_assets.definitions import EMERGE_HOME, INPUT_ROOT, PROJECT_ROOT

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-root", default=INPUT_ROOT, help="folder with one sub-folder per source")
    parser.add_argument("--emerge-home", default=EMERGE_HOME, help="where datasets, models and asset files go")
    parser.add_argument("--model", default=None, help="local model directory (default: packaged MiniLM)")
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import dagster as dg

    from emerge_assets.definitions import ASSETS, build_resources, discovery_job, per_source_job
    from emerge_assets.partitions import document_source

    resources = build_resources(args.emerge_home, args.input_root, args.model)
    defs = dg.Definitions(assets=ASSETS, jobs=[per_source_job, discovery_job], resources=resources)
    storage = resources["storage"]
    sources = storage.list_sources()
    if not sources:
        print(f"error: no source folders under {args.input_root}", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    new = [s for s in sources if not instance.has_dynamic_partition(document_source.name, s)]
    if new:
        instance.add_dynamic_partitions(document_source.name, new)
    t0 = time.perf_counter()
    for source in sources:
        print(f"[emerge] embedding source {source!r} ...", flush=True)
        result = defs.resolve_job_def("embed_sources").execute_in_process(
            partition_key=source, instance=instance, raise_on_error=True)
        assert result.success
    print("[emerge] clustering and curating ...", flush=True)
    result = defs.resolve_job_def("discover_and_curate").execute_in_process(instance=instance)
    assert result.success
    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    ds, cl = meta["curated_dataset"], meta["hdbscan_clusters"]
    print(f"\n[emerge] done in {time.perf_counter() - t0:.0f}s")
    print(f"  sources:   {len(sources)} ({', '.join(sources)})")
    print(f"  inputs:    {ds['inputs']} ({ds['documents_in_dataset']} documents in the dataset)")
    print(f"  spans:     {ds['spans_considered']} considered, {ds['dagster/row_count']} selected")
    print(f"  clusters:  {cl['clusters']} (noise fraction {cl['noise_fraction']:.2f})")
    print(f"  dataset:   {ds['parquet_path']}")
    print(f"             {ds['csv_path']}")
    print(f"  card:      {ds['card_path']}")
    print(f"  Dagster UI: DAGSTER_HOME={os.environ['DAGSTER_HOME']} dagster dev -m emerge_assets.definitions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
