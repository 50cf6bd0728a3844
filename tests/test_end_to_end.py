"""End to end with the real packaged all-MiniLM-L6-v2: planted topics must be recovered."""

import csv
import os
import re
import subprocess
import sys

import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from emerge import (AnalyzerConfig, ClusteringPipeline, Curator, CuratorConfig, LocalClusterAnalyzer)
from emerge.ingest import read_source
from tests.conftest import REPO, SAMPLE_CORPUS

pytestmark = pytest.mark.e2e
SOURCES = ["field_notes", "newsletters", "support_tickets"]


def planted_documents():
    with open(REPO / "sample_data" / "labels.csv") as fh:
        truth = {(r["source"], r["path"], r["record"]): r["topic"] for r in csv.DictReader(fh)}
    docs = pl.concat([read_source(SAMPLE_CORPUS / s).documents for s in SOURCES])
    keys = list(zip(docs["source"], docs["path"], docs["record"]))
    docs = docs.with_columns(pl.Series("topic", [truth.get(k) for k in keys]))
    return docs.filter(pl.col("topic").is_not_null())


@pytest.fixture(scope="module")
def curated(minilm_encoder, tmp_path_factory):
    docs = planted_documents()
    curator = Curator(minilm_encoder, None, CuratorConfig(min_length=16, max_length=64, stride=8), progress=False)
    spans = curator.process_batch(docs["text"].to_list())
    final = curator.prepare_final_dataset(spans)
    out = tmp_path_factory.mktemp("out")
    paths = curator.save_dataset(final, out / "curated_spans.csv")
    return docs, curator, spans, final, paths


def majority_cluster(frame: pl.DataFrame) -> dict:
    top = frame.filter(pl.col("cluster_id") >= 0).group_by("doc_id", "cluster_id").len().sort(
        ["doc_id", "len", "cluster_id"], descending=[False, True, False])
    return dict(top.unique("doc_id", keep="first").select("doc_id", "cluster_id").iter_rows())


def test_discovered_clusters_recover_planted_topics(curated):
    docs, curator, spans, final, _ = curated
    assert 4 <= len(curator.analyzer.pipeline.cluster_ids) <= 8
    # process_batch re-ids inline texts; map them back by position
    inline_ids = read_ids(curator, docs)
    for frame in (spans, final):
        majority = majority_cluster(frame)
        pred = [majority.get(i, -1) for i in inline_ids]
        ari = adjusted_rand_score(docs["topic"].to_list(), pred)
        assert ari > 0.8, f"ARI {ari:.3f}"


def read_ids(curator, docs):
    from emerge.ingest import documents_from_texts

    return documents_from_texts(docs["text"].to_list()).documents["doc_id"].to_list()


def test_dataset_export_and_card(curated):
    docs, _, _, final, paths = curated
    assert {"parquet", "csv", "card"} == set(paths)
    back = pl.read_csv(paths["csv"])
    assert back.height == final.height > docs.height  # more than one span per document on average
    assert final["cluster_title"].n_unique() == final["cluster_id"].n_unique()
    card = paths["card"].read_text()
    assert "all-MiniLM-L6-v2" in card and "label balance" in card


def test_unselectable_spans_get_no_label_and_the_dataset_does_not_change(curated, minilm_encoder):
    """By default only spans that can reach the dataset (quality >= quality_threshold) are labelled;
    labelling every span (label_below_quality) must give the same clusters and the same dataset."""
    from polars.testing import assert_frame_equal

    docs, curator, spans, final, _ = curated
    every = Curator(minilm_encoder, None, CuratorConfig(min_length=16, max_length=64, stride=8,
                                                        label_below_quality=True), progress=False)
    all_spans = every.process_batch(docs["text"].to_list())
    threshold = curator.config.quality_threshold
    assert (spans["quality"] >= threshold).all()
    assert (all_spans["quality"] < threshold).any(), "the planted corpus has spans below the threshold"
    assert spans.height == all_spans.filter(pl.col("quality") >= threshold).height
    report = curator.last_report
    assert report["spans"] == spans.height <= report["spans_built"] - report["spans_left_unlabelled"]
    assert report["spans_left_unlabelled"] > 0 == every.last_report["spans_left_unlabelled"]
    assert every.last_report["spans"] == all_spans.height
    assert every.analyzer.pipeline.cluster_ids == curator.analyzer.pipeline.cluster_ids
    key = ["doc_id", "start_char", "end_char"]
    assert_frame_equal(every.prepare_final_dataset(all_spans).sort(key), final.sort(key))
    # quality is scored once for every span and carried to the labelled rows: each row keeps its own
    from emerge.quality import quality_components
    for frame in (spans, all_spans):
        recomputed = quality_components(frame, curator.texts)
        assert_frame_equal(frame.select(recomputed.columns), recomputed)


