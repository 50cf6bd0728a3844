"""`emerge curate` (and its alias `python -m emerge_assets.demo`): run the whole pipeline on a folder of
sources and print a summary. Without `--input-root` it curates the bundled sample corpus.

Uses the Dagster instance in $DAGSTER_HOME (SQLite), so every materialization shows up in
`dagster dev` afterwards. Each source is one partition of the per-source job; the model
loads once for the whole demo because all runs execute in this process.

Before the first run, runs of an earlier demo on this host whose process is gone (SIGKILL, out of
memory) are failed and their `gpu` slots freed; a run waiting for a slot says so every 20 s and
Ctrl+C stops it (`emerge_assets.stale_runs`).
"""

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path


def _log_to_stderr() -> None:
    """emerge_assets' own INFO/WARNING lines (slot waits, dead runs) on stderr; nothing else is configured."""
    logger = logging.getLogger("emerge_assets")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[emerge] %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def dagster_home_for(emerge_home: str | Path) -> Path:
    """One Dagster instance per Emerge home (so two corpora never share partitions or runs):
    `<home>/dagster_home`, or the project's `.dagster_home` for the default home (as `make ui`)."""
    return Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else _own_dagster_home(emerge_home)


def _own_dagster_home(emerge_home: str | Path) -> Path:
    from emerge_assets.definitions import EMERGE_HOME, PROJECT_ROOT

    if Path(emerge_home).resolve() == Path(EMERGE_HOME).resolve():
        return PROJECT_ROOT / ".dagster_home"
    return Path(emerge_home) / "dagster_home"


def use_dagster_home(emerge_home: str | Path) -> Path:
    """Point DAGSTER_HOME at `dagster_home_for(emerge_home)`, created with the project's dagster.yaml."""
    from emerge_assets.definitions import PROJECT_ROOT

    home = dagster_home_for(emerge_home)
    if Path(home).resolve() != _own_dagster_home(emerge_home).resolve():
        print(f"[emerge] Dagster instance from $DAGSTER_HOME ({home}), not the home's own; runs of other homes "
              "that share it show up beside this one's", file=sys.stderr, flush=True)
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")  # SQLite, gpu pool of 1
    return home


