"""Self-training from topics: does fine-tuning on Emerge's pseudo-labelled texts beat the few-shot baseline?

    python bench/self_training.py --train ../shared/data/banking77/train.csv --k 5 --seed 0 --out r.json
    python bench/self_training.py --train ../shared/data/clinc150/train.csv --test ../shared/data/clinc150/val.csv \
        --label-column intent --none-label oos --k 5 --seed 0 --out r.json

Every category is a topic: its name from the label ("card_arrival" -> "card arrival"), a
one-line description written from the name, and k examples drawn from TRAIN with the seed. The
remaining TRAIN texts are the unlabelled pool (their labels are never read); without --test a
seeded `--eval-fraction` of them, per category, is held out as the labelled evaluation part and
taken out of the pool. Labels are read only by the final scoring. With --none-label, that
category is not a topic: its evaluation texts measure "none of the topics" (out-of-scope recall
where in-scope accuracy is `--oos-at-accuracy`, at the model's own relevance threshold (a self-trained
model saves one, see `emerge.topics.self_training`) and at the default 0.4).

Four classifiers, one run, one packaged all-MiniLM-L6-v2: the base model's prototype+name
classifier (cosine to the normalised sum of the example vectors and the name vector) and
Emerge's late-interaction scorer, each in the base and in the self-trained model's space.
Last stdout line = JSON.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_argument, emit, machine  # noqa: E402
from topic_labelling import describe, macro_f1, read_rows  # noqa: E402


def split(train, none_label, k: int, eval_fraction: float, has_test: bool, seed: int):
    """(examples per label, unlabelled pool texts, held-out labelled rows)."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in train:
        by_label[label].append(text)
    examples, pool, held_out = {}, [], []
    for label in sorted(by_label):
        items = list(dict.fromkeys(by_label[label]))
        rng.shuffle(items)
        if label != none_label:
            examples[label], items = items[:k], items[k:]
        n_eval = 0 if has_test else int(round(eval_fraction * len(items)))
        held_out += [(t, label) for t in items[:n_eval]]
        pool += items[n_eval:]
    rng.shuffle(pool)
    return examples, pool, held_out


