"""How the Dagster asset graph scales: raw_texts -> curated_dataset at several corpus sizes.

Unlike `bench/scale.py` (the engine in one process), this materializes the real assets against
a temporary SQLite instance, one step per process as Dagster's multiprocess executor runs them:
the per-source assets once per source partition, the global assets once. Each step's peak RSS
is its own process' high-water mark (`VmHWM`, read by the step's process at its end), so a global
step that held every source's frames would show here. (Not `ru_maxrss`: on Linux a child keeps
the RSS its parent had when it forked, across exec, so every step would read at least this
driver's own size.)

    .venv/bin/python bench/asset_scale.py --docs ../shared/data/bbc_news/bbc_news.jsonl \
        --docs ../shared/data/nfcorpus/corpus.jsonl --sizes 2000 4000 8000 --out result.json

Documents are taken from the `--docs` files in order; past their end they are repeated as new
sources (the copy number is part of the source name, so every document id is distinct, but the
texts are the same: the cross-document near-duplicate step sees the copies). The last stdout
line is the JSON: `runs` (per size: docs, wall_s, peak_rss_gib, per_stage), the fitted
`time_exponent` and `rss_exponent` (RSS above the model-loaded baseline), tokens/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_argument, emit, jsonl_rows, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PER_SOURCE = ("raw_texts", "spans", "span_embeddings")
GLOBAL_FIT = ("umap_projection", "hdbscan_clusters")
LABEL = ("span_clusters",)
EXPORT = ("curated_dataset",)


def load_texts(paths: list[str], text_field: str) -> list[str]:
    """Every non-empty document text of the JSONL files (a `title` field, if any, opens the text)."""
    texts = []
    for path in paths:
        for row in jsonl_rows(path):
            text = (row.get(text_field) or "").strip()
            title = (row.get("title") or "").strip()
            text = f"{title}\n{text}" if title and not text.startswith(title) else text
            if text:
                texts.append(text)
    return texts


def write_corpus(texts: list[str], size: int, per_source: int, root: Path) -> list[str]:
    """`size` documents as JSONL sources of `per_source` documents; past the end of `texts`
    the documents repeat in sources named after their copy number."""
    sources: dict[str, list[str]] = {}
    for i in range(size):
        copy, j = divmod(i, len(texts))
        name = f"copy{copy}-part{j // per_source:04d}"
        sources.setdefault(name, []).append(json.dumps({"id": f"{copy}-{j}", "text": texts[j]}))
    for name, lines in sources.items():
        (root / name).mkdir(parents=True)
        (root / name / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sorted(sources)


def run_step(stage: str, home: Path, corpus: Path, model: str | None, partition: str | None,
             config: dict | None = None) -> dict:
    """One asset step in a child process: its wall time, its own peak RSS and its metadata."""
    cmd = [sys.executable, __file__, "--step", stage, "--home", str(home), "--corpus", str(corpus)]
    cmd += (["--model", model] if model else []) + (["--partition", partition] if partition else [])
    cmd += ["--step-config", json.dumps(config)] if config else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"HF_HUB_OFFLINE": "1"})
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"step {stage} ({partition}) failed:\n{err[-4000:]}")
    line = out.strip().splitlines()[-1] if out.strip() else "{}"
    result = json.loads(line)
    result["wall_s"] = round(wall, 2)
    return result


def _child(stage: str, home: str, corpus: str, model: str | None, partition: str | None,
           config: dict | None = None) -> None:
    """The step itself (in the child process): materialize one asset (partition) of the real graph."""
    from emerge_assets.curate import use_dagster_home

    use_dagster_home(home)
    import dagster as dg

    from emerge_assets.definitions import ASSETS, build_resources

    result = dg.materialize(ASSETS, selection=[stage], partition_key=partition, instance=dg.DagsterInstance.get(),
                            resources=build_resources(home, corpus, model, device="cpu"),
                            run_config={"ops": {stage: {"config": config}}} if config else None)
    meta = {}
    for event in result.get_asset_materialization_events():
        meta = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()
                if isinstance(v.value, (int, float, str)) and not isinstance(v.value, bool) and len(str(v.value)) < 200}
    print(json.dumps({"peak_rss_gib": round(peak_rss_gib(), 3), "metadata": meta}))


def peak_rss_gib() -> float:
    """This process' own peak RSS: `VmHWM` (reset by exec), else `ru_maxrss` where there is no /proc
    (it may include what the parent held when it forked this process)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB -> GiB


