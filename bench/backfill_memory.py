"""Does a single-run backfill over many sources hold every source at once? One run per count.

    python bench/backfill_memory.py --docs JSONL [--docs JSONL ...] --sources 4 12 24 \
        [--docs-per-source 150] [--assets raw_texts spans] --out result.json

For each count N a fresh Emerge home gets N sources of `--docs-per-source` distinct documents
(read in order from the JSONL files; the run stops if they do not hold N x docs-per-source), and
the per-source assets are materialized as one single-run backfill over all N partitions
(`--partition-range`, one step per asset) in a child process, whose peak RSS (`VmHWM`) is read
there. A step that holds one source at a time stays flat in N; one that returns every source's
frames at once grows with it. The default assets need no model pass (the tokenizer only), so
the run measures the step's bookkeeping, not the encoder. The last stdout line is the JSON.
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


def child(docs: list[str], n: int, per_source: int, assets: list[str]) -> None:
    from asset_scale import load_texts, peak_rss_gib, write_corpus

    texts = load_texts(docs, "text")
    if len(texts) < n * per_source:
        raise SystemExit(f"{n} sources x {per_source} documents need {n * per_source} documents, "
                         f"the --docs files hold {len(texts)}")
    work = Path(tempfile.mkdtemp(prefix="backfill_memory_"))
    sources = write_corpus(texts[:n * per_source], n * per_source, per_source, work / "input")
    from emerge_assets.curate import use_dagster_home

    use_dagster_home(str(work))
    import dagster as dg

    from emerge_assets.definitions import ASSETS, build_resources

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions("document_source", sources)
    t = time.perf_counter()
    result = dg.materialize(ASSETS, selection=assets, instance=instance,
                            resources=build_resources(str(work), str(work / "input"), device="cpu"),
                            tags={"dagster/asset_partition_range_start": sources[0],
                                  "dagster/asset_partition_range_end": sources[-1]})
    rows = {}
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization
        rows[m.asset_key.to_user_string()] = rows.get(m.asset_key.to_user_string(), 0) + \
            int(m.metadata["dagster/row_count"].value)
    steps = sorted({e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"})
    print(json.dumps({"sources": n, "documents": n * per_source, "steps": steps, "rows": rows,
                      "peak_rss_gib": round(peak_rss_gib(), 3), "wall_s": round(time.perf_counter() - t, 1)}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", action="append", required=True)
    p.add_argument("--sources", type=int, nargs="+", default=[4, 12, 24])
    p.add_argument("--docs-per-source", type=int, default=150)
    p.add_argument("--assets", nargs="+", default=["raw_texts", "spans"])
    p.add_argument("--out", default=None)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    docs = [str(Path(d).resolve()) for d in args.docs]
    if args.child:
        child(docs, args.child, args.docs_per_source, args.assets)
        return 0
    runs = []
    for n in args.sources:
        cmd = [sys.executable, __file__, "--child", str(n), "--docs-per-source", str(args.docs_per_source),
               "--assets", *args.assets] + [x for d in docs for x in ("--docs", d)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"backfill over {n} sources failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"[backfill_memory] {n} sources: peak RSS {runs[-1]['peak_rss_gib']:.3f} GiB, "
              f"{runs[-1]['wall_s']} s", file=sys.stderr)
    return emit({"benchmark": "backfill_memory", "assets": args.assets, "docs_per_source": args.docs_per_source,
                 "runs": runs, "machine": machine()}, args.out)


if __name__ == "__main__":
    sys.exit(main())