def oos_at_accuracy(correct, confidence, in_scope, target: float) -> dict:
    """OOS recall at the strictest threshold that keeps in-scope accuracy >= target."""
    import numpy as np

    best = None
    for th in np.unique(confidence):
        accepted = confidence >= th
        acc = float((correct & accepted)[in_scope].mean())
        if acc >= target:
            best = (float(th), acc, float((~accepted)[~in_scope].mean()))
    if best is None:
        return {"threshold": None, "in_scope_accuracy": None, "oos_recall": 0.0}
    return {"threshold": round(best[0], 4), "in_scope_accuracy": round(best[1], 4), "oos_recall": round(best[2], 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", default=None)
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="category")
    p.add_argument("--none-label", default=None, help="category meaning 'none of the topics' (e.g. oos)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-fraction", type=float, default=0.3, help="held-out share of TRAIN when --test is absent")
    p.add_argument("--pool-limit", type=int, default=None, help="use at most this many unlabelled texts")
    p.add_argument("--rounds", type=int, default=None, help="self-training rounds (default: the engine's)")
    p.add_argument("--per-topic", type=int, default=None)
    p.add_argument("--min-relevance", type=float, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    add_model_argument(p)
    p.add_argument("--oos-at-accuracy", type=float, default=0.7)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import dataclasses

    import numpy as np
    from sklearn.metrics import accuracy_score

    from emerge.config import EncoderConfig
    from emerge.encoder import load_encoder, resolve_model_path
    from emerge.vectors import l2_normalise
    from emerge.topics.late_interaction import DEFAULT_RELEVANCE_THRESHOLD, LateInteractionCrossEncoder
    from emerge.topics.self_training import SelfTrainingConfig, model_relevance_threshold, self_train
    from emerge.topics.topic import Topic

    t_start = time.perf_counter()
    train = read_rows(args.train, args.label_column, args.text_column)
    examples, pool, held_out = split(train, args.none_label, args.k, args.eval_fraction, bool(args.test), args.seed)
    evaluation = read_rows(args.test, args.label_column, args.text_column) if args.test else held_out
    if args.pool_limit:
        pool = pool[:args.pool_limit]
    labels = sorted(examples)
    names = {l: l.replace("_", " ").replace("-", " ") for l in labels}
    topics = [Topic(id=l, name=names[l], description=describe(names[l]), examples=examples[l]) for l in labels]
    texts = [t for t, _ in evaluation]
    gold = np.array([l for _, l in evaluation], dtype=object)
    in_scope = gold != args.none_label
    overrides = {k: v for k, v in {"rounds": args.rounds, "per_topic": args.per_topic,
                                    "min_relevance": args.min_relevance}.items() if v is not None}
    training = {k: v for k, v in {"learning_rate": args.learning_rate, "epochs": args.epochs}.items() if v is not None}
    config = dataclasses.replace(SelfTrainingConfig(), **overrides).with_training(seed=args.seed, **training)

    def report(pred_idx: np.ndarray, confidence: np.ndarray, threshold: float | None = None) -> dict:
        pred = np.array([labels[i] for i in pred_idx], dtype=object)
        out = {"accuracy": round(float(accuracy_score(gold[in_scope], pred[in_scope])), 4),
               "macro_f1": round(macro_f1(list(gold[in_scope]), list(pred[in_scope]), labels), 4)}
        if args.none_label:
            correct = pred == gold
            out["oos_at_accuracy"] = oos_at_accuracy(correct, confidence, in_scope, args.oos_at_accuracy)
            if threshold is not None:
                def at(th: float) -> dict:
                    accepted = confidence >= th
                    return {"threshold": round(float(th), 4),
                            "in_scope_accuracy": round(float((correct & accepted)[in_scope].mean()), 4),
                            "oos_recall": round(float((~accepted)[~in_scope].mean()), 4)}

                out["at_threshold"] = at(threshold)  # the model's own (a self-trained model saves one)
                out["at_default_threshold"] = at(DEFAULT_RELEVANCE_THRESHOLD)  # what a fixed 0.4 would give
        return out

    def evaluate(model_dir) -> dict:
        encoder = load_encoder(EncoderConfig(model_name_or_path=str(model_dir), batch_size=64))
        x = encoder.embed_texts(texts)
        name_vecs = encoder.embed_texts([names[l] for l in labels])
        proto = l2_normalise(np.stack([encoder.embed_texts(examples[l]).sum(axis=0) + name_vecs[i]
                                       for i, l in enumerate(labels)]))
        sims = x @ proto.T
        t0 = time.perf_counter()
        scorer = LateInteractionCrossEncoder(topics=topics, prediction_mode="independent",
                                             relevance_threshold=model_relevance_threshold(
                                                 model_dir, DEFAULT_RELEVANCE_THRESHOLD)).prepare(encoder)
        best, relevance = scorer.decide(scorer.score_texts(texts))
        return {"prototype": report(sims.argmax(axis=1), sims.max(axis=1)),
                "emerge": report(best, relevance, scorer.relevance_threshold),
                "emerge_scoring_s": round(time.perf_counter() - t0, 2)}

    base_dir = resolve_model_path(args.model)
    base = evaluate(base_dir)
    per_round = []
    with tempfile.TemporaryDirectory(prefix="emerge-self-training-") as tmp:
        def on_round(r, model_dir):
            per_round.append({"round": r, **evaluate(model_dir)})
            print(f"round {r}: prototype {per_round[-1]['prototype']['accuracy']}, "
                  f"emerge {per_round[-1]['emerge']['accuracy']}", file=sys.stderr, flush=True)

        st = self_train(topics, pool, base_dir, Path(tmp) / "model", config, on_round=on_round,
                        progress=lambda m: print(m, file=sys.stderr, flush=True))
    last = per_round[-1]
    result = {"config": {"train": args.train, "test": args.test, "k": args.k, "seed": args.seed,
                         "none_label": args.none_label, "model": str(base_dir), "topics": len(labels),
                         "pool_texts": len(pool),
                         "eval_texts": len(texts), "eval_in_scope": int(in_scope.sum()),
                         "oos_at_accuracy": args.oos_at_accuracy, "self_training": dataclasses.asdict(config)},
              "machine": machine(),
              "base_prototype": base["prototype"], "base_emerge": base["emerge"],
              "self_trained_prototype": last["prototype"], "self_trained_emerge": last["emerge"],
              "rounds": config.rounds, "per_round": per_round, "self_training": st.as_dict()["rounds"],
              "relevance_threshold": {"base": st.base_relevance_threshold, "self_trained": st.relevance_threshold,
                                      "none_share_of_unlabelled": st.none_share},
              "wall_s": round(time.perf_counter() - t_start, 1)}
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
