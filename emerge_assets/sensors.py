"""The inbox sensor: new source folders become partitions, changed files re-run their source.

Each tick fingerprints every source folder under the input root (`emerge.inbox`: path, size
and mtime of every file; no file is read). The cursor keeps the fingerprints of the last tick:

* a folder with no partition yet adds a `document_source` partition (in the same tick as its
  run request, which Dagster accepts);
* a new or changed folder requests `embed_sources` for its partition with run key
  `<source>:<fingerprint>`, so the same files are never run twice, even if the cursor is reset;
  a folder the cursor has not seen but whose latest `raw_texts` was read from the same files
  (its `source_fingerprint` metadata) is not re-run either (e.g. after the demo or a backfill);
* a registered source whose folder disappeared is reported, never dropped: a warning in the
  tick log, an observation on its `raw_texts` partition (`source_folder_missing`), and the
  cursor's `missing` list. Its data stays in the dataset until you delete the partition.
The downstream stages follow by declarative automation (`emerge_assets.automation`).
"""

import json

import dagster as dg

from emerge.inbox import scan_inbox
from emerge_assets.partitions import document_source, latest_partition_metadata
from emerge_resources import EmergeStorage

EMBED_JOB = "embed_sources"
FINGERPRINT_TAG = "emerge/source_fingerprint"


def last_read_fingerprint(instance: dg.DagsterInstance, source: str) -> str | None:
    """`source_fingerprint` of the latest raw_texts materialization of `source`, if any."""
    value = latest_partition_metadata(instance, "raw_texts", source).get("source_fingerprint")
    return value.value if value is not None else None


@dg.sensor(job_name=EMBED_JOB, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
           description="Registers new source folders as document_source partitions and runs embed_sources "
                       "for sources whose files changed; reports source folders that disappeared.")
def source_inbox(context: dg.SensorEvaluationContext, storage: EmergeStorage) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = cursor.get("fingerprints", {})
    reported_missing = set(cursor.get("missing", []))
    registered = set(context.instance.get_dynamic_partitions(document_source.name))
    changes = scan_inbox(storage.input_root, seen, known=registered)

    to_register = sorted(set(changes.fingerprints) - registered)
    requests = []
    for source in changes.to_run:
        fingerprint = changes.fingerprints[source]
        if source not in seen and source in registered and last_read_fingerprint(context.instance,
                                                                                 source) == fingerprint:
            continue  # already materialized from exactly these files
        requests.append(dg.RunRequest(partition_key=source, run_key=f"{source}:{fingerprint}",
                                      tags={FINGERPRINT_TAG: fingerprint}))

    missing = [s for s in changes.removed if s in registered]
    events = []
    for source in sorted(set(missing) - reported_missing):
        folder = storage.source_dir(source)
        context.log.warning(f"source folder {folder} of partition {source!r} is gone; its data stays in the "
                            "dataset until the partition is deleted")
        events.append(dg.AssetObservation(asset_key="raw_texts", partition=source, metadata={
            "source_folder_missing": True, "folder": dg.MetadataValue.path(str(folder))}))
    for source in sorted(reported_missing & set(changes.fingerprints)):
        context.log.info(f"source folder of {source!r} is back")

    new_cursor = json.dumps({"fingerprints": changes.fingerprints, "missing": missing}, sort_keys=True)
    if not (requests or to_register or events):
        return dg.SensorResult(skip_reason=f"{len(changes.unchanged)} source(s) unchanged"
                               + (f"; folders missing: {', '.join(missing)}" if missing else ""),
                               cursor=new_cursor)
    context.log.info(f"new partitions: {to_register or 'none'}; runs for: {[r.partition_key for r in requests]}")
    return dg.SensorResult(
        run_requests=requests, cursor=new_cursor, asset_events=events,
        dynamic_partitions_requests=[document_source.build_add_request(to_register)] if to_register else [])
