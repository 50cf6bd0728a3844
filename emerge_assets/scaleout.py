"""The distributed code location: the same assets, jobs and resources as `emerge_assets.definitions`,
with a distributed executor as every job's default and the asset values on any fsspec URL.

    dagster-webserver -m emerge_assets.scaleout      # plus deploy/production/dagster.yaml as the instance

Nothing here changes an asset. Chosen by environment variables, read at import (the run process,
every celery worker and every k8s step pod import this module, so give them the same values):

  EMERGE_EXECUTOR        celery (default) | k8s | multiprocess
  EMERGE_CELERY_BROKER   celery broker URL (default redis://localhost:6379/0)
  EMERGE_CELERY_BACKEND  celery result backend (default: the broker URL)
  EMERGE_ASSETS_URL      where the Parquet IO manager keeps asset values: a local folder or an
                         fsspec URL such as s3://bucket/emerge/assets (needs `pip install s3fs`);
                         default $EMERGE_HOME/assets
  EMERGE_HOME, EMERGE_INPUT_ROOT, EMERGE_TOPICS_FILE   as for emerge_assets.definitions; EMERGE_HOME
                         (datasets, token embeddings, the fitted clustering) is a POSIX path, so on
                         several machines it must be a shared volume (NFS/EFS/Filestore, a RWX PVC).

The optional dependencies come with `pip install -e ".[scaleout]"` (celery, Postgres); the k8s
executor needs `pip install dagster-k8s` (untested here, see deploy/k8s/).
"""

import os
from pathlib import Path

import dagster as dg

from emerge_assets import definitions as local
from emerge_resources import ParquetIOManager

EXECUTOR = os.environ.get("EMERGE_EXECUTOR", "celery")
CELERY_BROKER = os.environ.get("EMERGE_CELERY_BROKER", "redis://localhost:6379/0")
CELERY_BACKEND = os.environ.get("EMERGE_CELERY_BACKEND", CELERY_BROKER)
ASSETS_URL = os.environ.get("EMERGE_ASSETS_URL", str(Path(local.EMERGE_HOME) / "assets"))


def build_executor(name: str = EXECUTOR) -> dg.ExecutorDefinition:
    if name == "celery":
        from dagster_celery import celery_executor

        # acks_late: a worker takes the next step only when it has finished the current one, so
        # concurrent runs spread over idle workers instead of queueing behind a busy one.
        return celery_executor.configured(
            {"broker": CELERY_BROKER, "backend": CELERY_BACKEND,
             "config_source": {"task_acks_late": True, "worker_prefetch_multiplier": 1}},
            name="emerge_celery")
    if name == "k8s":
        from dagster_k8s import k8s_job_executor  # untested here: see deploy/k8s/

        return k8s_job_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    raise ValueError(f"EMERGE_EXECUTOR={name!r}: expected celery, k8s or multiprocess")


def build_defs(executor: dg.ExecutorDefinition, assets_url: str = ASSETS_URL) -> dg.Definitions:
    """`local.defs` with another default executor and IO manager base path; everything else
    (assets, checks, jobs, sensors, schedules, other resources) is taken over unchanged."""
    base = local.defs
    return dg.Definitions(
        assets=base.assets, asset_checks=base.asset_checks, jobs=base.jobs, schedules=base.schedules,
        sensors=base.sensors, loggers=base.loggers, metadata=base.metadata,
        resources={**(base.resources or {}), "io_manager": ParquetIOManager(base_path=assets_url)},
        executor=executor)


defs = build_defs(build_executor())
