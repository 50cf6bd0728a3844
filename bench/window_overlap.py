"""How much a late-chunked span vector depends on where the document's windows fall.

    python bench/window_overlap.py --docs ../shared/data/bbc_news/bbc_news.jsonl --limit 200 --out result.json

Documents longer than one window (254 tokens for MiniLM) are embedded in overlapping windows;
each token's embedding comes from the window in which it sits furthest from an edge. This embeds
the same spans (16..64 tokens, stride 8) with several `window_overlap` values, float32, and
reports each run's wall time and the cosine of every span vector to the same span's vector under
the largest overlap (the most context around every token): mean, 1st percentile and minimum,
over all spans and over spans of multi-window documents only. The last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, jsonl_rows, machine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", required=True)
    p.add_argument("--text-field", default="text")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--overlaps", type=int, nargs="+", default=[127, 64, 32, 0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import numpy as np

    from emerge.config import EncoderConfig, SpanConfig
    from emerge.embedding import embed_spans
    from emerge.encoder import load_encoder
    from emerge.ingest import documents_from_texts
    from emerge.spans import build_spans

    rows = jsonl_rows(args.docs, args.limit)
    docs = documents_from_texts([r[args.text_field] for r in rows], source="bench").documents
    overlaps = sorted(set(args.overlaps), reverse=True)
    runs, reference, long_rows = [], None, None
    for overlap in overlaps:
        encoder = load_encoder(EncoderConfig(batch_size=32, window_overlap=overlap, dtype="float32"))
        spans, _ = build_spans(docs, encoder.tokenizer, SpanConfig(16, 64, 8))
        if long_rows is None:
            lengths = dict(zip(docs["doc_id"].to_list(),
                               (len(encoder.tokenizer(t, add_special_tokens=False)["input_ids"])
                                for t in docs["text"].to_list())))
            width = encoder.max_seq_length - 2
            long_rows = np.array([lengths[d] > width for d in spans["doc_id"].to_list()])
        t0 = time.perf_counter()
        vectors = embed_spans(docs, spans, encoder, dtype=np.float32)
        wall = time.perf_counter() - t0
        reference = vectors if reference is None else reference
        cos = (vectors * reference).sum(axis=1)

        def summary(c):
            return {"mean": round(float(c.mean()), 4), "p1": round(float(np.percentile(c, 1)), 4),
                    "min": round(float(c.min()), 4)} if len(c) else {}

        runs.append({"window_overlap": overlap, "effective_overlap": min(overlap, (encoder.max_seq_length - 2) // 2),
                     "wall_s": round(wall, 2), "cosine_to_reference": summary(cos),
                     "cosine_to_reference_multi_window_docs": summary(cos[long_rows])})
    result = {"config": {"docs": args.docs, "limit": args.limit, "span": [16, 64, 8], "reference_overlap": overlaps[0],
                         "dtype": "float32"},
              "machine": machine(), "documents": docs.height, "spans": int(len(long_rows)),
              "spans_in_multi_window_docs": int(long_rows.sum()), "runs": runs}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
