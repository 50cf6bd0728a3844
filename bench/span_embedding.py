"""Late chunking vs naive per-span encoding, and distance to the bare forward pass.

    python bench/span_embedding.py --docs ../shared/data/bbc_news/bbc_news.jsonl --limit 200 \
        --min-len 8 --max-len 64 --stride 2 --out result.json

Same documents, same dense span set, same packaged all-MiniLM-L6-v2, one run:
* emerge: Emerge's whole embedding stage (tokenise, one forward pass per document window, pool
  every span from prefix sums, write the Arrow/Parquet frame);
* naive: `SentenceTransformer.encode` on each span's text, timed on a seeded sample of
  `--naive-sample` spans (a rate, so a sample measures it; encoding 1M spans naively would
  take hours);
* forward: the bare transformer forward pass over the same document windows (no tokenising,
  no pooling, no writing): the physical floor of the stage.
All three run at the same precision (`--dtype`, default `auto` = Emerge's default here).
Reports spans/s, `speedup` = emerge / naive, `overhead_vs_forward` = emerge wall / forward wall
(median of `--repeats` alternating pairs; the wall times are medians too).
The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
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
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--naive-sample", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="alternating forward/Emerge timings; medians reported")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="forward-pass precision of Emerge, the bare forward pass and the naive encode")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from emerge.config import EncoderConfig, SpanConfig
    from emerge.embedding import embed_spans, embeddings_frame, write_parquet
    from emerge.encoder import load_encoder, packaged_model_path
    from emerge.ingest import documents_from_texts
    from emerge.spans import build_spans
    from emerge.tokenize import tokenize_batch

    rows = jsonl_rows(args.docs, args.limit)
    docs = documents_from_texts([r[args.text_field] for r in rows], source="bench").documents
    encoder = load_encoder(EncoderConfig(device="auto", batch_size=args.batch_size, dtype=args.dtype))
    spans, _ = build_spans(docs, encoder.tokenizer, SpanConfig(args.min_len, args.max_len, args.stride))
    texts = docs["text"].to_list()

    # warm-up (first-call allocations), not timed
    encoder.token_embeddings([tokenize_batch(encoder.tokenizer, texts[:2])[0][0]])

    # bare forward over exactly the windows Emerge runs
    ids = [t for t, _ in tokenize_batch(encoder.tokenizer, texts)]
    chunks = [i[a:b] for i in ids for a, b, _, _ in encoder.windows(len(i))]
    # alternate forward / Emerge `--repeats` times: a noisy neighbour then hits both alike,
    # and the median ratio is reported
    forward_runs, emerge_runs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        encoder._forward(chunks)
        forward_runs.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            vectors = embed_spans(docs, spans, encoder)
            # written as the IO manager writes it
            write_parquet(embeddings_frame(spans, vectors), Path(tmp) / "span_embeddings.parquet")
            emerge_runs.append(time.perf_counter() - t0)
        del vectors
    ratios = sorted(e / f for e, f in zip(emerge_runs, forward_runs))
    forward_s, emerge_s = statistics.median(forward_runs), statistics.median(emerge_runs)

    st = SentenceTransformer(str(packaged_model_path()), device=encoder.device)
    sample = random.Random(args.seed).sample(spans["text_span"].to_list(), min(args.naive_sample, spans.height))
    with encoder.autocast():  # the same precision as Emerge's pass
        st.encode(sample[:64], batch_size=args.batch_size)  # warm-up
        t0 = time.perf_counter()
        st.encode(sample, batch_size=args.batch_size, normalize_embeddings=True)
        naive_s = time.perf_counter() - t0

    tokens = int(sum(len(i) for i in ids))
    emerge_rate = spans.height / emerge_s
    naive_rate = len(sample) / naive_s
    result = {
        "config": {"docs": args.docs, "limit": args.limit, "span": [args.min_len, args.max_len, args.stride],
                   "batch_size": args.batch_size, "naive_sample": len(sample), "model": encoder.name,
                   "device": encoder.device, "forward_dtype": encoder.compute_dtype, "torch_threads": torch.get_num_threads()},
        "machine": machine(),
        "documents": docs.height, "tokens": tokens, "windows": len(chunks), "spans": spans.height,
        "spans_per_token": round(spans.height / tokens, 2),  # the density the speedup depends on
        "emerge_wall_s": round(emerge_s, 2), "forward_wall_s": round(forward_s, 2),
        "naive_wall_s_for_sample": round(naive_s, 2),
        "emerge_spans_per_s": round(emerge_rate, 1), "naive_spans_per_s": round(naive_rate, 1),
        "speedup": round(emerge_rate / naive_rate, 1),
        "overhead_vs_forward": round(statistics.median(ratios), 3),
        "overhead_vs_forward_runs": [round(r, 3) for r in ratios],
        "naive_projected_wall_s_all_spans": round(spans.height / naive_rate, 0),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
