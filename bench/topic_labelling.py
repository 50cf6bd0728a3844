"""Topic-guided labelling accuracy: zero-shot name vs prototype+name vs Emerge late interaction.

    python bench/topic_labelling.py --train ../shared/data/banking77/train.csv --k 5 --seed 0 --out r.json
    python bench/topic_labelling.py --train clinc_train.csv --val clinc_val.csv --test clinc_test.csv \
        --none-label oos --k 5 --out r.json

Both CSVs have `text,category` columns (`--label-column` for another name). Every category is a
topic: name from the label ("card_arrival" -> "card arrival"), a generic one-line description
written from the name, and k examples drawn from TRAIN. Without --test, the evaluation texts are
TRAIN's rows that were not drawn as examples. With --none-label, rows of that category are not a
topic: they measure "none of the topics" (out-of-scope recall at the threshold). With --val as well,
the threshold is chosen on VAL (the sweep's best overall accuracy, "none" counted as a class) and
TEST is scored once, at that threshold; without it the sweep is over the evaluation texts
themselves (a dev view, not a result).
All three methods use the same packaged all-MiniLM-L6-v2 in one run. Last stdout line = JSON.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_argument, emit, machine  # noqa: E402


def read_rows(path: str, label_column: str, text_column: str = "text") -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if text_column not in reader.fieldnames or label_column not in reader.fieldnames:
            raise SystemExit(f"{path}: needs columns {text_column},{label_column}; has {reader.fieldnames}")
        return [(r[text_column], r[label_column]) for r in reader if r[text_column].strip()]


def describe(name: str) -> str:
    return f"Messages about {name}."


def macro_f1(gold: list, pred: list, labels: list) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))


SWEEP = tuple(round(0.05 * i, 2) for i in range(2, 19))  # 0.1 .. 0.9


def threshold_sweep(top, predicted, gold, none_label: str, thresholds=SWEEP) -> dict:
    """Per threshold: in-scope accuracy (an in-scope text left unlabelled is wrong), out-of-scope
    recall, and overall accuracy with "none of the topics" counted as one more class."""
    import numpy as np

    in_scope = gold != none_label
    out = {}
    for th in thresholds:
        labelled = top >= th
        correct = np.where(in_scope, labelled & (predicted == gold), ~labelled)
        out[str(th)] = {"in_scope_accuracy": round(float(correct[in_scope].mean()), 4),
                        "oos_recall": round(float(correct[~in_scope].mean()), 4) if (~in_scope).any() else None,
                        "overall_accuracy": round(float(correct.mean()), 4)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", default=None)
    p.add_argument("--label-column", default="category")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--none-label", default=None, help="category meaning 'none of the topics' (e.g. oos)")
    p.add_argument("--threshold", type=float, default=0.4, help="Emerge relevance_threshold")
    p.add_argument("--val", default=None, help="CSV on which --none-label's threshold is chosen (then TEST is scored once)")
    p.add_argument("--limit-eval", type=int, default=None, help="evaluate on a seeded sample of this size")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="forward-pass precision (EncoderConfig.dtype)")
    add_model_argument(p)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import numpy as np
    from sklearn.metrics import accuracy_score

    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder
    from emerge.vectors import l2_normalise
    from emerge.topics.late_interaction import LateInteractionCrossEncoder
    from emerge.topics.topic import Topic

    rng = random.Random(args.seed)
    train = read_rows(args.train, args.label_column)
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in train:
        by_label[label].append(text)
    labels = sorted(l for l in by_label if l != args.none_label)
    examples, held_out = {}, []
    for label in labels:
        items = list(by_label[label])
        rng.shuffle(items)
        examples[label] = items[:args.k]
        held_out += [(t, label) for t in items[args.k:]]
    if args.none_label:
        held_out += [(t, args.none_label) for t in by_label.get(args.none_label, [])]
    evaluation = read_rows(args.test, args.label_column) if args.test else held_out
    used = {e for ex in examples.values() for e in ex}
    evaluation = [(t, l) for t, l in evaluation if t not in used]
    if args.limit_eval and len(evaluation) > args.limit_eval:
        evaluation = rng.sample(evaluation, args.limit_eval)
    texts = [t for t, _ in evaluation]
    gold = [l for _, l in evaluation]
    in_scope = np.array([g != args.none_label for g in gold])

    if args.val and not args.none_label:
        raise SystemExit("--val chooses the 'none of the topics' threshold: it needs --none-label")
    encoder = load_encoder(EncoderConfig(model_name_or_path=args.model, device="auto", batch_size=64, dtype=args.dtype))
    names = {l: l.replace("_", " ").replace("-", " ") for l in labels}
    timings = {}
    t0 = time.perf_counter()
    x = encoder.embed_texts(texts)
    name_vecs = encoder.embed_texts([names[l] for l in labels])
    timings["encode_eval_texts"] = time.perf_counter() - t0

    def report(pred: list[str]) -> dict:
        g = [gold[i] for i in np.flatnonzero(in_scope)]
        pr = [pred[i] for i in np.flatnonzero(in_scope)]
        out = {"accuracy": round(float(accuracy_score(g, pr)), 4), "macro_f1": round(macro_f1(g, pr, labels), 4)}
        return out

    results = {}
    zero = (x @ name_vecs.T).argmax(axis=1)
    results["zero_shot_name"] = report([labels[i] for i in zero])
    proto = []
    for i, l in enumerate(labels):
        v = encoder.embed_texts(examples[l]).sum(axis=0) + name_vecs[i]
        proto.append(v)
    proto = l2_normalise(np.stack(proto))
    results["prototype_plus_name"] = report([labels[i] for i in (x @ proto.T).argmax(axis=1)])

    topics = [Topic(id=l, name=names[l], description=describe(names[l]), examples=examples[l]) for l in labels]
    t0 = time.perf_counter()
    analyzer = LateInteractionCrossEncoder(topics=topics, relevance_threshold=args.threshold,
                                           prediction_mode="independent").prepare(encoder)
    timings["prepare_topics"] = time.perf_counter() - t0
    from emerge.topics.late_interaction import encode_alone

    t0 = time.perf_counter()
    ids, embs, _ = encode_alone(encoder, texts)
    timings["encode_tokens"] = time.perf_counter() - t0  # the pass topic scoring reuses (late chunking)
    t0 = time.perf_counter()
    parts, pooled = analyzer.score_token_embeddings(ids, embs)
    raw = analyzer.combine(parts, pooled)
    best, top = analyzer.decide(raw)
    timings["emerge_scoring"] = time.perf_counter() - t0
    results["emerge"] = report([labels[i] for i in best])
    results["emerge"]["unlabelled_share_at_threshold"] = round(float((top < args.threshold).mean()), 4)

    # ablations: what each ingredient contributes
    ablations = {"argmax_of_calibrated_scores": report([labels[i] for i in analyzer.calibrate(raw).argmax(axis=1)])}
    for name, kwargs in {"late_interaction_only": {"prototype_weight": 0.0},
                         "topic_to_span_only": {"direction": "topic_to_span"},
                         "span_to_topic_only": {"direction": "span_to_topic"},
                         "no_token_weighting": {"token_weighting": "none"}}.items():
        variant = LateInteractionCrossEncoder(topics=topics, prediction_mode="independent", **kwargs).prepare(encoder)
        vp, vpool = variant._score_texts(encoder, texts)
        ablations[name] = report([labels[i] for i in variant.combine(vp, vpool).argmax(axis=1)])
    result = {"config": {"train": args.train, "test": args.test, "k": args.k, "seed": args.seed,
                         "none_label": args.none_label, "threshold": args.threshold, "val": args.val,
                         "model": encoder.name, "device": encoder.device, "dtype": encoder.compute_dtype, "topics": len(labels), "eval_texts": len(texts),
                         "eval_in_scope": int(in_scope.sum())},
              "machine": machine(),
              **results, "ablations": ablations, "wall_s": {k: round(v, 2) for k, v in timings.items()},
              "scoring_to_encoding_ratio": round(timings["emerge_scoring"] / max(timings["encode_tokens"], 1e-9), 3)}
    if args.none_label:
        predicted = np.array([labels[i] for i in best])
        if args.val:
            val = [(t, l) for t, l in read_rows(args.val, args.label_column) if t not in used]
            t0 = time.perf_counter()
            v_raw = analyzer.combine(*analyzer._score_texts(encoder, [t for t, _ in val]))
            v_best, v_top = analyzer.decide(v_raw)
            result["wall_s"]["val_encode_and_score"] = round(time.perf_counter() - t0, 2)
            v_gold = np.array([l for _, l in val])
            v_pred = np.array([labels[i] for i in v_best])
            sweep = threshold_sweep(v_top, v_pred, v_gold, args.none_label)
            chosen = max(sweep, key=lambda th: (sweep[th]["overall_accuracy"], -float(th)))
            result["emerge"]["threshold_chosen_on_val"] = float(chosen)
            result["emerge"]["val_sweep"] = sweep
            result["emerge"]["test_at_chosen_threshold"] = threshold_sweep(
                top, predicted, np.array(gold), args.none_label, [float(chosen)])[chosen]
        else:
            result["emerge"]["threshold_sweep"] = threshold_sweep(top, predicted, np.array(gold), args.none_label)
        at_arg = threshold_sweep(top, predicted, np.array(gold), args.none_label, [args.threshold])[str(args.threshold)]
        result["emerge"]["in_scope_accuracy_at_threshold"] = at_arg["in_scope_accuracy"]
        result["emerge"]["oos_recall_at_threshold"] = at_arg["oos_recall"]
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