def test_seed_api_with_saved_pipeline_labels_new_texts(curated, tmp_path, minilm_encoder):
    docs, curator, spans, _, _ = curated
    curator.analyzer.pipeline.save(tmp_path / "clustering")
    model, tokenizer = minilm_encoder.model, minilm_encoder.tokenizer  # plain transformers objects
    pipeline = ClusteringPipeline.load(tmp_path / "clustering")
    analyzer = LocalClusterAnalyzer(pipeline=pipeline, config=AnalyzerConfig(min_len=5, max_len=50),
                                    model=model, tokenizer=tokenizer)
    fresh = Curator(model, tokenizer, CuratorConfig(min_length=10, max_length=200, quality_threshold=0.6),
                    analyzer, progress=False)
    new_texts = ["The goalkeeper dived to his left and saved the penalty. The striker could not believe it, "
                 "and the fans in the stadium groaned as the referee blew for full time.",
                 "Knead the dough until it is smooth, then let it rise before baking the bread in a hot oven. "
                 "Brush the loaf with melted butter and sprinkle sea salt over the crust."]
    labelled = fresh.process_batch(new_texts)
    assert labelled["n_tokens"].max() <= 50 and labelled["n_tokens"].min() >= 10
    final = fresh.prepare_final_dataset(labelled)
    assert (final["quality"] >= 0.6).all()
    new_ids = sorted(labelled["doc_id"].unique())
    majority = majority_cluster(labelled)
    assert len({majority[i] for i in new_ids}) == 2, "football and baking land in different clusters"
    assert analyzer.pipeline is pipeline, "a loaded pipeline is used, never refitted"


