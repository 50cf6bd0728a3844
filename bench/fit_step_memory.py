"""Does a global step's peak memory grow with the number of sources? One Dagster step per count.

    python bench/fit_step_memory.py --home HOME --partitions 8 24 40 [--asset curated_dataset] --out result.json

HOME is an Emerge home whose per-source assets are materialized (e.g. `asset_scale.py --workdir`
keeps one: `<workdir>/<size>/home`). For each count N a fresh temporary instance gets N
`document_source` partitions whose per-source input files are that home's files, cycled
(symlinks: N may exceed the home's sources; the copies share document ids, which the dataset's
near-duplicate step then removes), and the asset (`umap_projection`, or `curated_dataset` with its
checks) is materialized in its own child process; its peak RSS (`VmHWM`) is read there. Both
steps read one source at a time, so they should stay flat in N. The last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402


INPUTS = {"umap_projection": ("spans", "span_embeddings"),
          "curated_dataset": ("raw_texts", "spans", "span_embeddings", "span_clusters")}


def child(home: Path, n: int, asset: str) -> None:
    from asset_scale import peak_rss_gib

    sources = sorted(p.stem for p in (home / "assets" / "spans").glob("*.parquet"))
    if not sources:
        raise SystemExit(f"{home}/assets/spans holds no partition file; materialize the per-source assets first")
    work = Path(tempfile.mkdtemp(prefix="fit_step_memory_"))
    keys = [f"p{i:04d}" for i in range(n)]
    for upstream in INPUTS[asset]:
        (work / "assets" / upstream).mkdir(parents=True)
        for i, key in enumerate(keys):
            os.symlink(home / "assets" / upstream / f"{sources[i % len(sources)]}.parquet",
                       work / "assets" / upstream / f"{key}.parquet")
    from emerge_assets.curate import use_dagster_home

    use_dagster_home(str(work))
    import dagster as dg

    from emerge_assets.definitions import ASSETS, build_resources

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("document_source", keys)
    t = time.perf_counter()
    result = dg.materialize(ASSETS, selection=[asset], instance=instance,
                            resources=build_resources(str(work), str(work / "input")))
    meta = result.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    print(json.dumps({"asset": asset, "partitions": n, "home_sources": len(sources),
                      "peak_rss_gib": round(peak_rss_gib(), 3), "wall_s": round(time.perf_counter() - t, 1),
                      "rows": meta["dagster/row_count"].value,
                      **{k: meta[k].value for k in ("total_spans", "fit_spans", "spans_considered") if k in meta}}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", required=True)
    p.add_argument("--partitions", type=int, nargs="+", default=[8, 24, 40])
    p.add_argument("--asset", default="umap_projection", choices=sorted(INPUTS))
    p.add_argument("--out", default=None)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    home = Path(args.home).resolve()
    if args.child:
        child(home, args.child, args.asset)
        return 0
    runs = []
    for n in args.partitions:
        proc = subprocess.run([sys.executable, __file__, "--home", str(home), "--child", str(n), "--asset", args.asset],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{args.asset} over {n} partitions failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"[fit_step_memory] {n} partitions: peak RSS {runs[-1]['peak_rss_gib']:.3f} GiB", file=sys.stderr)
    return emit({"benchmark": "fit_step_memory", "asset": args.asset, "home": str(home), "runs": runs,
                 "machine": machine()}, args.out)


if __name__ == "__main__":
    sys.exit(main())
