"""The MLflow resource against a real SQLite tracking store: a run whose logging breaks is left
FAILED, never RUNNING forever, and the error reaches the caller."""

import pytest

from emerge_resources.mlflow_tracking import MlflowTracking


def test_a_run_whose_logging_breaks_is_marked_failed_and_the_error_raised(tmp_path):
    from mlflow.tracking import MlflowClient

    tracking = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="t")
    good = tmp_path / "model"
    good.mkdir()
    (good / "weights.txt").write_text("w")
    logged = tracking.log_run(run_name="ok", params={"lr": 1e-3}, metrics={"ndcg@10": 0.5}, tags={"k": "v"},
                              artifacts={"model": good})
    with pytest.raises(Exception):
        tracking.log_run(run_name="broken", params={"lr": 1e-3}, metrics={"ndcg@10": 0.5}, tags={},
                         artifacts={"model": tmp_path / "missing.bin"})
    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    runs = {r.info.run_name: r for r in client.search_runs([logged.experiment_id])}
    assert runs["ok"].info.status == "FINISHED" and runs["ok"].data.metrics == {"ndcg_at_10": 0.5}
    assert runs["broken"].info.status == "FAILED"
    assert runs["broken"].data.params == {"lr": "0.001"}  # what was logged before the break stays
