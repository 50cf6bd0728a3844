"""Asset checks through real materializations (tiny random BERT), reliability of re-runs and kills."""

import shutil

import dagster as dg
import numpy as np
import polars as pl
import pytest

from emerge import validation
from emerge_assets.assets.clustering import hdbscan_clusters, span_clusters, umap_projection
from emerge_assets.assets.dataset import curated_dataset, curated_topic_dataset
from emerge_assets.assets.documents import raw_texts, span_embeddings, spans
from emerge_assets.assets.topics import topic_scores
from emerge_assets.checks import CHECKS, dataset_schema
from emerge_assets.definitions import ASSETS, build_resources
from tests.conftest import SAMPLE_CORPUS

SOURCES = ["newsletters", "support_tickets"]
PER_SOURCE = [raw_texts, spans, span_embeddings]


def checks_of(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("emerge_home")
    corpus = tmp_path_factory.mktemp("input") / "corpus"
    for source in SOURCES:
        shutil.copytree(SAMPLE_CORPUS / source, corpus / source)
    resources = build_resources(str(home), str(corpus), str(tiny_model_dir), device="cpu")
    everything = ASSETS + CHECKS
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("document_source", SOURCES)
        per_source = {s: dg.materialize(everything, selection=PER_SOURCE, partition_key=s, instance=instance,
                                        resources=resources) for s in SOURCES}
        fit = dg.materialize(everything, selection=[umap_projection, hdbscan_clusters], instance=instance,
                             resources=resources)
        labels = [dg.materialize(everything, selection=[span_clusters], partition_key=s, instance=instance,
                                 resources=resources) for s in SOURCES]
        dataset = dg.materialize(everything, selection=[curated_dataset], instance=instance, resources=resources)
        assert all(r.success for r in [*per_source.values(), fit, *labels, dataset])
        yield {"home": home, "corpus": corpus, "resources": resources, "instance": instance,
               "per_source": per_source, "fit": fit, "dataset": dataset, "everything": everything}


def test_per_source_checks_run_with_their_partition_and_pass(run):
    evals = checks_of(run["per_source"]["newsletters"])
    assert set(evals) == {"spans_are_document_substrings", "spans_have_no_empty_or_duplicate_rows",
                          "embeddings_are_finite_and_nonzero", "raw_texts_account_for_every_file"}
    assert all(e.passed for e in evals.values()), {k: e.metadata for k, e in evals.items()}
    assert all(e.partition == "newsletters" for e in evals.values())
    assert evals["spans_are_document_substrings"].metadata["spans_checked"].value > 0


def test_cluster_and_dataset_checks(run):
    fit = checks_of(run["fit"])["clusters_within_bounds"]
    assert fit.severity == dg.AssetCheckSeverity.WARN
    assert 0.0 <= fit.metadata["noise_fraction"].value <= 1.0
    evals = checks_of(run["dataset"])
    assert evals["curated_dataset_schema"].passed, evals["curated_dataset_schema"].metadata
    assert evals["curated_dataset_accounts_for_every_input"].passed
    assert evals["curated_dataset_accounts_for_every_input"].metadata["inputs"].value == sum(
        pl.read_parquet(run["home"] / "assets" / "raw_texts" / f"{s}.parquet").height for s in SOURCES)
    assert evals["curated_dataset_label_balance"].severity == dg.AssetCheckSeverity.WARN


def test_warn_bounds_come_from_run_config(run):
    result = dg.materialize(run["everything"], selection=[hdbscan_clusters], instance=run["instance"],
                            resources=run["resources"], run_config={"ops": {
                                "hdbscan_clusters_clusters_within_bounds": {"config": {"min_clusters": 1000}}}})
    assert result.success  # a warning does not fail the run
    check = checks_of(result)["clusters_within_bounds"]
    assert not check.passed and "clusters" in check.metadata["problems"].value


def test_blocking_check_stops_an_empty_dataset_from_flowing_on(run):
    ran = []

    @dg.asset(deps=["curated_dataset"])
    def dataset_consumer() -> None:
        ran.append(True)

    result = dg.materialize([*run["everything"], dataset_consumer], selection=[curated_dataset, dataset_consumer],
                            instance=run["instance"], resources=run["resources"], raise_on_error=False,
                            run_config={"ops": {"curated_dataset": {"config": {
                                "quality_threshold": 1.0, "min_relevance": 1.0, "dataset_name": "strict"}}}})
    schema = checks_of(result)["curated_dataset_schema"]
    assert not schema.passed and "no rows" in schema.metadata["problems"].value
    assert not ran and not result.success


def test_topic_dataset_has_the_same_checks_and_they_catch_a_broken_one(run):
    """curated_topic_dataset is checked like curated_dataset, on its own label column (topic_id)."""
    instance, resources = run["instance"], run["resources"]
    for s in SOURCES:
        scored = dg.materialize(run["everything"], selection=[topic_scores], partition_key=s, instance=instance,
                                resources=resources)
        assert scored.success and checks_of(scored)["topic_scores_are_one_valid_row_per_span"].passed
    result = dg.materialize(run["everything"], selection=[curated_topic_dataset], instance=instance,
                            resources=resources)
    evals = checks_of(result)
    assert set(evals) == {"curated_topic_dataset_schema", "curated_topic_dataset_label_balance",
                          "curated_topic_dataset_accounts_for_every_input"}
    assert evals["curated_topic_dataset_schema"].passed, evals["curated_topic_dataset_schema"].metadata
    assert evals["curated_topic_dataset_accounts_for_every_input"].passed
    assert evals["curated_topic_dataset_label_balance"].severity == dg.AssetCheckSeverity.WARN
    good = pl.read_parquet(result.asset_materializations_for_node("curated_topic_dataset")[-1]
                           .metadata["parquet_path"].value)
    broken = good.with_columns(pl.lit(None, pl.String).alias("topic_id"), pl.lit(1.5).alias("relevance"))
    problems = dataset_schema("curated_topic_dataset", broken).metadata["problems"].value
    assert "relevance outside [0, 1]" in problems and any("topic_id" in p for p in problems)
    # the cluster scheme's label column is not required of a topic dataset
    assert dataset_schema("curated_topic_dataset", good).passed and "cluster_id" not in good.columns


def test_check_logic_detects_what_it_guards():
    spans = pl.DataFrame({"span_idx": [0, 1, 1], "doc_id": ["d", "d", "d"], "start_char": [0, 4, 4],
                          "end_char": [3, 9, 9], "text_span": ["abc", "  ", "  "]})
    assert validation.span_substring_violations(spans, {"d": "abc efghij"})["span_idx"].to_list() == [1, 1]
    assert validation.span_row_problems(spans) == {"empty_spans": 2, "duplicate_spans": 1, "duplicate_span_idx": 1}
    vectors = np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 0.0]], np.float32)
    assert validation.embedding_problems(vectors) == {"non_finite_rows": 1, "zero_rows": 1}
    scores = pl.DataFrame({"span_idx": [0, 1, 1, 7], "topic_id": ["t", None, None, "t"],
                           "topic_name": ["T", None, None, None], "relevance": [0.5, 1.2, float("nan"), 0.1]})
    assert validation.topic_score_problems(scores, pl.DataFrame({"span_idx": [0, 1, 2]})) == {
        "unknown_span_idx": 1, "spans_scored_twice": 1, "relevance_outside_unit_interval": 2, "topic_without_name": 1}
    assert validation.topic_score_problems(scores.head(1), pl.DataFrame({"span_idx": [0, 1]})) == {}
    df = pl.DataFrame({"text_span": ["a"], "relevance": [1.5]})
    assert validation.schema_problems(df, {"text_span": (pl.String,), "doc_id": (pl.String,)},
                                      unit_interval=("relevance",)) == ["missing column doc_id",
                                                                        "relevance outside [0, 1]"]


