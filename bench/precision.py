"""How close a bfloat16 forward pass keeps span vectors to float32, and how much faster it is.

    python bench/precision.py --docs ../shared/data/bbc_news/bbc_news.jsonl --limit 100 --out result.json

Embeds the same late-chunked spans (16..64 tokens, stride 8) of the same documents twice, with
the packaged model in float32 and in bfloat16 (`EncoderConfig.dtype`), and reports the cosine of
every bf16 span vector to its float32 vector (mean, 1st percentile, minimum) and both wall times
measured in this one run (the ratio is what to compare across machines; record the CPU flags:
bf16 is only fast where the CPU computes it natively, AVX512-BF16 or AMX). Each precision is run
`--repeats` times and the fastest wall time kept. The last stdout line is the JSON.
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
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default=None, help="model directory (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import numpy as np

    from emerge.config import EncoderConfig, SpanConfig
    from emerge.embedding import embed_spans
    from emerge.encoder import load_encoder, native_bf16_cpu
    from emerge.ingest import documents_from_texts
    from emerge.spans import build_spans

    rows = jsonl_rows(args.docs, args.limit)
    docs = documents_from_texts([r[args.text_field] for r in rows], source="bench").documents
    vectors, walls, spans = {}, {}, None
    for dtype in ("float32", "bfloat16"):
        encoder = load_encoder(EncoderConfig(model_name_or_path=args.model, device="cpu", dtype=dtype))
        if encoder.compute_dtype != dtype:
            raise SystemExit(f"asked for {dtype}, the encoder runs {encoder.compute_dtype}")
        if spans is None:
            spans, _ = build_spans(docs, encoder.tokenizer, SpanConfig(16, 64, 8))
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            vectors[dtype] = embed_spans(docs, spans, encoder, dtype=np.float32)
            times.append(time.perf_counter() - t0)
        walls[dtype] = min(times)
    cos = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
    result = {
        "config": {"docs": args.docs, "limit": args.limit, "span": [16, 64, 8], "repeats": args.repeats,
                   "model": args.model or "packaged all-MiniLM-L6-v2"},
        "machine": machine(), "native_bf16_cpu": native_bf16_cpu(), "documents": docs.height, "spans": spans.height,
        "cosine_bf16_to_float32": {"mean": round(float(cos.mean()), 5), "p1": round(float(np.percentile(cos, 1)), 5),
                                   "min": round(float(cos.min()), 5)},
        "wall_s": {k: round(v, 4) for k, v in walls.items()},
        "speedup_bf16": round(walls["float32"] / walls["bfloat16"], 3),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
