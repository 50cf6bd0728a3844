"""The `emerge` command: curate a corpus, open its Dagster UI, see where things stand.

    emerge curate INPUT_ROOT --home DIR [--topics FILE] [--config RUN_CONFIG.yaml] [--skip-training]
    emerge ui --home DIR [--input-root DIR] [--port 3000]
    emerge status --home DIR

Every home has its own Dagster instance (`<home>/dagster_home`, or `$DAGSTER_HOME` when set), so
`ui` and `status` see exactly the runs `curate` made there.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

DEFAULT_HOME = ".emerge_home"


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="emerge", description="Turn folders of raw text into curated span "
                                     "datasets and a fine-tuned embedding model.", formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{curate,ui,status}")

    curate = sub.add_parser("curate", help="run the whole pipeline on INPUT_ROOT (one sub-folder per source)",
                            description="Read, span, embed, cluster and curate every source under INPUT_ROOT, "
                            "score it against --topics, fine-tune and gate a model; print a summary.",
                            formatter_class=fmt)
    curate.add_argument("input_root", help="folder with one sub-folder per source")
    curate.add_argument("--home", default=DEFAULT_HOME, help="where datasets, models, MLflow and Dagster runs go")
    curate.add_argument("--topics", default=None, help="topics file (YAML/JSON); without it no topic dataset")
    curate.add_argument("--config", default=None, help="run-config YAML: ops: {asset: {config: {...}}}")
    curate.add_argument("--model", default=None, help="local model directory (default: packaged all-MiniLM-L6-v2)")
    curate.add_argument("--skip-training", action="store_true", help="stop after the datasets")
    curate.add_argument("--verbose", action="store_true",
                        help="also show Dagster's DEBUG events and beta/preview warnings")

    ui = sub.add_parser("ui", help="the Dagster UI on a home's instance", formatter_class=fmt)
    ui.add_argument("--home", default=DEFAULT_HOME, help="the home `emerge curate` wrote to")
    ui.add_argument("--input-root", default=None, help="source folders for new runs from the UI; None = "
                    "$EMERGE_INPUT_ROOT, else the bundled sample corpus")
    ui.add_argument("--port", type=int, default=3000, help="port of the Dagster UI")

    status = sub.add_parser("status", help="sources, last materializations, datasets, models, failed or "
                            "stuck runs of a home", formatter_class=fmt)
    status.add_argument("--home", default=DEFAULT_HOME, help="the home `emerge curate` wrote to")
    return parser


def main(argv=None) -> int:
    from emerge_assets.curate import quiet_dagster_warnings

    quiet_dagster_warnings(argv)
    args = _parser().parse_args(argv)
    if args.command == "curate":
        from emerge_assets import curate

        forwarded = ["--input-root", args.input_root, "--emerge-home", args.home]
        for flag in ("topics", "config", "model"):
            if getattr(args, flag):
                forwarded += [f"--{flag}", getattr(args, flag)]
        forwarded += [f"--{f.replace('_', '-')}" for f in ("skip_training", "verbose") if getattr(args, f)]
        return curate.main(forwarded)
    if args.command == "ui":
        return _ui(args)
    return _status(Path(args.home))


def _ui(args) -> int:
    import shutil

    from emerge_assets.curate import use_dagster_home

    home = use_dagster_home(args.home)
    os.environ["EMERGE_HOME"] = str(Path(args.home).resolve())
    if args.input_root:
        os.environ["EMERGE_INPUT_ROOT"] = str(Path(args.input_root).resolve())
    dagster = shutil.which("dagster") or str(Path(sys.executable).with_name("dagster"))
    mlflow_db = Path(args.home).resolve() / "mlflow" / "mlflow.db"
    print(f"[emerge] Dagster instance {home}; MLflow: mlflow ui --backend-store-uri sqlite:///{mlflow_db}", flush=True)
    from emerge_assets.definitions import PROJECT_ROOT

    # the workspace file names the code location "emerge" (with -m the UI would show the module path)
    os.execv(dagster, [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-p", str(args.port)])
    return 0  # pragma: no cover - execv does not return


def _run_state(run) -> str:
    """Why an unfinished run is unfinished, as far as this host can tell."""
    from emerge_assets.stale_runs import PROCESS_TAG, local_worker_pid, process_alive

    if run.is_finished:
        return ""
    pid = local_worker_pid(run)
    if pid is None:
        return " (not started by `emerge curate` on this host; see the Dagster UI)"
    if process_alive(pid, run.tags.get(PROCESS_TAG)):
        return f" (running in pid {pid})"
    return (f" (its process, pid {pid}, is gone: the next `emerge curate` on this home fails it and frees its "
            "pool slots)")


def _status(emerge_home: Path) -> int:
    """What a user asks first: which sources, what ran last, where the outputs are, what is broken."""
    from emerge_assets.curate import dagster_home_for

    home = dagster_home_for(emerge_home)
    print(f"home:      {emerge_home}")
    print(f"instance:  {home}")
    if not home.is_dir() or not any(home.rglob("*.db")):
        print(f"no runs yet: `emerge curate INPUT_ROOT --home {emerge_home}` starts one")
        return 0
    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    from emerge_assets.partitions import document_source
    from emerge_assets.stale_runs import IN_PROGRESS

    instance = dg.DagsterInstance.get()
    sources = instance.get_dynamic_partitions(document_source.name)
    print(f"sources:   {len(sources)} ({', '.join(sources) or 'none registered'})")
    keys = sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string())
    for key in keys:
        event = instance.get_latest_materialization_event(key)
        if event is not None:
            when = datetime.fromtimestamp(event.timestamp).isoformat(timespec="seconds")
            print(f"  {key.to_user_string():<24} last materialized {when}")
    for label, folder, pattern in (("datasets", "datasets", "*.parquet"), ("models", "models", "*/modules.json")):
        found = sorted((emerge_home / folder).glob(pattern)) if (emerge_home / folder).is_dir() else []
        names = [str(p if folder == "datasets" else p.parent) for p in found]
        print(f"{label + ':':<10} {', '.join(names) if names else 'none'}")
    bad = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE, *IN_PROGRESS]), limit=20)
    for record in bad:
        run = record.dagster_run
        print(f"  run {run.run_id[:8]} {run.job_name:<22} {run.status.value}{_run_state(run)}")
    print(f"runs:      {len(bad)} failed or unfinished" if bad else "runs:      none failed or unfinished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
