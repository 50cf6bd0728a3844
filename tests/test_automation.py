"""Declarative automation on a real temporary instance via `evaluate_automation_conditions`."""

import datetime as dt
import shutil

import dagster as dg
import pytest

from emerge_assets.assets.documents import raw_texts
from emerge_assets.checks import CHECKS
from emerge_assets.definitions import ASSETS, JOBS, SENSORS, build_resources, defs
from tests.conftest import SAMPLE_CORPUS

UTC = dt.timezone.utc
SATURDAY = dt.datetime(2031, 1, 4, 12, tzinfo=UTC)   # REFIT_CRON ticks Sunday 03:00 UTC
PER_SOURCE_FOLLOWERS = ["spans", "span_embeddings", "topic_scores", "span_clusters"]


def requested(result, key: str) -> set:
    return set(result.get_requested_partitions(dg.AssetKey(key)))


def was_requested(result, key: str) -> bool:
    return result.get_num_requested(dg.AssetKey(key)) > 0


def report(instance, key: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


@pytest.fixture
def setup(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS / "newsletters", corpus / "newsletters")
    resources = build_resources(str(tmp_path / "home"), str(corpus))
    local_defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS, sensors=SENSORS, resources=resources)
    with dg.instance_for_test() as instance:
        yield {"defs": local_defs, "instance": instance, "resources": resources}


def evaluate(setup, cursor=None, when=None):
    return dg.evaluate_automation_conditions(defs=setup["defs"], instance=setup["instance"], cursor=cursor,
                                             evaluation_time=when)


def test_sensors_are_running_by_default_and_cover_every_condition():
    sensors = {s.name: s for s in defs.get_repository_def().sensor_defs}
    assert sensors["emerge_automation"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["source_inbox"].default_status == dg.DefaultSensorStatus.RUNNING
    assert "default_automation_condition_sensor" not in sensors  # ours covers every asset (that one starts STOPPED)


def test_new_raw_texts_pull_the_per_source_stages(setup):
    instance = setup["instance"]
    instance.add_dynamic_partitions("document_source", ["newsletters"])
    first = evaluate(setup)  # the first evaluation only records the starting state
    assert first.total_requested == 0
    assert dg.materialize([raw_texts], partition_key="newsletters", instance=instance,
                          resources=setup["resources"]).success
    result = evaluate(setup, first.cursor)
    assert requested(result, "spans") == requested(result, "span_embeddings") == {"newsletters"}
    assert requested(result, "topic_scores") == {"newsletters"}
    assert not was_requested(result, "raw_texts")           # the inbox sensor's job, not automation's
    # global assets wait until the per-source run has materialized (they cannot share its run)
    assert not was_requested(result, "umap_projection") and not was_requested(result, "span_clusters")
    again = evaluate(setup, result.cursor)
    assert again.total_requested == 0                       # requested once, not every tick
    for key in ("spans", "span_embeddings"):
        report(instance, key, "newsletters")
    # the first fit happens by itself once every registered source is embedded
    fit = evaluate(setup, again.cursor)
    assert was_requested(fit, "umap_projection") and was_requested(fit, "hdbscan_clusters")
    report(instance, "umap_projection")
    report(instance, "hdbscan_clusters")
    label = evaluate(setup, fit.cursor)
    assert requested(label, "span_clusters") == {"newsletters"}
    assert not was_requested(label, "umap_projection")      # fitted: from now on only the cron refits


def materialize_everything_runless(instance, sources):
    for key in ("raw_texts", "spans", "span_embeddings"):
        for s in sources:
            report(instance, key, s)
    report(instance, "umap_projection")
    report(instance, "hdbscan_clusters")
    for key in ("span_clusters", "topic_scores"):
        for s in sources:
            report(instance, key, s)
    report(instance, "curated_dataset")
    report(instance, "curated_topic_dataset")


def test_refit_waits_for_the_cron_tick_and_new_data(setup):
    instance = setup["instance"]
    instance.add_dynamic_partitions("document_source", ["a", "b"])
    materialize_everything_runless(instance, ["a", "b"])
    base = evaluate(setup, when=SATURDAY)
    # Saturday: new embeddings for source a, but no cron tick since the last evaluation
    report(instance, "span_embeddings", "a")
    sat = evaluate(setup, base.cursor, SATURDAY + dt.timedelta(hours=1))
    assert not was_requested(sat, "umap_projection")
    assert requested(sat, "span_clusters") == {"a"} and requested(sat, "topic_scores") == {"a"}
    # Monday: the Sunday tick passed, but nothing new arrived since it -> still no refit
    mon = evaluate(setup, sat.cursor, SATURDAY + dt.timedelta(days=2))
    assert not was_requested(mon, "umap_projection")
    # new data after the tick -> refit, HDBSCAN with it, and every source is relabelled
    report(instance, "spans", "b")
    report(instance, "span_embeddings", "b")
    refit = evaluate(setup, mon.cursor, SATURDAY + dt.timedelta(days=2, hours=1))
    assert was_requested(refit, "umap_projection") and was_requested(refit, "hdbscan_clusters")
    fitting = evaluate(setup, refit.cursor, SATURDAY + dt.timedelta(days=2, hours=1, minutes=1))  # fit runs
    assert not was_requested(fitting, "umap_projection")
    report(instance, "umap_projection")
    report(instance, "hdbscan_clusters")
    after = evaluate(setup, fitting.cursor, SATURDAY + dt.timedelta(days=2, hours=2))
    assert requested(after, "span_clusters") == {"a", "b"}  # the refit relabels every source
    assert not was_requested(after, "umap_projection")      # once per tick, not on every new file
    report(instance, "span_embeddings", "a")
    later = evaluate(setup, after.cursor, SATURDAY + dt.timedelta(days=3))
    assert not was_requested(later, "umap_projection")

