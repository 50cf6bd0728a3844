"""Does scoring only the spans selection can keep (`topic_scores`' `label_min_quality`) save topic
scoring time, and does it change any kept span's score?

    python bench/topic_candidates.py --docs ../shared/data/bbc_news/bbc_news.jsonl --limit 300 \
        --topics bench/topics/news_sections.yaml --out r.json
    python bench/topic_candidates.py --docs ../shared/data/bbc_news/bbc_news.jsonl --limit 300 \
        --topics-csv ../shared/data/banking77/train.csv --k 5 --out r.json

One embedding pass (late chunking, token embeddings kept); then, timed in one process, the
late-interaction scorer on every span, the quality pass that picks candidates, and the scorer on
the candidates only. `--topics-csv` makes every category of a labelled CSV a topic with `k`
examples (a heavy topic set: scoring cost grows with topics x parts). Last stdout line = JSON.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_argument, emit, jsonl_rows, machine  # noqa: E402


def csv_topics(path: str, label_column: str, k: int, seed: int):
    """Every category of `path` as a topic: its name, a generic description, `k` drawn examples."""
    from topic_labelling import describe, read_rows

    from emerge.topics.topic import Topic

    by_label: dict[str, list[str]] = {}
    for text, label in read_rows(path, label_column):
        by_label.setdefault(label, []).append(text)
    rng = random.Random(seed)
    return [Topic(id=label, name=label.replace("_", " "), description=describe(label),
                  examples=rng.sample(texts, min(k, len(texts)))) for label, texts in sorted(by_label.items())]


def best_of(repeats: int, fn):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", required=True)
    p.add_argument("--text-field", default="text")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--topics", help="topics file (YAML/JSON)")
    p.add_argument("--topics-csv", help="labelled CSV: every category a topic with --k examples")
    p.add_argument("--label-column", default="category")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-quality", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    add_model_argument(p)
    args = p.parse_args(argv)
    if bool(args.topics) == bool(args.topics_csv):
        p.error("give exactly one of --topics and --topics-csv")
    import polars as pl

    from emerge.config import CuratorConfig, EncoderConfig
    from emerge.embedding import TokenStore, embed_spans
    from emerge.encoder import load_encoder
    from emerge.ingest import documents_from_texts
    from emerge.quality import selectable
    from emerge.spans import build_spans
    from emerge.topics.late_interaction import LateInteractionCrossEncoder
    from emerge.topics.topic import load_topics

    topics = load_topics(args.topics) if args.topics else csv_topics(args.topics_csv, args.label_column, args.k,
                                                                       args.seed)
    texts = [r[args.text_field] for r in jsonl_rows(args.docs, args.limit)]
    config = CuratorConfig()
    encoder = load_encoder(EncoderConfig(model_name_or_path=args.model, device="cpu"))
    docs = documents_from_texts(texts, source="bench", config=config.ingest).documents
    spans, _ = build_spans(docs, encoder.tokenizer, config.span_config())
    store = TokenStore()
    t0 = time.perf_counter()
    vectors = embed_spans(docs, spans, encoder, progress=False, on_document=store.add)
    embed_s = time.perf_counter() - t0
    scorer = LateInteractionCrossEncoder(topics=topics).prepare(encoder)
    by_doc = dict(zip(docs["doc_id"], docs["text"]))

    all_s, every = best_of(args.repeats, lambda: scorer.analyze(spans, vectors, token_store=store))
    quality_s, keep = best_of(args.repeats, lambda: selectable(spans, by_doc, args.min_quality))
    kept_s, kept = best_of(args.repeats, lambda: scorer.analyze(spans.filter(pl.Series(keep)), vectors[keep],
                                                               token_store=store))
    both = kept.join(every, on="span_idx", suffix="_all")
    diff = (both["relevance"] - both["relevance_all"]).abs()
    result = {
        "benchmark": "topic_candidates", "docs": docs.height, "topics": len(topics),
        "topic_parts": len(scorer.index.part_kind), "spans": spans.height,
        "candidates": int(keep.sum()), "embed_s": round(embed_s, 3), "score_all_s": round(all_s, 3),
        "quality_s": round(quality_s, 3), "score_candidates_s": round(kept_s, 3),
        "saved_fraction_of_scoring": round(1 - (quality_s + kept_s) / all_s, 3),
        "scoring_to_embedding": round(all_s / embed_s, 3),
        "same_scores": bool(both.height == kept.height and float(diff.max() or 0.0) == 0.0
                            and (both["best_topic_id"] == both["best_topic_id_all"]).all()),
        "max_relevance_difference": float(diff.max() or 0.0), "repeats": args.repeats, "machine": machine(),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