def test_file_without_a_row_is_unaccounted(run):
    inv = pl.read_parquet(run["home"] / "assets" / "raw_texts" / "newsletters.parquet")
    assert validation.unaccounted_files(run["corpus"] / "newsletters", inv) == []
    first = inv["path"][0]
    assert validation.unaccounted_files(run["corpus"] / "newsletters", inv.filter(pl.col("path") != first)) == [first]


def test_rematerializing_partitions_is_idempotent(run):
    home = run["home"]
    paths = [home / "assets" / a / "support_tickets.parquet" for a in ("raw_texts", "spans", "span_embeddings",
                                                                        "span_clusters")]
    tokens = home / "token_embeddings" / "support_tickets.npz"
    before = [pl.read_parquet(p) for p in paths]
    token_bytes = np.load(tokens)["vectors"].copy()
    for selection in (PER_SOURCE, [span_clusters]):
        assert dg.materialize(run["everything"], selection=selection, partition_key="support_tickets",
                              instance=run["instance"], resources=run["resources"]).success
    after = [pl.read_parquet(p) for p in paths]
    assert all(a.equals(b) for a, b in zip(before, after))
    assert np.array_equal(np.load(tokens)["vectors"], token_bytes)


def test_killed_write_leaves_previous_partition_intact(run, monkeypatch):
    """A run that dies while writing spans keeps the old file and leaves no temp behind."""
    path = run["home"] / "assets" / "spans" / "newsletters.parquet"
    before = path.read_bytes()
    original = pl.DataFrame.write_parquet

    def dies_mid_write(self, file, *args, **kwargs):
        original(self.head(3), file, *args, **kwargs)  # part of the data is on disk ...
        raise KeyboardInterrupt("killed mid-write")    # ... when the process is killed

    monkeypatch.setattr(pl.DataFrame, "write_parquet", dies_mid_write)
    with pytest.raises(BaseException, match="killed mid-write"):
        dg.materialize([raw_texts, spans], selection=[spans], partition_key="newsletters",
                       instance=run["instance"], resources=run["resources"])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not validation_temps(path.parent)


