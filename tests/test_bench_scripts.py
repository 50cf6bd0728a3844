"""The benchmark scripts keep their contract: they run on small data and their last stdout line
is a JSON result with the documented keys (the real numbers live in BENCHMARKS.md).

Scripts whose test asserts nothing about quality fine-tune and encode the tiny random BERT
(`--model`): the contract is the same, and the suite stays within CI's budget; the packaged
MiniLM runs where a test asserts what a real model must find (discovery recovering planted topics)."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e
PLANTED = REPO / "sample_data" / "planted_topics.jsonl"


def run_script(name: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / name), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=840, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_discovery_quality_script():
    r = run_script("discovery_quality.py", "--docs", str(PLANTED), "--label-field", "topic", "--seeds", "2")
    assert {"nmi", "ari", "n_clusters", "wall_s", "outlier_fraction", "tokens_embedded"} <= set(r)
    assert r["ari"] > 0.8
    assert [s["seed"] for s in r["per_seed"]] == [42, 43]
    assert r["per_seed"][0]["nmi"] == r["nmi"]  # the top level is the first seed
    nmis = [s["nmi"] for s in r["per_seed"]]
    assert r["over_seeds"]["nmi"]["mean"] == pytest.approx(sum(nmis) / 2, abs=1e-4)
    assert 0 < r["largest_cluster_fraction"] <= 0.5  # five planted topics: no cluster holds half the sample


def test_discovery_agreement_counts_outliers_as_one_class_and_separately_without_them():
    sys.path.insert(0, str(REPO / "bench"))
    from discovery_quality import agreement

    gold = ["a", "a", "a", "b", "b", "b", "c", "c"]
    renamed = [7, 7, 7, 3, 3, 3, 5, 5]  # the same partition under other names
    assert agreement(gold, renamed) == {"nmi": 1.0, "ari": 1.0, "nmi_non_outliers": 1.0, "ari_non_outliers": 1.0}
    # outliers (-1) on two documents: perfect on the rest, penalised over all documents
    with_outliers = [7, 7, -1, 3, 3, 3, -1, 5]
    r = agreement(gold, with_outliers)
    assert r["nmi_non_outliers"] == r["ari_non_outliers"] == 1.0 and r["nmi"] < 1.0 and r["ari"] < 1.0
    # one cluster for everything carries no information
    assert agreement(gold, [0] * len(gold))["nmi"] == 0.0
    assert agreement(gold, [-1] * len(gold))["nmi_non_outliers"] == 0.0  # no inliers at all


def test_discovery_script_reports_both_methods_and_matched_variants_over_seeds():
    """bench/discovery.py's contract: each method and matched variant has the same keys as means
    over seeds, with sd and per-seed rows; BERTopic only where the bench extra is installed."""
    r = run_script("discovery.py", "--docs", str(PLANTED), "--label-field", "topic", "--seeds", "2")
    keys = {"nmi", "ari", "nmi_non_outliers", "ari_non_outliers", "outlier_fraction", "n_clusters", "wall_s",
            "tokens_embedded", "tokens_per_s", "docs_per_s"}
    try:
        import bertopic  # noqa: F401
        methods = ("emerge", "emerge_document_vectors", "bertopic", "bertopic_reduce_outliers")
    except ImportError:
        methods = ("emerge", "emerge_document_vectors")
        assert r["bertopic"] is None and r["bertopic_skipped"] == "bertopic is not installed"
    for name in methods:
        m = r[name]
        assert keys <= set(m) and keys <= set(m["sd"]), name
        assert [s["seed"] for s in m["per_seed"]] == [42, 43]
        assert m["nmi"] == pytest.approx(sum(s["nmi"] for s in m["per_seed"]) / 2, abs=1e-4)
        assert m["docs_per_s"] == pytest.approx(sum(s["docs_per_s"] for s in m["per_seed"]) / 2, abs=1e-2)
    assert r["emerge"]["ari"] > 0.8 and r["emerge_document_vectors"]["ari"] > 0.8  # five planted topics
    if "bertopic" in methods:
        assert r["bertopic_reduce_outliers"]["outlier_fraction"] <= r["bertopic"]["outlier_fraction"]
        assert r["differences_emerge_minus_bertopic"]["nmi"]["mean"] == pytest.approx(
            r["emerge"]["nmi"] - r["bertopic"]["nmi"], abs=1e-3)


def test_titles_script(tmp_path, tiny_causal_lm):
    dump = tmp_path / "clusters.npz"
    r = run_script("titles.py", "--docs", str(PLANTED), "--no-bertopic", "--dump", str(dump),
                   "--namer-dir", str(tiny_causal_lm))
    m = r["emerge"]
    named = r["emerge_named"]  # the same clusters worded by the (here random, so mostly silent) namer
    assert set(named["titles"]) == set(m["titles"]) and named["named"] + named["kept_keyphrase_titles"] == m["n_clusters"]
    assert {"title_to_cluster_top1", "max_term_share", "mean_title_words", "n_clusters", "titles"} <= set(m)
    assert m["n_clusters"] == len(m["titles"]) >= 2 and 0.0 <= m["title_to_cluster_top1"] <= 1.0
    assert r["bertopic"] is None and r["bertopic_skipped"] == "--no-bertopic"
    import numpy as np

    saved = np.load(dump, allow_pickle=True)
    assert len(saved["ids"]) == m["n_clusters"] == len(saved["texts"]) == len(saved["centroids"])
    again = run_script("titles.py", "--from-dump", str(dump))["emerge"]  # same method, same texts: same titles
    assert again["titles"] == m["titles"] and again["title_to_cluster_top1"] == m["title_to_cluster_top1"]


def test_title_measures_find_leaks_and_titles_that_name_other_clusters():
    sys.path.insert(0, str(REPO / "bench"))
    import numpy as np
    from titles import title_measures

    class WordEncoder:  # one axis per known word: a title embeds onto the words it contains
        vocab = ["space", "edu", "cooking", "law"]

        def embed_texts(self, texts):
            v = np.array([[w in t.lower().split() for w in self.vocab] for t in texts], np.float32)
            return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    centroids = {0: np.array([1, 0, 0, 0.0]), 1: np.array([0, 0, 1, 0.0]), 2: np.array([0, 0, 0, 1.0])}
    good = title_measures({0: "Space", 1: "Cooking", 2: "Law"}, centroids, WordEncoder())
    assert good["title_to_cluster_top1"] == 1.0 and good["max_term_share"] == 0.0
    leaky = title_measures({0: "Space edu", 1: "Cooking edu", 2: "edu"}, centroids, WordEncoder())
    assert leaky["max_term_share"] == 1.0 and leaky["most_shared_term"] == "edu"
    assert leaky["title_to_cluster_top1"] < 1.0 and leaky["mean_title_words"] == round(5 / 3, 2)


def test_span_embedding_script(tmp_path):
    out = tmp_path / "r.json"
    r = run_script("span_embedding.py", "--docs", str(PLANTED), "--limit", "4", "--naive-sample", "40",
                   "--out", str(out))
    assert {"emerge_spans_per_s", "naive_spans_per_s", "speedup", "overhead_vs_forward", "spans_per_token"} <= set(r)
    assert r["spans_per_token"] == round(r["spans"] / r["tokens"], 2)
    assert json.loads(out.read_text()) == r


def test_topic_labelling_script(tmp_path, tiny_model_dir):
    rows = [json.loads(line) for line in PLANTED.read_text().splitlines()]
    with open(tmp_path / "train.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows((r["text"], r["topic"]) for r in rows)
    with open(tmp_path / "val.csv", "w", newline="") as fh:  # the threshold is chosen on other texts
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows((r["text"] + " again", r["topic"]) for r in rows[::2])
    v = run_script("topic_labelling.py", "--train", str(tmp_path / "train.csv"), "--k", "3", "--seed", "0",
                   "--none-label", "football", "--val", str(tmp_path / "val.csv"), "--dtype", "float32",
                   "--model", str(tiny_model_dir))
    for method in ("zero_shot_name", "prototype_plus_name", "emerge"):
        assert 0.0 <= v[method]["accuracy"] <= 1.0 and "macro_f1" in v[method]
    assert "oos_recall_at_threshold" in v["emerge"] and v["config"]["topics"] == 4
    assert v["config"]["dtype"] == "float32" and v["machine"]["libraries"]["transformers"]
    assert {"emerge_scoring", "encode_tokens", "val_encode_and_score"} <= set(v["wall_s"])
    sweep, chosen = v["emerge"]["val_sweep"], v["emerge"]["threshold_chosen_on_val"]
    assert str(chosen) in sweep and "threshold_sweep" not in v["emerge"]  # the test texts get one threshold
    assert sweep[str(chosen)]["overall_accuracy"] == max(x["overall_accuracy"] for x in sweep.values())
    assert set(v["emerge"]["test_at_chosen_threshold"]) == {"in_scope_accuracy", "oos_recall", "overall_accuracy"}


def test_scale_script():
    r = run_script("scale.py", "--sizes", "20", "40")
    assert [run["documents"] for run in r["runs"]] == [20, 40]
    assert {"time_exponent", "peak_rss_exponent"} <= set(r)
    assert set(r["runs"][0]["wall_s"]) == {"ingest", "spans", "embed", "fit_clustering", "label_all_spans", "select"}


def test_asset_scale_script(tiny_model_dir, tmp_path):
    """The real asset graph on a one-source corpus (the case where Dagster hands a lone partition
    over bare), one step per process, each reporting its own peak RSS; then the global steps over
    that home's source cycled into more partitions (fit_step_memory.py)."""
    r = run_script("asset_scale.py", "--docs", str(PLANTED), "--sizes", "20", "--docs-per-source", "60",
                   "--model", str(tiny_model_dir), "--compare-full-labelling", "--topics",
                   str(REPO / "sample_data" / "topics.yaml"), "--workdir", str(tmp_path))
    assert {"runs", "time_exponent", "rss_exponent", "model_baseline_rss_gib", "machine"} <= set(r)
    (run,) = r["runs"]
    assert (run["docs"], run["sources"], run["repeated_copies"], run["own_instance"]) == (20, 1, 0, True)
    stages = ["raw_texts", "spans", "span_embeddings", "umap_projection", "hdbscan_clusters", "span_clusters",
              "curated_dataset"]
    assert list(run["per_stage"]) == stages and all(s["steps"] == 1 for s in run["per_stage"].values())
    assert all(0 < s["peak_rss_gib"] <= run["peak_rss_gib"] for s in run["per_stage"].values())
    assert run["dataset_rows"] > 0 and run["tokens"] > 0
    assert r["time_exponent"] is None  # one size: nothing to fit
    full, labelled = run["full_labelling"], run["per_stage"]["span_clusters"]["metadata"]
    assert full["same_dataset"] and full["dataset_rows"] == run["dataset_rows"]
    assert labelled["spans_below_quality"] > 0  # so the comparison compared two different labellings
    assert full["spans_considered"] == labelled["spans"] > run["per_stage"]["curated_dataset"]["metadata"][
        "spans_considered"]
    topic = run["topic_path"]  # the topic-guided path, on the same home
    assert list(topic["per_stage"]) == ["topic_scores", "curated_topic_dataset"]
    scored = topic["per_stage"]["topic_scores"]["metadata"]
    assert scored["spans"] == labelled["spans"] and scored["spans_below_quality"] == labelled["spans_below_quality"]
    assert topic["full_labelling"]["same_dataset"] and topic["full_labelling"]["dataset_rows"] == topic["dataset_rows"]
    home = tmp_path / "20" / "home"
    fit = run_script("fit_step_memory.py", "--home", str(home), "--partitions", "1", "3")
    one, three = fit["runs"]
    assert (one["partitions"], three["partitions"], one["home_sources"]) == (1, 3, 1)
    assert three["total_spans"] == 3 * one["total_spans"] and three["fit_spans"] >= one["fit_spans"] > 0
    data = run_script("fit_step_memory.py", "--home", str(home), "--partitions", "1", "2", "--asset", "curated_dataset")
    # the second partition repeats the first's documents: the near-duplicate step removes every copy
    assert data["runs"][0]["rows"] == data["runs"][1]["rows"] == run["dataset_rows"]
    assert data["runs"][1]["spans_considered"] == 2 * data["runs"][0]["spans_considered"]