def no_sources_reason(root: Path) -> str:
    """Why there is nothing to read under `root`, and how sources are laid out."""
    layout = "put each source's files in its own sub-folder: ROOT/<source>/*.txt|md|jsonl|csv|parquet"
    if not root.exists():
        return f"input root {str(root)!r} does not exist"
    if not root.is_dir():
        return f"input root {str(root)!r} is a file, not a folder; {layout}"
    loose = [p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        return f"{str(root)!r} holds {len(loose)} file(s) but no source sub-folder; {layout}"
    return f"{str(root)!r} is empty; {layout}"


def quiet_dagster_warnings(argv=None) -> None:
    """Hide Dagster's beta/preview warnings (Emerge's own use of those APIs) unless --verbose."""
    import warnings

    import dagster as dg

    if "--verbose" not in (sys.argv[1:] if argv is None else argv):
        for category in (dg.BetaWarning, dg.PreviewWarning):
            warnings.filterwarnings("ignore", category=category)


def main(argv=None) -> int:
    """Ctrl+C (also while a run waits for a slot) ends the demo with 130; the run is marked CANCELED/FAILURE."""
    import dagster as dg

    quiet_dagster_warnings(argv)
    try:
        return _main(argv)
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        print("\n[emerge] interrupted", file=sys.stderr)
        return 130


class _Refusal(Exception):
    """Input the run cannot start with: one `error:` line and exit status 2, before any model work."""


def _parse_args(argv=None) -> argparse.Namespace:
    from emerge_assets.definitions import EMERGE_HOME, INPUT_ROOT

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--input-root", default=INPUT_ROOT, help="folder with one sub-folder per source")
    parser.add_argument("--emerge-home", default=EMERGE_HOME, help="where datasets, models and asset files go")
    parser.add_argument("--model", default=None, help="local model directory (default: packaged MiniLM)")
    parser.add_argument("--topics", default=None, help="topics file for the topic-guided path (the bundled "
                        "corpus uses sample_data/topics.yaml; other corpora get no topic dataset without it)")
    parser.add_argument("--config", default=None, help="run-config YAML (`ops: {asset: {config: {...}}}`), "
                        "checked whole before the first step and passed to every job it concerns")
    parser.add_argument("--skip-training", action="store_true",
                        help="stop after the datasets (no fine_tuned_model / MLflow run)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Dagster's DEBUG events and beta/preview warnings")
    parser.add_argument("--register-only", action="store_true",
                        help="only register each source folder as a document_source partition, then exit")
    return parser.parse_args(argv)


def _main(argv=None) -> int:
    args = _parse_args(argv)
    use_dagster_home(args.emerge_home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import dagster as dg

    from emerge_assets.definitions import ASSETS, CHECKS, JOBS, build_resources
    from emerge_assets.partitions import document_source
    from emerge_assets.stale_runs import fail_dead_runs

    _log_to_stderr()
    resources = build_resources(args.emerge_home, args.input_root, args.model,
                                **({"topics_file": args.topics} if args.topics else {}))
    try:
        sources, problems, with_topics, run_config = _preflight(args, resources)
    except _Refusal as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    new = [s for s in sources if not instance.has_dynamic_partition(document_source.name, s)]
    if new:
        instance.add_dynamic_partitions(document_source.name, new)
    if args.register_only:
        print(f"[emerge] document_source partitions: {', '.join(sources)} ({len(new)} new)")
        return 0
    fail_dead_runs(instance)  # a killed earlier demo must not keep the gpu slot (WARNING per run)
    t0 = time.perf_counter()
    defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS, resources=resources)
    meta = _run_jobs(defs, instance, sources, run_config, with_topics, not args.skip_training, args.verbose)
    print(f"\n[emerge] done in {time.perf_counter() - t0:.0f}s")
    _print_summary(meta, sources, problems, with_topics, args.emerge_home)
    return 0


def _preflight(args: argparse.Namespace, resources: dict) -> tuple[list[str], dict[str, str], bool, dict]:
    """Everything the run needs that can be checked before the first step: sources that have a
    usable document (the others are skipped with a WARNING each), the topics file, the model
    path, the run config. Returns (sources, skipped source -> why, whether topics are scored,
    run config); raises `_Refusal` where the run cannot start."""
    from emerge.config import EncoderConfig
    from emerge.errors import ConfigError
    from emerge_assets.definitions import ASSETS, PROJECT_ROOT
    from emerge_assets.run_file import load_run_config

    storage = resources["storage"]
    sources = storage.list_sources()
    if not sources:
        raise _Refusal(no_sources_reason(Path(args.input_root)))
    bundled = Path(args.input_root).resolve() == (PROJECT_ROOT / "sample_data" / "corpus").resolve()
    # never the sample's topics on someone else's corpus
    with_topics = args.topics is not None or "EMERGE_TOPICS_FILE" in os.environ or bundled
    try:  # a bad topics file fails now, not after embedding and clustering
        if with_topics:
            resources["topics"].load()
    except ConfigError as exc:
        raise _Refusal(f"topics file {resources['topics'].topics_file}: {exc}") from exc
    try:  # a mistyped --model fails now, with one line, not as a traceback in span_embeddings
        EncoderConfig(model_name_or_path=args.model)
    except ConfigError as exc:
        raise _Refusal(f"--model: {exc}") from exc
    try:
        run_config = load_run_config(args.config, ASSETS) if args.config else {"ops": {}}
    except ConfigError as exc:
        raise _Refusal(f"run config: {exc}") from exc
    problems: dict[str, str] = {}
    if not args.register_only:  # every source is read before any model work, as raw_texts will read it
        from emerge.ingest import preflight_sources
        from emerge_assets.run_config import RawTextsConfig

        ingest = RawTextsConfig(**run_config["ops"].get("raw_texts", {}).get("config", {})).to_engine()
        sources, problems = preflight_sources({s: storage.source_dir(s) for s in sources}, ingest)
        for problem in problems.values():
            print(f"[emerge] WARNING skipping {problem}", file=sys.stderr, flush=True)
        if not sources:
            raise _Refusal(f"none of the source folders under {args.input_root} has a usable document")
    return sources, problems, with_topics, run_config


def _run_jobs(defs, instance, sources: list[str], run_config: dict, with_topics: bool, train: bool,
              verbose: bool) -> dict[str, dict]:
    """The pipeline's jobs in order (per-source jobs once per source); returns each materialized
    asset's metadata, for the summary."""
    from emerge_assets.run_file import for_job
    from emerge_assets.stale_runs import execute_watched

    meta: dict[str, dict] = {}

    def run(job: str, partition: str | None = None) -> None:
        job_def = defs.resolve_job_def(job)
        console = {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}}  # no event stream
        result = execute_watched(job_def, instance, partition_key=partition,
                                 run_config={**for_job(run_config, job_def), "loggers": console})
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}

    for source in sources:
        print(f"[emerge] reading, spanning and embedding source {source!r} ...", flush=True)
        run("embed_sources", source)
    print("[emerge] fitting UMAP + HDBSCAN on a sample of all sources ...", flush=True)
    run("fit_clusters")
    for source in sources:
        print(f"[emerge] labelling spans of {source!r} with the saved clustering ...", flush=True)
        run("label_sources", source)
    print("[emerge] selecting and exporting the dataset ...", flush=True)
    run("export_dataset")
    if with_topics:
        for source in sources:
            print(f"[emerge] scoring spans of {source!r} against the topics file ...", flush=True)
            run("score_topics", source)
        print("[emerge] exporting the topic-labelled dataset ...", flush=True)
        run("export_topic_dataset")
    if train:
        print("[emerge] fine-tuning the model on the curated dataset (base vs fine-tuned -> MLflow) ...", flush=True)
        run("train_model")
    return meta


