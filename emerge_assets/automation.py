"""Declarative automation: what updates by itself, and when the global clustering refits.

* Per-source stages (spans, span_embeddings, span_clusters, topic_scores) and the datasets are
  `eager`: they follow their inputs as soon as every input is present and none is running.
  `raw_texts` has no condition: the inbox sensor requests it when a source's files change.
* The global clustering (umap_projection) refits on `REFIT_CRON` (default Sunday 03:00 UTC),
  once new embeddings arrived after that tick (no new data, no refit), or when you
  materialize it (`fit_clusters`). It also fits once by itself the first time every
  registered source is embedded, so a fresh deployment does not wait for Sunday.
  hdbscan_clusters is eager on umap_projection; span_clusters is eager on hdbscan_clusters,
  so a refit relabels every source (ids kept stable by `emerge.discovery.cluster_ids`).

`automation_sensor` evaluates these conditions and is RUNNING by default (Dagster's implicit
`default_automation_condition_sensor` starts STOPPED), so `dagster dev` automates out of the box.
"""

import os

import dagster as dg

REFIT_CRON = os.environ.get("EMERGE_REFIT_CRON", "0 3 * * 0")

FOLLOW_INPUTS = dg.AutomationCondition.eager()

# eager & missing: the first fit, as soon as embeddings exist for every registered source.
FIRST_FIT = (dg.AutomationCondition.eager() & dg.AutomationCondition.missing()).with_label("first_fit")
REFIT = (dg.AutomationCondition.on_cron(REFIT_CRON) & ~dg.AutomationCondition.any_deps_in_progress()
         & ~dg.AutomationCondition.in_progress()).with_label(f"refit_on_cron({REFIT_CRON})") | FIRST_FIT

automation_sensor = dg.AutomationConditionSensorDefinition(
    "emerge_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates Emerge's automation conditions: per-source stages follow their inputs, "
                "the clustering refits on its cron.")
