"""How much memory a distillation training step takes, with and without gradient caching.

    python bench/training_memory.py --docs corpus.jsonl --steps 4 --out result.json

A step embeds batch_size x (query + positive + negatives) texts at up to max_seq_length tokens;
without caching all their activations live until the backward pass, so memory grows with the
product (32 x 9 x 256 was killed at ~22 GB on a 23 GiB machine). `max_tokens_per_forward` embeds
a larger step in mini-batches with GradCache. Each (window, negatives, budget) runs `train()` on
the same teacher-scored rows in its own process, so its peak RSS (`VmHWM`) is its own. The last
stdout line is the JSON: `runs`, each with `max_seq_length`, `negatives_per_query`,
`max_tokens_per_forward`, `dropout`, `peak_rss_gib`, `train_s`, `steps`, `gradient_cached_steps`.
`--dropouts 0 model` also times a step without dropout against the model's own rates.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_argument, emit, jsonl_rows, machine  # noqa: E402
from asset_scale import peak_rss_gib  # noqa: E402


def one_run(docs: str, limit: int, window: int, negatives: int, budget: int | None, steps: int, batch: int,
            model: str | None, dropout: float | None = None) -> dict:
    """In this process: teacher-scored rows from the documents, then `steps` training steps."""
    import tempfile

    import polars as pl

    from emerge.config import TrainingConfig
    from emerge.encoder import resolve_model_path
    from emerge.training.finetune import _train_rows
    from emerge.training.trainer import train

    records = jsonl_rows(docs, limit)
    texts = {str(i): r["text"] for i, r in enumerate(records)}
    rows = pl.DataFrame({"doc_id": list(texts), "text_span": [t[:300] for t in texts.values()],
                         "cluster_id": [0] * len(texts)})
    config = TrainingConfig(trained_side="both", max_seq_length=window, negatives_per_query=negatives,
                            max_tokens_per_forward=budget, batch_size=batch, max_train_queries=steps * batch,
                            min_pairs=1, seed=0, dropout=dropout)
    base = resolve_model_path(model)
    triplets = _train_rows(rows, "cluster_id", config, texts, base, "cpu", lambda m: None)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = train(triplets, base, Path(tmp) / "model", config)
        seconds = time.perf_counter() - t
    return {"max_seq_length": window, "negatives_per_query": negatives, "max_tokens_per_forward": budget,
            "dropout": dropout, "step_tokens_at_most": batch * (2 + negatives) * window,
            "peak_rss_gib": round(peak_rss_gib(), 3),
            "train_s": round(seconds, 1), "steps": result.steps, "gradient_cached_steps": result.gradient_cached_steps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", required=True, help="JSONL with a text field (long documents fill the window)")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--configs", nargs="+", default=["128:3", "256:3", "256:7"], help="WINDOW:NEGATIVES")
    p.add_argument("--budgets", nargs="+", default=["none", "4096"], help="max_tokens_per_forward values (none: one pass)")
    p.add_argument("--dropouts", nargs="+", default=["model"],
                   help="training dropout rates to time (model: the model's own rates)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out")
    p.add_argument("--child", help=argparse.SUPPRESS)
    add_model_argument(p)
    args = p.parse_args()
    if args.child:
        window, negatives, budget, dropout = json.loads(args.child)
        print(json.dumps(one_run(args.docs, args.limit, window, negatives, budget, args.steps, args.batch_size,
                                 args.model, dropout)))
        return 0
    runs = []
    for spec in args.configs:
        window, negatives = (int(x) for x in spec.split(":"))
        for b, d in itertools.product(args.budgets, args.dropouts):
            budget = None if b == "none" else int(b)
            dropout = None if d == "model" else float(d)
            child = [sys.executable, __file__, "--docs", args.docs, "--limit", str(args.limit), "--steps",
                     str(args.steps), "--batch-size", str(args.batch_size),
                     "--child", json.dumps([window, negatives, budget, dropout]),
                     *(["--model", args.model] if args.model else [])]
            proc = subprocess.run(child, capture_output=True, text=True)
            if proc.returncode != 0:  # e.g. killed for memory: that is the measurement
                runs.append({"max_seq_length": window, "negatives_per_query": negatives,
                             "max_tokens_per_forward": budget, "dropout": dropout, "failed": proc.returncode,
                             "stderr_tail": proc.stderr[-300:]})
            else:
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return emit({"runs": runs, "docs": args.docs, "limit": args.limit, "batch_size": args.batch_size,
                 "steps": args.steps, "machine": machine()}, args.out)


if __name__ == "__main__":
    sys.exit(main())
