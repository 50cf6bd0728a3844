"""What labelling only selectable spans saves in the Python API, and what it changes (it must not).

    python bench/curator_labelling.py --docs ../shared/data/bbc_news/bbc_news.jsonl --limit 500 --out r.json

Runs `Curator.process_batch` + `prepare_final_dataset` twice on the same texts, in one process:
with the default (spans below `quality_threshold` get no label) and with `label_below_quality`
(every span labelled, the behaviour before). Reports the analyzer's wall time and the spans it
labelled in each, the whole batch's time, and whether the two final datasets are identical. The
clusters are fitted on every span both times, so the fit is the same work in each; the embedding
pass too. The last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_argument, emit, jsonl_rows, machine, warm_up_numba  # noqa: E402


def run(texts: list[str], model: str | None, label_below_quality: bool, seed: int) -> tuple[dict, object]:
    from emerge import ClusteringConfig, Curator, CuratorConfig, LocalClusterAnalyzer, load_encoder
    from emerge.config import EncoderConfig

    analyzer = LocalClusterAnalyzer(clustering=ClusteringConfig(random_state=seed))
    timed = {"analyze_s": 0.0}
    analyze = analyzer.analyze

    def timed_analyze(*args, **kwargs):
        t = time.perf_counter()
        out = analyze(*args, **kwargs)
        timed["analyze_s"] += time.perf_counter() - t
        return out

    analyzer.analyze = timed_analyze
    encoder = load_encoder(EncoderConfig(model_name_or_path=model) if model else None)
    curator = Curator(encoder, None, CuratorConfig(label_below_quality=label_below_quality), analyzer, progress=False)
    t = time.perf_counter()
    labelled = curator.process_batch(texts)
    batch_s = time.perf_counter() - t
    t = time.perf_counter()
    final = curator.prepare_final_dataset(labelled)
    return {"analyze_s": round(timed["analyze_s"], 2), "process_batch_s": round(batch_s, 2),
            "prepare_final_dataset_s": round(time.perf_counter() - t, 2), "report": curator.last_report,
            "dataset_rows": final.height}, final


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", required=True, help="JSONL with a text field")
    p.add_argument("--text-field", default="text")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=None)
    add_model_argument(p)
    args = p.parse_args(argv)
    texts = [r[args.text_field] for r in jsonl_rows(args.docs, args.limit)]
    warm_up_numba(0)
    t0 = time.perf_counter()
    every, every_final = run(texts, args.model, True, args.seed)
    selectable, final = run(texts, args.model, False, args.seed)
    key = ["doc_id", "start_char", "end_char"]
    same = every_final.sort(key).equals(final.sort(key))
    return emit({"benchmark": "curator_labelling", "docs": args.docs, "texts": len(texts),
                 "label_every_span": every, "label_selectable_spans": selectable,
                 "analyze_speedup": round(every["analyze_s"] / max(selectable["analyze_s"], 1e-9), 2),
                 "process_batch_speedup": round(every["process_batch_s"] / max(selectable["process_batch_s"], 1e-9), 2),
                 "datasets_identical": bool(same), "wall_s": round(time.perf_counter() - t0, 1),
                 "machine": machine()}, args.out)


if __name__ == "__main__":
    sys.exit(main())
