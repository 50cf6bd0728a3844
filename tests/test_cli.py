"""The `emerge` command: help with defaults, a run config checked whole before any work, status."""

import os
import subprocess
import sys
import tomllib

import pytest

from emerge.errors import ConfigError
from tests.conftest import REPO, SAMPLE_CORPUS


def emerge(*args: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"} | {"HF_HUB_OFFLINE": "1"} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "emerge_assets.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_console_script_is_declared_and_importable():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts["emerge"].split(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))


def test_help_at_every_level_shows_defaults():
    top = emerge("--help")
    assert top.returncode == 0 and all(cmd in top.stdout for cmd in ("curate", "ui", "status"))
    curate = emerge("curate", "--help")
    assert curate.returncode == 0 and "(default: .emerge_home)" in curate.stdout and "--skip-training" in curate.stdout
    assert "(default: 3000)" in emerge("ui", "--help").stdout


def test_a_bad_run_config_stops_curate_before_any_model_work(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("ops:\n  spans: {config: {min_len: 80, max_len: 64}}\n")
    proc = emerge("curate", str(SAMPLE_CORPUS), "--home", str(tmp_path / "home"), "--config", str(config))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ops.spans.min_len" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "home" / "token_embeddings").exists()


def test_status_of_a_home_without_runs_says_how_to_start(tmp_path):
    proc = emerge("status", "--home", str(tmp_path / "fresh"))
    assert proc.returncode == 0 and "no runs yet" in proc.stdout and "emerge curate" in proc.stdout


@pytest.mark.parametrize("content, field", [
    ("ops:\n  spans: {config: {min_len: 80, max_len: 64}}\n", "ops.spans.min_len"),
    ("ops:\n  spans: {config: {stride: many}}\n", "ops.spans.stride"),
    ("ops:\n  nonsense: {config: {}}\n", "config"),
    ("ops:\n  spans: {min_len: 8}\n", "config"),
    ("opz: {}\n", "config"),
    ("ops:\n  spans: {config: {min_len: [8}\n", "config"),
])
def test_run_config_files_are_validated_whole(tmp_path, content, field):
    from emerge_assets.definitions import ASSETS
    from emerge_assets.run_file import load_run_config

    (tmp_path / "run.yaml").write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_run_config(tmp_path / "run.yaml", ASSETS)
    assert exc.value.field == field


def test_a_valid_run_config_reaches_only_the_jobs_it_concerns(tmp_path):
    import dagster as dg

    from emerge_assets.definitions import ASSETS, CHECKS, JOBS, build_resources
    from emerge_assets.run_file import for_job, load_run_config

    (tmp_path / "run.yaml").write_text("ops:\n  spans: {config: {min_len: 8, max_len: 32}}\n"
                                       "  curated_dataset: {config: {quality_threshold: 0.4}}\n")
    config = load_run_config(tmp_path / "run.yaml", ASSETS)
    defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS,
                          resources=build_resources(str(tmp_path / "home"), str(SAMPLE_CORPUS)))
    assert set(for_job(config, defs.resolve_job_def("embed_sources"))["ops"]) == {"spans"}
    assert set(for_job(config, defs.resolve_job_def("export_dataset"))["ops"]) == {"curated_dataset"}


def test_a_launched_run_with_a_bad_later_config_fails_in_its_first_step(tmp_path, tiny_model_dir):
    """However a run is launched (UI, schedule, API), raw_texts checks every later step's config
    before reading anything: a bad `spans` config fails the run in raw_texts, naming the field."""
    import dagster as dg

    from emerge_assets.assets.documents import raw_texts, spans
    from emerge_assets.definitions import build_resources

    (tmp_path / "in" / "notes").mkdir(parents=True)
    (tmp_path / "in" / "notes" / "a.txt").write_text("A short note about rockets and fuel. " * 20)
    resources = build_resources(str(tmp_path / "home"), str(tmp_path / "in"), str(tiny_model_dir), device="cpu")
    bad = {"ops": {"spans": {"config": {"min_len": 80, "max_len": 64}}}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("document_source", ["notes"])
        result = dg.materialize([raw_texts, spans], partition_key="notes", instance=instance, resources=resources,
                                run_config=bad, raise_on_error=False)
        assert not result.success
        failed = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert [e.step_key for e in failed] == ["raw_texts"]
        assert "ops.spans.min_len" in failed[0].step_failure_data.error.cause.message
        assert not result.asset_materializations_for_node("raw_texts")
        good = dg.materialize([raw_texts, spans], partition_key="notes", instance=instance, resources=resources)
        assert good.success