def validation_temps(folder):
    from emerge.atomic import leftover_temps

    return leftover_temps(folder)


def test_single_run_backfill_covers_many_sources_in_one_step(run):
    """`--partition-range` style run: one step per asset for all sources, same files as per-source runs."""
    home = run["home"]
    before = {s: pl.read_parquet(home / "assets" / "span_embeddings" / f"{s}.parquet") for s in SOURCES}
    result = dg.materialize(run["everything"], selection=PER_SOURCE, instance=run["instance"],
                            resources=run["resources"],
                            tags={"dagster/asset_partition_range_start": SOURCES[0],
                                  "dagster/asset_partition_range_end": SOURCES[-1]})
    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert {"raw_texts", "spans", "span_embeddings"} <= steps
    mats = result.asset_materializations_for_node("span_embeddings")
    assert sorted(m.partition for m in mats) == SOURCES
    assert all(m.metadata["dagster/row_count"].value > 0 for m in mats)
    for s in SOURCES:
        assert pl.read_parquet(home / "assets" / "span_embeddings" / f"{s}.parquet").equals(before[s])
    substr = [e for e in result.get_asset_check_evaluations() if e.check_name == "spans_are_document_substrings"]
    assert substr and all(e.passed for e in substr)


def test_refit_keeps_cluster_ids_and_shows_the_mapping(run):
    first = {k: v.value for k, v in run["fit"].asset_materializations_for_node("hdbscan_clusters")[-1].metadata.items()}
    refit = dg.materialize(run["everything"], selection=[umap_projection, hdbscan_clusters], instance=run["instance"],
                           resources=run["resources"])
    meta = {k: v.value for k, v in refit.asset_materializations_for_node("hdbscan_clusters")[-1].metadata.items()}
    assert first["refit_of_previous"] is False and meta["refit_of_previous"] is True
    assert meta["cluster_ids_kept"] == meta["clusters"] == first["clusters"] and meta["cluster_ids_new"] == ""
    assert "| cluster_id | raw_label | previous_id | similarity | status | title |" in meta["cluster_id_mapping"]
    assert "| matched |" in meta["cluster_id_mapping"] and "| new |" not in meta["cluster_id_mapping"]