def _print_summary(meta: dict[str, dict], sources: list[str], problems: dict[str, str], with_topics: bool,
                   emerge_home: str) -> None:
    ds, cl = meta["curated_dataset"], meta["hdbscan_clusters"]
    print(f"  sources:   {len(sources)} ({', '.join(sources)})")
    if problems:
        print(f"  skipped:   {len(problems)} source(s) without a usable document: {', '.join(sorted(problems))}")
    print(f"  inputs:    {ds['inputs']} ({ds['documents_in_dataset']} documents in the dataset)")
    print(f"  spans:     {ds['spans_considered']} labelled (those good enough to select), "
          f"{ds['dagster/row_count']} selected")
    print(f"  clusters:  {cl['clusters']} "
          f"(noise fraction of the labelled spans {ds['unlabelled_fraction_labelled_spans']:.2f})")
    titles = list((cl.get("titles") or {}).values())
    if titles:
        more = f" | ... {len(titles) - 8} more" if len(titles) > 8 else ""
        print(f"  titles:    {' | '.join(titles[:8])}{more}")
    print(f"  dataset:   {ds['parquet_path']}")
    print(f"             {ds['csv_path']}")
    print(f"  card:      {ds['card_path']}")
    if with_topics:
        tds = meta["curated_topic_dataset"]
        print(f"  topics:    {tds['dagster/row_count']} spans from {tds['documents_in_dataset']} documents, "
              f"{tds['labels']} topics used "
              f"(unlabelled share of the scored spans {tds['unlabelled_fraction_labelled_spans']:.2f})")
        print(f"  dataset:   {tds['parquet_path']}")
    else:
        print("  topics:    none given, so no topic dataset (--topics FILE scores spans against your topics)")
    if "fine_tuned_model" in meta:
        fm = meta["fine_tuned_model"]
        print(f"  model:     {fm['model_path']} ({fm['train_pairs']} training rows, {fm['train_steps']} steps on "
              f"{fm['device']}; current model: {fm['current_model']})")
        print(f"  gate:      {fm['promotion']}")
        print(f"  MLflow:    {fm['mlflow_run']}")
        print(f"             mlflow ui --backend-store-uri {fm['mlflow_tracking_uri']}")
    print(f"  Dagster UI: emerge ui --home {emerge_home}   (instance {os.environ['DAGSTER_HOME']})")

if __name__ == "__main__":
    sys.exit(main())
