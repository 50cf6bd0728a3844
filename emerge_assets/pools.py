"""Dagster concurrency pools (limits are set per deployment, in dagster.yaml or the UI).

GPU_POOL: every asset that runs the transformer. With one GPU, `concurrency: pools: default_limit: 1`
(deploy/production/dagster.yaml) lets one such step run at a time across all runs and workers;
with N GPUs, `dagster instance concurrency set gpu N`.
"""

GPU_POOL = "gpu"