def test_emerge_curate_and_status_on_a_users_corpus(tmp_path):
    """A user's corpus (the bundled one plus an empty source folder) with no DAGSTER_HOME and no
    topics: the empty source is reported once and skipped before any model work, the others
    curate and train; the runs go to a Dagster instance inside the Emerge home, and no topic
    dataset is made from topics the user never gave."""
    import shutil

    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "EMERGE_TOPICS_FILE")}
    env["HF_HUB_OFFLINE"] = "1"
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus)
    (corpus / "aaa_empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "emerge_assets.cli", "curate", str(corpus), "--home",
                           str(tmp_path / "home")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("'aaa_empty'") == 1 and "Traceback" not in proc.stderr
    assert " - DEBUG - " not in proc.stderr and "BetaWarning" not in proc.stderr  # the result is not drowned
    assert len((proc.stdout + proc.stderr).splitlines()) < 300  # was ~835 lines before #12
    assert "skipped:   1 source(s) without a usable document: aaa_empty" in proc.stdout
    assert "clusters:" in proc.stdout and "dataset:" in proc.stdout
    n_clusters = int(next(line for line in proc.stdout.splitlines() if line.strip().startswith("clusters:")).split()[1])
    titles = next(line for line in proc.stdout.splitlines() if line.strip().startswith("titles:")).split(":", 1)[1]
    titles = [t.strip() for t in titles.split(" | ")]
    assert len(titles) == min(n_clusters, 8) and all(re.fullmatch(r"[A-Z][\w'’ ,-]*", t) for t in titles), titles
    assert (tmp_path / "home" / "datasets" / "curated_spans.parquet").exists()
    assert (tmp_path / "home" / "datasets" / "curated_spans.card.md").exists()
    assert (tmp_path / "home" / "dagster_home" / "dagster.yaml").exists()  # the instance of this home
    assert any((tmp_path / "home" / "dagster_home").rglob("*.db"))  # runs recorded in its SQLite store
    assert "topics:    none given" in proc.stdout
    assert not (tmp_path / "home" / "datasets" / "topic_spans.parquet").exists()
    # the demo ends with a gated fine-tuning run tracked in a local MLflow store: the model folder
    # exists exactly when the gate promoted the candidate, and the summary says which model is current
    gate = next(line for line in proc.stdout.splitlines() if line.strip().startswith("gate:"))
    published = (tmp_path / "home" / "models" / "emerge-minilm" / "modules.json").exists()
    assert ("promoted" in gate and "not promoted" not in gate) == published, gate
    assert f"current model: {'fine_tuned' if published else 'base'}" in proc.stdout
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").exists() and "MLflow:" in proc.stdout
    status = subprocess.run([sys.executable, "-m", "emerge_assets.cli", "status", "--home", str(tmp_path / "home")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stderr[-2000:]
    assert "sources:   3 (field_notes, newsletters, support_tickets)" in status.stdout  # not the empty one
    assert "curated_dataset" in status.stdout and "curated_spans.parquet" in status.stdout
    assert "none failed or unfinished" in status.stdout


def test_demo_rejects_a_broken_topics_file_before_any_model_work(tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "dagster_home"), HF_HUB_OFFLINE="1")
    (tmp_path / "dagster_home").mkdir()
    topics = tmp_path / "topics.yaml"
    topics.write_text("topics:\n  - id: 1\n    name: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "emerge_assets.demo", "--emerge-home", str(tmp_path / "home"),
                           "--topics", str(topics)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "topics.yaml is not valid YAML at line" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "home" / "token_embeddings").exists()


def test_dagster_definitions_validate():
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                           "emerge_assets.definitions"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, DAGSTER_HOME=""))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_seed_topic_guided_example_labels_planted_topics(minilm_encoder):
    """The product description's second example, on the bundled corpus with its topics file."""
    import json

    from emerge import LateInteractionCrossEncoder, load_topics

    rows = [json.loads(line) for line in (REPO / "sample_data" / "planted_topics.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    analyzer = LateInteractionCrossEncoder(config=AnalyzerConfig(min_len=10, max_len=100),
                                           topics=load_topics(REPO / "sample_data" / "topics.yaml"),
                                           relevance_threshold=0.4, prediction_mode="late_chunking")
    curator = Curator(minilm_encoder, None, CuratorConfig(min_length=15, max_length=64, quality_threshold=0.4,
                                                          stride=4), analyzer, progress=False)
    labelled = curator.process_batch(texts)
    final = curator.prepare_final_dataset(labelled)
    from emerge.ingest import documents_from_texts

    planted = dict(zip(documents_from_texts(texts).documents["doc_id"], [r["topic"] for r in rows]))
    labelled = labelled.with_columns(pl.col("doc_id").replace_strict(planted).alias("planted"))
    expected = {"astronomy": "space", "cooking": "food", "finance": "money"}
    for planted_topic, topic_id in expected.items():
        spans = labelled.filter(pl.col("planted") == planted_topic)
        assert (spans["topic_id"] == topic_id).mean() > 0.9, planted_topic
    football = labelled.filter(pl.col("planted") == "football")  # no football topic in the file
    assert football["topic_id"].is_null().mean() > 0.9
    assert {"topic_id", "topic_name", "topic_description", "relevance", "quality"} <= set(final.columns)
    assert final["topic_id"].null_count() == 0 and (final["quality"] >= 0.4).all()


# -- the product description's own snippets, run as written ------------------------------------------
SNIPPETS = REPO / "tests" / "seed_snippets"
SEED = REPO.parent / "shared" / "seed" / "emerge-overview.md"


@pytest.mark.skipif(not SEED.exists(), reason="the product description is in ../shared, not in a user's clone")
def test_snippet_copies_are_the_product_descriptions_text():
    seed = SEED.read_text()
    for name in ("discovery.py.txt", "topic_guided.py.txt"):
        assert (SNIPPETS / name).read_text() in seed


def test_seed_discovery_snippet_runs_verbatim(curated, minilm_encoder, tmp_path, monkeypatch):
    """`emerge.src...` imports, a pipeline loaded from artifacts/clustering/models, no refit."""
    docs, curator, _, _, _ = curated
    monkeypatch.chdir(tmp_path)
    curator.analyzer.pipeline.save(tmp_path / "artifacts" / "clustering" / "models")
    scope = {"model": minilm_encoder.model, "tokenizer": minilm_encoder.tokenizer,
             "texts": docs["text"].to_list()[:12]}
    exec(compile((SNIPPETS / "discovery.py.txt").read_text(), "seed-discovery", "exec"), scope)
    out = pl.read_csv(tmp_path / "outputs" / "curated" / "curated_spans.csv")
    assert out.height > 0 and {"text_span", "cluster_id", "relevance", "quality"} <= set(out.columns)
    assert (out["quality"] >= 0.6).all() and scope["analyzer"].pipeline is scope["pipeline"]


def test_seed_topic_guided_snippet_runs_verbatim(minilm_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    customer_texts = ["My product stopped working after the update and nobody from support has answered my "
                      "emails for a week, which is really frustrating.",
                      "Please add dark mode to the app, and an integration with Slack would make it much more "
                      "useful for our whole team."]
    scope = {"model": minilm_encoder.model, "tokenizer": minilm_encoder.tokenizer, "customer_texts": customer_texts}
    exec(compile((SNIPPETS / "topic_guided.py.txt").read_text(), "seed-topic-guided", "exec"), scope)
    out = pl.read_csv(tmp_path / "outputs" / "curated" / "topic_spans.csv")
    assert out.height > 0 and {"text_span", "topic_id", "topic_name", "relevance"} <= set(out.columns)
    assert set(out["topic_id"].cast(pl.String)) <= {"1", "2"}


def test_readme_recipe_a_runs_on_the_exported_csv(curated, tiny_model_dir, tmp_path, monkeypatch):
    """The README's recipe A block, on the CSV `save_dataset` wrote (tiny model for speed)."""
    import re

    _, _, _, _, paths = curated
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Notes on the original product description.*?```python\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "outputs" / "curated").mkdir(parents=True)
    (tmp_path / "outputs" / "curated" / "curated_spans.csv").write_bytes(paths["csv"].read_bytes())
    monkeypatch.chdir(tmp_path)
    block = block.replace("packaged_model_path()", repr(str(tiny_model_dir)))
    exec(compile(block, "readme-recipe-a", "exec"), {})
    assert (tmp_path / "artifacts" / "models" / "minilm-emerge-ft" / "modules.json").exists()


def test_readme_recipe_b_runs_on_the_exported_topic_csv(minilm_encoder, tiny_model_dir, tmp_path, monkeypatch):
    """The README's recipe B block, on a topic dataset the Python API exported for the planted
    corpus and the sample topics (training with the tiny model for speed)."""
    import re

    from emerge import LateInteractionCrossEncoder
    from emerge.topics.topic import load_topics

    topics_file = REPO / "sample_data" / "topics.yaml"
    analyzer = LateInteractionCrossEncoder(config=AnalyzerConfig(min_len=16, max_len=64),
                                           topics=load_topics(topics_file))
    curator = Curator(minilm_encoder, None, CuratorConfig(min_length=16, max_length=64, stride=8), analyzer,
                      progress=False)
    monkeypatch.chdir(tmp_path)
    final = curator.prepare_final_dataset(curator.process_batch(planted_documents()["text"].to_list()))
    curator.save_dataset(final, "outputs/curated/topic_spans.csv")
    (tmp_path / "topics.yaml").write_bytes(topics_file.read_bytes())
    readme = (REPO / "README.md").read_text()
    blocks = re.search(r"## Notes on the original product description.*?```python\n.*?```.*?```python\n(.*?)```",
                       readme, re.S)
    block = blocks.group(1).replace("packaged_model_path()", repr(str(tiny_model_dir)))
    scope = {}
    exec(compile(block, "readme-recipe-b", "exec"), scope)
    assert (tmp_path / "artifacts" / "models" / "minilm-emerge-topics" / "modules.json").exists()
    pairs = scope["pairs"]
    assert pairs.height > 0 and pairs["group"].n_unique() >= 2  # pairs of several topics, each within one topic