def test_backfill_memory_script_runs_one_single_run_backfill_per_count():
    r = run_script("backfill_memory.py", "--docs", str(PLANTED), "--sources", "1", "3", "--docs-per-source", "10")
    one, three = r["runs"]
    assert (one["sources"], three["sources"], three["documents"]) == (1, 3, 30)
    assert three["steps"] == ["raw_texts", "spans"]  # one step per asset for all three sources
    assert three["rows"]["raw_texts"] == 30 and three["rows"]["spans"] > one["rows"]["spans"] > 0
    assert 0 < one["peak_rss_gib"] and 0 < three["peak_rss_gib"]
    with pytest.raises(AssertionError, match="need 1000 documents"):
        run_script("backfill_memory.py", "--docs", str(PLANTED), "--sources", "10", "--docs-per-source", "100")


def test_asset_scale_repeats_documents_as_new_sources_and_fits_exponents(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from asset_scale import fitted_exponent, write_corpus

    sources = write_corpus(["one", "two", "three"], 7, 2, tmp_path)
    assert sources == ["copy0-part0000", "copy0-part0001", "copy1-part0000", "copy1-part0001", "copy2-part0000"]
    ids = [json.loads(line)["id"] for s in sources for line in (tmp_path / s / "docs.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 7  # every repeated document gets a new id
    assert fitted_exponent([1000, 4000], [10.0, 40.0]) == 1.0
    assert fitted_exponent([1000, 4000], [10.0, 10.0]) == 0.0 and fitted_exponent([1000], [10.0]) is None



def test_a_step_process_reports_its_own_peak_rss_not_the_parents(tmp_path):
    """On Linux a child keeps its parent's RSS at fork in `ru_maxrss`, across exec: a small step
    launched by a large driver must still report a small peak."""
    import inspect
    import subprocess

    sys.path.insert(0, str(REPO / "bench"))
    from asset_scale import peak_rss_gib

    held = bytearray(400 * 2**20)
    held[::4096] = b"\1" * len(held[::4096])  # touch every page: 400 MiB resident in this process
    assert peak_rss_gib() > 0.35
    child = subprocess.run([sys.executable, "-c", inspect.getsource(peak_rss_gib) + "\nprint(peak_rss_gib())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < 0.2
    del held

def _planted_beir(folder):
    """A BEIR folder built from the planted corpus: each topic's name is a query, its documents
    relevant, plus one query without judgments."""
    rows = [json.loads(line) for line in PLANTED.read_text().splitlines()]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": f"d{i}", "title": "", "text": r["text"]})
                                                   for i, r in enumerate(rows)))
    topics = sorted({r["topic"] for r in rows})
    (folder / "queries.jsonl").write_text("\n".join(json.dumps({"_id": t, "text": t}) for t in topics + ["orphan"]))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{r['topic']}\td{i}\t1\n" for i, r in enumerate(rows)))
    return folder


def test_domain_adaptation_script(tmp_path, tiny_model_dir):
    beir = _planted_beir(tmp_path / "beir")
    out = tmp_path / "r.json"
    r = run_script("domain_adaptation.py", "--beir", str(beir), "--batch-size", "8", "--max-seq-length", "64",
                   "--eval-fraction", "0.3", "--seeds", "2", "--query-source", "spans", "--out", str(out),
                   "--cache", str(tmp_path / "cache"), "--model", str(tiny_model_dir), "--gate-diagnostics",
                   "--save-model", str(tmp_path / "saved"))
    # the last seed's published model is kept for a later stage (e.g. as --model), and only a published one
    assert (tmp_path / "saved" / "modules.json").exists() == r["per_seed"][-1]["promoted"]
    for model in ("base", "fine_tuned", "bm25"):
        assert set(r[model]) == {"ndcg@10", "mrr@10", "recall@100"}
        assert all(0.0 <= v <= 1.0 for v in r[model].values())
    assert r["delta"]["ndcg@10"] == pytest.approx(r["fine_tuned"]["ndcg@10"] - r["base"]["ndcg@10"], abs=1e-4)
    assert [s["seed"] for s in r["per_seed"]] == [0, 1]
    mean = sum(s["ndcg@10"] for s in r["per_seed"]) / 2
    assert r["fine_tuned"]["ndcg@10"] == pytest.approx(mean, abs=1e-4)
    assert all(isinstance(s["promoted"], bool) and s["train_rows"] > 0 for s in r["per_seed"])
    for s in r["per_seed"]:  # the diagnostic scores each criterion the way the gate (the default, their mean) does
        crit = s["gate_criteria"]
        assert s["gate_criterion"] == "self_and_search" and set(crit["self_retrieval"]) == {"0.0", "0.5", "1.0"}
        assert crit["scored_again"] == []  # the default gate measured both tasks: taken from its decision
        both = {w: (crit["self_retrieval"][w] + crit["search_queries"][w]) / 2 for w in ("0.0", "1.0")}
        assert both["0.0"] == pytest.approx(s["gate_base"], abs=1e-4)
        assert both["1.0"] == pytest.approx(s["gate_scores_by_weight"]["1.0"], abs=1e-4)
    assert r["collection_stats"]["skipped_queries_without_judgments"] == 1  # "orphan" is not scored
    assert {"curate", "bm25", "evaluate_base", "seed_0", "seed_1"} <= set(r["stage_wall_s"])
    assert r["wall_s"] > 0 and r["machine"]["cpu_flags"] is not None
    assert json.loads(out.read_text()) == r
    assert r["reused_stages"] == []  # a first run computes both stages and keeps them
    kept = sorted(done.parent.name.split("-")[0] for done in (tmp_path / "cache").glob("*/complete"))
    assert kept == ["base_evaluation", "curation"]
    _query_adapter_reuses_the_curation(tmp_path, beir, tiny_model_dir)


def test_a_single_seed_calls_no_difference_beyond_noise():
    sys.path.insert(0, str(REPO / "bench"))
    from domain_adaptation import delta_over_2sd

    delta, sd = {"ndcg@10": 0.01, "mrr@10": 0.001}, {"ndcg@10": 0.002, "mrr@10": 0.002}
    assert delta_over_2sd(delta, sd, 3) == {"ndcg@10": True, "mrr@10": False}  # 0.001 is within 2 sd: a tie
    assert delta_over_2sd(delta, {"ndcg@10": 0.0, "mrr@10": 0.0}, 1) == {"ndcg@10": None, "mrr@10": None}


def _query_adapter_reuses_the_curation(tmp_path, beir, tiny_model_dir):
    """bench/query_adapter.py on the domain adaptation run's cache: its curation is reused; a map
    fitted with a zero learning rate stays the identity (the base's metrics, every epoch); a real fit
    lowers the training queries' KL below the base's."""
    (curated,) = (tmp_path / "cache").glob("curation-*/complete")
    made = curated.stat().st_mtime_ns
    r = run_script("query_adapter.py", "--beir", str(beir), "--model", str(tiny_model_dir), "--lrs", "0", "0.01",
                   "--epochs", "2", "--kinds", "linear", "--cache", str(tmp_path / "cache"),
                   "--out", str(tmp_path / "adapter.json"))
    assert list((tmp_path / "cache").glob("curation-*/complete")) == [curated]
    assert curated.stat().st_mtime_ns == made  # reused, not curated again
    assert r["queries"] > r["held_out_queries"] > 0
    assert set(r["runs"]) == {"linear_lr0", "linear_lr0.01"}
    for epoch in r["runs"]["linear_lr0"]:
        assert {k: epoch[k] for k in ("ndcg@10", "mrr@10", "recall@100")} == pytest.approx(
            {k: r["base"][k] for k in ("ndcg@10", "mrr@10", "recall@100")}, abs=1e-5)
        assert epoch["train_kl"] == pytest.approx(r["base"]["train_kl"], abs=1e-3)
    assert r["runs"]["linear_lr0.01"][-1]["train_kl"] < r["base"]["train_kl"]
    assert r["log_queries"] == 0 and r["scored_queries"] > 0
    # half of the real queries as a user's query log: the other half is scored, three fits per map
    log = run_script("query_adapter.py", "--beir", str(beir), "--model", str(tiny_model_dir), "--lrs", "0", "0.01",
                     "--epochs", "1", "--kinds", "linear", "--cache", str(tmp_path / "cache"),
                     "--query-log-fraction", "0.5")
    assert log["log_queries"] + log["scored_queries"] == r["scored_queries"] and log["log_queries"] > 0
    assert set(log["runs"]) == {f"{fit}_linear_lr{lr}" for fit in ("keywords", "log", "keywords+log")
                                for lr in ("0", "0.01")}
    for fit in ("keywords", "log", "keywords+log"):  # the identity scores the scored half as the base does
        (identity,) = log["runs"][f"{fit}_linear_lr0"]
        assert {k: identity[k] for k in ("ndcg@10", "mrr@10", "recall@100")} == pytest.approx(
            {k: log["base"][k] for k in ("ndcg@10", "mrr@10", "recall@100")}, abs=1e-5)
    assert log["runs"]["log_linear_lr0.01"][0]["train_kl"] < log["runs"]["log_linear_lr0"][0]["train_kl"]


def test_gate_diagnostics_take_what_the_gate_measured_and_score_only_the_rest(tiny_model_dir):
    """The gate's own measures and the diagnostic's scoring of the same task agree, so a seed's
    `gate_criteria` mixes them without a seam."""
    import copy

    import torch

    from emerge.config import TrainingConfig
    from emerge.training.pairs import split_by_document
    from emerge.training.promotion import choose_and_gate, label_free_criterion
    from emerge.training.trainer import load_sentence_transformer
    from tests.test_distillation import _docs

    sys.path.insert(0, str(REPO / "bench"))
    from domain_adaptation import gate_criteria

    rows, texts = _docs(16)
    config = TrainingConfig(max_seq_length=64, eval_fraction=0.5, interpolation_weights=(0.5, 1.0), seed=0)
    train_rows, eval_rows = split_by_document(rows, config.eval_fraction, config.seed)
    base = load_sentence_transformer(tiny_model_dir, "cpu", 64)
    trained = copy.deepcopy(base)
    with torch.no_grad():
        trained[0].auto_model.embeddings.word_embeddings.weight.mul_(0.5)
    criterion = label_free_criterion("self_retrieval", eval_rows, train_rows, texts, config.context_chars, config.seed,
                                     config.keyword_terms)
    _, decision = choose_and_gate(base, trained, criterion, config.interpolation_weights, 0.0)
    partly = gate_criteria(base, trained, rows, texts, config, decision)
    assert partly["scored_again"] == ["search_queries"]  # the self-retrieval gate measured only its own task
    assert partly["self_retrieval"] == {"0.0": round(decision.base_score, 5),
                                        **{str(w): round(v, 5) for w, v in decision.scores_by_weight.items()}}
    everything = gate_criteria(base, trained, rows, texts, config, None)
    assert everything["scored_again"] == ["search_queries", "self_retrieval"]
    assert everything["self_retrieval"] == pytest.approx(partly["self_retrieval"], abs=1e-4)
    assert everything["search_queries"] == partly["search_queries"]
    assert everything["search_queries"]["0.5"] != everything["search_queries"]["1.0"]  # the weights differ


def test_training_memory_script_runs_each_budget_in_its_own_process(tiny_model_dir):
    r = run_script("training_memory.py", "--docs", str(PLANTED), "--limit", "40", "--configs", "32:2",
                   "--budgets", "none", "64", "--dropouts", "model", "0", "--steps", "2", "--batch-size", "4",
                   "--model", str(tiny_model_dir))
    plain, _, cached, _ = r["runs"]
    assert (plain["max_tokens_per_forward"], cached["max_tokens_per_forward"]) == (None, 64)
    assert [run["dropout"] for run in r["runs"]] == [None, 0.0, None, 0.0]
    assert plain["steps"] == cached["steps"] == 2
    assert plain["gradient_cached_steps"] == 0 and cached["gradient_cached_steps"] == 2  # 4 rows x 4 texts > 64 tokens
    assert all(run["peak_rss_gib"] > 0 and run["train_s"] > 0 for run in r["runs"])
    assert r["machine"]["cpu_flags"] is not None


def test_a_cached_stage_is_reused_only_for_the_same_inputs(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    from _common import cached_stage

    calls, reused = [], []

    def compute(value):
        calls.append(value)
        return {"value": value}

    def stage(key, value):
        return cached_stage(tmp_path, "stage", key, lambda: compute(value),
                            lambda v, d: (d / "v.json").write_text(json.dumps(v)),
                            lambda d: json.loads((d / "v.json").read_text()), reused)

    assert stage({"collection": "a"}, 1) == {"value": 1}
    assert stage({"collection": "a"}, 2) == {"value": 1}  # reused: not recomputed
    assert stage({"collection": "b"}, 3) == {"value": 3}  # other inputs: computed
    assert calls == [1, 3] and reused == ["stage"]
    assert cached_stage(None, "stage", {}, lambda: 4, None, None, reused) == 4  # no cache: always computed


def test_a_stage_that_skips_a_subpackage_keeps_its_cache_when_only_that_subpackage_changes(tmp_path):
    """Curation never runs `emerge.training`: a training edit must not cost a re-curation, while an
    edit anywhere else in the engine must."""
    sys.path.insert(0, str(REPO / "bench"))
    from _common import code_digest

    (tmp_path / "training").mkdir()
    (tmp_path / "spans.py").write_text("A = 1\n")
    (tmp_path / "training" / "loss.py").write_text("B = 1\n")
    before = code_digest(("training",), tmp_path), code_digest((), tmp_path)
    (tmp_path / "training" / "loss.py").write_text("B = 2\n")
    after_training = code_digest(("training",), tmp_path), code_digest((), tmp_path)
    assert after_training[0] == before[0] and after_training[1] != before[1]
    (tmp_path / "spans.py").write_text("A = 2\n")
    assert code_digest(("training",), tmp_path) != before[0]


def test_window_overlap_script(tmp_path):
    long_doc = tmp_path / "long.jsonl"
    text = " ".join(json.loads(line)["text"] for line in PLANTED.read_text().splitlines()[:12])
    long_doc.write_text(json.dumps({"text": text}) + "\n" + PLANTED.read_text().splitlines()[0] + "\n")
    r = run_script("window_overlap.py", "--docs", str(long_doc), "--overlaps", "64", "0", "--out",
                   str(tmp_path / "r.json"))
    assert [x["window_overlap"] for x in r["runs"]] == [64, 0]
    assert r["runs"][0]["cosine_to_reference"]["min"] > 0.999  # the reference against itself
    assert r["spans_in_multi_window_docs"] > 0  # the long document really spans several windows
    other = r["runs"][1]["cosine_to_reference_multi_window_docs"]
    assert -1.0 <= other["min"] <= other["p1"] <= other["mean"] <= 1.0


def test_precision_script(tmp_path):
    r = run_script("precision.py", "--docs", str(PLANTED), "--limit", "3", "--repeats", "1", "--out",
                   str(tmp_path / "r.json"))
    cos = r["cosine_bf16_to_float32"]
    assert r["spans"] > 0 and -1.0 <= cos["min"] <= cos["p1"] <= cos["mean"] <= 1.0
    assert cos["mean"] > 0.99  # bf16 is an approximation of the same model, not another model
    assert r["speedup_bf16"] == pytest.approx(r["wall_s"]["float32"] / r["wall_s"]["bfloat16"], rel=0.05)


def _planted_csv(path) -> None:
    rows = [json.loads(line) for line in PLANTED.read_text().splitlines()]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows((r["text"], r["topic"]) for r in rows)


def test_self_training_script(tmp_path, tiny_model_dir):
    _planted_csv(tmp_path / "train.csv")
    r = run_script("self_training.py", "--train", str(tmp_path / "train.csv"), "--k", "2", "--seed", "0",
                   "--none-label", "football", "--eval-fraction", "0.4", "--rounds", "2", "--per-topic", "8", "--model", str(tiny_model_dir))
    for method in ("base_prototype", "base_emerge", "self_trained_prototype", "self_trained_emerge"):
        assert 0.0 <= r[method]["accuracy"] <= 1.0 and 0.0 <= r[method]["macro_f1"] <= 1.0
        assert "oos_recall" in r[method]["oos_at_accuracy"]
    assert r["rounds"] == 2 and [x["round"] for x in r["per_round"]] == [1, 2]
    assert r["config"]["topics"] == 4 and r["wall_s"] > 0
    assert all(x["pseudo_labelled"] > 0 for x in r["self_training"])


def test_clustering_gain_script(tiny_model_dir):
    r = run_script("clustering_gain.py", "--docs", str(PLANTED), "--label-field", "topic", "--pairs-per-cluster", "20",
                   "--model", str(tiny_model_dir), "--near-cluster-fraction", "0", "0.5",
                   "--min-pairs", "4")  # the random model's clusters keep few spans; the flow is what counts
    for model in ("base", "fine_tuned"):
        assert {"nmi", "v_measure", "hdbscan_nmi"} <= set(r[model]) and 0.0 <= r[model]["nmi"] <= 1.0
    assert r["train_pairs"] > 0 and r["wall_s"] > 0
    assert set(r["variants"]) == {"0.0", "0.5"} and r["variants"]["0.0"]["scores"] == r["fine_tuned"]


def test_topic_candidates_script(tiny_model_dir):
    """Scoring only the candidate spans gives every candidate the score it gets among all spans."""
    r = run_script("topic_candidates.py", "--docs", str(PLANTED), "--limit", "12", "--repeats", "1",
                   "--topics", str(REPO / "sample_data" / "topics.yaml"), "--model", str(tiny_model_dir))
    assert r["topics"] == 4 and 0 < r["candidates"] < r["spans"]
    assert r["same_scores"] and r["max_relevance_difference"] == 0.0
    assert r["score_all_s"] > 0 and r["saved_fraction_of_scoring"] <= 1


def test_curator_labelling_script(tiny_model_dir):
    """The Python API labels only selectable spans by default; the dataset equals labelling all."""
    r = run_script("curator_labelling.py", "--docs", str(PLANTED), "--limit", "30", "--model", str(tiny_model_dir))
    every, selectable = r["label_every_span"], r["label_selectable_spans"]
    assert every["report"]["spans_left_unlabelled"] == 0 < selectable["report"]["spans_left_unlabelled"]
    assert selectable["report"]["spans"] < every["report"]["spans"] == every["report"]["spans_built"]
    assert r["datasets_identical"] and every["dataset_rows"] == selectable["dataset_rows"] > 0
    assert r["analyze_speedup"] > 0 and r["wall_s"] > 0


def test_the_query_side_bound_fits_the_teacher_with_the_documents_held_fixed():
    """Free query vectors fitted to a teacher's softmax: the loss falls, the fitted ranking follows
    the teacher's (here a planted one the base vectors disagree with), and vectors stay unit length."""
    import numpy as np

    sys.path.insert(0, str(REPO / "bench"))
    from domain_adaptation import query_side_bound

    rng = np.random.default_rng(0)
    documents = rng.normal(size=(40, 16)).astype(np.float32)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    queries = rng.normal(size=(6, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    wanted = rng.permutation(40)[:6]  # the teacher's top document of each query, unrelated to the base's
    teacher = queries @ documents.T
    teacher[np.arange(6), wanted] += 1.0
    fitted, kl = query_side_bound(queries, documents, teacher)
    assert kl["bound"] < kl["base"] / 5
    assert np.allclose(np.linalg.norm(fitted, axis=1), 1.0, atol=1e-5)
    assert ((fitted @ documents.T).argmax(axis=1) == wanted).all()
    assert ((queries @ documents.T).argmax(axis=1) != wanted).any()
