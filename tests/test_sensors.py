"""The inbox sensor on a real temporary instance: new folders, changed files, removed folders."""

import json
import os
import shutil

import dagster as dg
import pytest

from emerge.inbox import scan_inbox, source_fingerprint
from emerge_assets.assets.documents import raw_texts
from emerge_assets.definitions import ASSETS, JOBS, SENSORS, build_resources
from emerge_assets.sensors import source_inbox
from tests.conftest import SAMPLE_CORPUS


def test_fingerprint_sees_added_edited_and_removed_files(tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    (src / "one.txt").write_text("hello")
    first = source_fingerprint(src)
    assert source_fingerprint(src) == first
    (src / "two.txt").write_text("more")
    second = source_fingerprint(src)
    assert second != first
    os.utime(src / "one.txt", ns=(1, 1))
    assert source_fingerprint(src) != second
    (src / "two.txt").unlink()
    changes = scan_inbox(tmp_path, {"a": second, "gone": "x"}, known={"also_gone"})
    assert changes.changed == ["a"] and changes.removed == ["also_gone", "gone"] and changes.new == []


@pytest.fixture
def inbox(tmp_path):
    corpus = tmp_path / "corpus"
    for source in ("newsletters", "support_tickets"):
        shutil.copytree(SAMPLE_CORPUS / source, corpus / source)
    resources = build_resources(str(tmp_path / "home"), str(corpus))
    defs = dg.Definitions(assets=ASSETS, jobs=JOBS, sensors=SENSORS, resources=resources)
    with dg.instance_for_test() as instance:
        state = {"cursor": None}

        def tick():
            """One sensor tick as the daemon runs it: evaluate, then apply partition requests."""
            # `with`: the context opens its own instance from the ref and must close it again
            with dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, cursor=state["cursor"],
                                         resources={"storage": resources["storage"]}) as context:
                data = source_inbox.evaluate_tick(context)
            for request in data.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            for event in data.asset_events or []:
                instance.report_runless_asset_event(event)
            state["cursor"] = data.cursor
            return data

        yield {"corpus": corpus, "instance": instance, "tick": tick, "resources": resources, "state": state}


def run_keys(data):
    return {r.partition_key: r.run_key for r in data.run_requests or []}


def test_new_folders_register_partitions_and_request_runs(inbox):
    data = inbox["tick"]()
    keys = run_keys(data)
    assert set(keys) == {"newsletters", "support_tickets"}
    fp = source_fingerprint(inbox["corpus"] / "newsletters")
    assert keys["newsletters"] == f"newsletters:{fp}"
    assert all(r.job_name in (None, "embed_sources") for r in data.run_requests)
    assert set(inbox["instance"].get_dynamic_partitions("document_source")) == {"newsletters", "support_tickets"}
    again = inbox["tick"]()
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert "unchanged" in again.skip_message


def test_changed_files_rerun_only_their_source_with_a_new_run_key(inbox):
    first = run_keys(inbox["tick"]())
    (inbox["corpus"] / "newsletters" / "late_arrival.txt").write_text("A late newsletter about compost and tomatoes.")
    data = inbox["tick"]()
    keys = run_keys(data)
    assert list(keys) == ["newsletters"] and keys["newsletters"] != first["newsletters"]
    assert not data.dynamic_partitions_requests
    (inbox["corpus"] / "field_notes").mkdir()
    (inbox["corpus"] / "field_notes" / "note.txt").write_text("Observed a heron at dawn.")
    data = inbox["tick"]()
    assert list(run_keys(data)) == ["field_notes"]
    assert list(data.dynamic_partitions_requests[0].partition_keys) == ["field_notes"]


def test_removed_folder_is_reported_once_and_kept(inbox):
    inbox["tick"]()
    shutil.rmtree(inbox["corpus"] / "support_tickets")
    data = inbox["tick"]()
    assert not data.run_requests and not data.dynamic_partitions_requests
    assert [(e.asset_key.to_user_string(), e.partition, e.metadata["source_folder_missing"].value)
            for e in data.asset_events] == [("raw_texts", "support_tickets", True)]
    assert json.loads(data.cursor)["missing"] == ["support_tickets"]
    assert "support_tickets" in inbox["instance"].get_dynamic_partitions("document_source")  # not dropped
    later = inbox["tick"]()
    assert not later.asset_events and "folders missing: support_tickets" in later.skip_message
    records = inbox["instance"].fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_texts"), asset_partitions=["support_tickets"]), limit=5)
    assert len(records.records) == 1


def test_a_source_already_read_from_the_same_files_is_not_rerun(inbox):
    """A lost cursor (or a deployment where the demo already ran) does not re-run unchanged sources."""
    inbox["instance"].add_dynamic_partitions("document_source", ["newsletters", "support_tickets"])
    assert dg.materialize([raw_texts], partition_key="newsletters", instance=inbox["instance"],
                          resources=inbox["resources"]).success
    data = inbox["tick"]()
    assert list(run_keys(data)) == ["support_tickets"]