def measure_size(texts: list[str], size: int, per_source: int, model: str | None, tokens_of,
                 workdir: str | None = None, compare_full_labelling: bool = False, topics: bool = False) -> dict:
    if workdir:  # kept for inspection or for re-running single steps
        Path(workdir, str(size)).mkdir(parents=True)
    with (contextlib.nullcontext(str(Path(workdir, str(size)))) if workdir
          else tempfile.TemporaryDirectory(prefix=f"asset_scale_{size}_")) as tmp:
        corpus, home = Path(tmp) / "corpus", Path(tmp) / "home"
        sources = write_corpus(texts, size, per_source, corpus)
        from emerge_assets.curate import use_dagster_home

        os.environ.pop("DAGSTER_HOME", None)  # each size its own instance (the children inherit the variable)
        use_dagster_home(home)
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("document_source", sources)
        per_stage: dict[str, dict] = {}

        def stage(name: str, partitions: list[str | None], config: dict | None = None,
                  per_stage: dict = per_stage) -> None:
            steps = [run_step(name, home, corpus, model, p, config) for p in partitions]
            per_stage[name] = {"steps": len(steps), "wall_s": round(sum(s["wall_s"] for s in steps), 2),
                               "peak_rss_gib": max(s["peak_rss_gib"] for s in steps),
                               "metadata": steps[-1]["metadata"] if len(steps) == 1 else {}}
            print(f"[asset_scale] {size} docs: {name} {per_stage[name]['wall_s']:.0f}s over {len(steps)} step(s), "
                  f"peak RSS {per_stage[name]['peak_rss_gib']:.2f} GiB", file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        for name in PER_SOURCE:
            stage(name, sources)
        for name in GLOBAL_FIT:
            stage(name, [None])
        for name in LABEL:
            stage(name, sources)
        for name in EXPORT:
            stage(name, [None])
        wall = time.perf_counter() - t0
        full = full_labelling(stage, sources, per_stage) if compare_full_labelling else None
        topic = topic_path(stage, sources, compare_full_labelling) if topics else None
        tokens = tokens_of(size)
        own_instance = Path(os.environ["DAGSTER_HOME"]).resolve().is_relative_to(Path(tmp).resolve())
        return {"docs": size, "sources": len(sources), "repeated_copies": (size - 1) // len(texts),
                "own_instance": own_instance,
                "tokens": tokens, "wall_s": round(wall, 1),
                "peak_rss_gib": max(s["peak_rss_gib"] for s in per_stage.values()),
                "tokens_per_s": round(tokens / wall, 1),
                "embedding_tokens_per_s": round(tokens / per_stage["span_embeddings"]["wall_s"], 1),
                "dataset_rows": per_stage["curated_dataset"]["metadata"].get("dagster/row_count"),
                "per_stage": per_stage} | ({"full_labelling": full} if full else {}) | (
                    {"topic_path": topic} if topic else {})


def full_labelling(stage, sources: list[str], per_stage: dict, labels: str = "span_clusters",
                   dataset: str = "curated_dataset") -> dict:
    """Label every span (`label_min_quality` null) on the same home and export again: what
    labelling only the spans selection can keep saves, and whether any dataset row differs."""
    import polars as pl

    path = per_stage[dataset]["metadata"]["parquet_path"]
    candidates_only = pl.read_parquet(path)
    again: dict[str, dict] = {}
    stage(labels, sources, {"label_min_quality": None}, again)
    stage(dataset, [None], None, again)
    every_span = pl.read_parquet(path)
    return {f"{labels}_wall_s": again[labels]["wall_s"], f"{labels}_peak_rss_gib": again[labels]["peak_rss_gib"],
            f"{dataset}_wall_s": again[dataset]["wall_s"],
            "spans_considered": again[dataset]["metadata"].get("spans_considered"),
            "same_dataset": candidates_only.equals(every_span), "dataset_rows": every_span.height}


def topic_path(stage, sources: list[str], compare_full_labelling: bool) -> dict:
    """The topic-guided path on the same home (topic_scores per source, then curated_topic_dataset);
    with the comparison, score every span again and export again, as for the clusters."""
    steps: dict[str, dict] = {}
    stage("topic_scores", sources, None, steps)
    stage("curated_topic_dataset", [None], None, steps)
    out = {"per_stage": steps, "wall_s": round(sum(s["wall_s"] for s in steps.values()), 2),
           "dataset_rows": steps["curated_topic_dataset"]["metadata"].get("dagster/row_count")}
    if compare_full_labelling:
        out["full_labelling"] = full_labelling(stage, sources, steps, "topic_scores", "curated_topic_dataset")
    return out


def fitted_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Slope of log y on log x (None with fewer than two sizes or a non-positive value)."""
    import numpy as np

    if len(xs) < 2 or min(ys) <= 0:
        return None
    return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3)


def model_baseline_gib(model: str | None) -> float:
    """Peak RSS of a process that only imports the graph and loads the model: what every step pays."""
    import inspect

    code = (inspect.getsource(peak_rss_gib) + "\nfrom emerge_resources import EmbeddingModelResource\n"
            f"EmbeddingModelResource(model_name_or_path={model!r}, device='cpu').get_encoder()\n"
            "print(peak_rss_gib())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"HF_HUB_OFFLINE": "1"}, cwd=ROOT)
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", action="append", help="JSONL file(s) with a text field (repeatable)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 4000, 8000])
    p.add_argument("--docs-per-source", type=int, default=1000)
    p.add_argument("--out", default=None)
    p.add_argument("--workdir", default=None, help="keep each size's corpus, home and instance under this folder "
                   "(default: temporary, deleted)")
    add_model_argument(p)
    p.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one asset step in this process
    p.add_argument("--home", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--partition", help=argparse.SUPPRESS)
    p.add_argument("--step-config", help=argparse.SUPPRESS)
    p.add_argument("--compare-full-labelling", action="store_true",
                   help="after each size, label every span (label_min_quality null) and export again on the same "
                        "home: the time labelling only selectable spans saves, and whether the dataset is the same")
    p.add_argument("--topics", default=None,
                   help="a topics file (YAML): also run the topic-guided path (topic_scores, curated_topic_dataset) "
                        "after the discovery path, on the same home; with --compare-full-labelling, twice")
    args = p.parse_args(argv)
    if args.topics:  # the step processes read it through build_resources' default
        os.environ["EMERGE_TOPICS_FILE"] = str(Path(args.topics).resolve())
    if args.step:
        _child(args.step, args.home, args.corpus, args.model, args.partition,
               json.loads(args.step_config) if args.step_config else None)
        return 0
    if not args.docs:
        p.error("--docs is required")
    texts = load_texts(args.docs, args.text_field)
    from emerge.encoder import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]]

    def tokens_of(size: int) -> int:
        full, rest = divmod(size, len(texts))
        return full * sum(lengths) + sum(lengths[:rest])

    started = time.perf_counter()
    baseline = model_baseline_gib(args.model)
    runs = [measure_size(texts, size, args.docs_per_source, args.model, tokens_of, args.workdir,
                         args.compare_full_labelling, bool(args.topics)) for size in sorted(args.sizes)]
    sizes = [r["docs"] for r in runs]
    result = {
        "benchmark": "asset_scale", "docs_files": args.docs, "unique_documents": len(texts),
        "docs_per_source": args.docs_per_source, "model_baseline_rss_gib": baseline, "runs": runs,
        "time_exponent": fitted_exponent(sizes, [r["wall_s"] for r in runs]),
        "rss_exponent": fitted_exponent(sizes, [max(r["peak_rss_gib"] - baseline, 1e-3) for r in runs]),
        "wall_s": round(time.perf_counter() - started, 1), "machine": machine(),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
