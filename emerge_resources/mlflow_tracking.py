"""MLflow tracking as a Dagster resource (dagster-mlflow pins an older Dagster, so it is not used).

One MLflow run per training materialization, written through `MlflowClient` against an
explicit tracking URI: nothing depends on MLflow's process-global active run, so parallel
steps and tests cannot log into each other's runs.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field


def default_tracking_uri(emerge_home: str) -> str:
    """SQLite under the project's home: MLflow 3 refuses a bare file store."""
    path = Path(emerge_home).expanduser().resolve() / "mlflow" / "mlflow.db"
    return f"sqlite:///{path}"


@dataclass
class LoggedRun:
    run_id: str
    experiment_id: str
    url: str


class MlflowTracking(dg.ConfigurableResource):
    """Where training runs are tracked. Browse them with `mlflow ui --backend-store-uri <tracking_uri>`."""

    tracking_uri: str = Field(description="e.g. sqlite:////abs/path/mlflow.db or http://mlflow:5000")
    experiment_name: str = Field(default="emerge", description="MLflow experiment that holds the runs.")
    artifact_location: Optional[str] = Field(
        default=None, description="Artifact root for a new experiment; default: beside a sqlite store.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="Base URL of `mlflow ui`, for links.")

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _sqlite_dir(self) -> Optional[Path]:
        """The folder of a sqlite store (None for a server or other backend)."""
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri.removeprefix("sqlite:///")).parent
        return None

    def _artifact_root(self) -> Optional[str]:
        if self.artifact_location:
            return self.artifact_location
        store = self._sqlite_dir()
        return (store / "artifacts").as_uri() if store else None

    def experiment_id(self) -> str:
        client = self._client()
        store = self._sqlite_dir()
        if store:
            store.mkdir(parents=True, exist_ok=True)
        found = client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        return client.create_experiment(self.experiment_name, artifact_location=self._artifact_root())

    def log_run(self, *, run_name: str, params: dict, metrics: dict[str, float], tags: dict[str, str],
                artifacts: dict[str, Path], started_at: float | None = None) -> LoggedRun:
        """Create a finished run with params, metrics, tags and artifact folders; FAILED if logging breaks.

        `started_at` (epoch seconds) is when the work began, so the run's duration in the MLflow UI
        is the training's, not the few hundred milliseconds of logging."""
        from mlflow.entities import Metric, Param, RunTag

        client = self._client()
        experiment_id = self.experiment_id()
        run = client.create_run(experiment_id, run_name=run_name, tags=tags,
                                start_time=int(started_at * 1000) if started_at is not None else None)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
                             metrics=[Metric(k.replace("@", "_at_"), float(v), now, 0)
                                      for k, v in sorted(metrics.items())],
                             tags=[RunTag(k, str(v)) for k, v in tags.items()])
            for name, path in artifacts.items():
                path = Path(path)
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), artifact_path=name)
                else:
                    client.log_artifact(run_id, str(path), artifact_path=name)
        except Exception:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        return LoggedRun(run_id, experiment_id, f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")
