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
    assert "(default: .emerge_home)" in emerge("status", "--help").stdout


@pytest.mark.parametrize("model", ["missing", "empty"])
def test_a_bad_model_stops_curate_with_one_line_before_any_work(tmp_path, model):
    (tmp_path / "empty").mkdir()
    proc = emerge("curate", str(SAMPLE_CORPUS), "--home", str(tmp_path / "home"), "--model", str(tmp_path / model))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "--model" in errors[0] and str(tmp_path / model) in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "home" / "token_embeddings").exists()


@pytest.mark.parametrize("layout, says", [("missing", "does not exist"), ("loose", "no source sub-folder"),
                                          ("empty", "is empty")])
def test_an_input_root_without_sources_stops_curate_with_one_line_saying_why(tmp_path, layout, says):
    root = tmp_path / "in"
    if layout != "missing":
        root.mkdir()
    if layout == "loose":
        (root / "a.txt").write_text("A note that should have been inside a source folder.")
    proc = emerge("curate", str(root), "--home", str(tmp_path / "home"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and says in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_ui_opens_dagster_on_the_homes_own_instance(tmp_path, monkeypatch, capsys):
    """`emerge ui` replaces itself with `dagster dev` on the workspace (code location "emerge"), with
    DAGSTER_HOME the home's own instance, and prints the MLflow UI command."""
    from emerge_assets import cli

    calls = []

    def fake_execv(path, argv):
        calls.append((path, argv, os.environ["DAGSTER_HOME"], os.environ["EMERGE_HOME"]))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    for name in ("DAGSTER_HOME", "EMERGE_HOME", "EMERGE_INPUT_ROOT"):  # `ui` sets them; restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit):
        cli.main(["ui", "--home", str(tmp_path / "run"), "--port", "3123"])
    (path, argv, dagster_home, emerge_home), = calls
    assert argv[1:] == ["dev", "-w", str(REPO / "workspace.yaml"), "-p", "3123"] and path.endswith("dagster")
    assert dagster_home == str(tmp_path / "run" / "dagster_home") and emerge_home == str((tmp_path / "run").resolve())
    assert (tmp_path / "run" / "dagster_home" / "dagster.yaml").exists()
    assert "mlflow ui --backend-store-uri sqlite:///" in capsys.readouterr().out
    assert "location_name: emerge" in (REPO / "workspace.yaml").read_text()


def test_a_bad_run_config_stops_curate_before_any_model_work(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("ops:\n  spans: {config: {min_len: 80, max_len: 64}}\n")
    proc = emerge("curate", str(SAMPLE_CORPUS), "--home", str(tmp_path / "home"), "--config", str(config))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ops.spans.min_len" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "home" / "token_embeddings").exists()


def test_status_names_failed_and_stuck_runs_and_whether_their_process_lives(tmp_path, monkeypatch):
    import socket
    import uuid

    import dagster as dg

    from emerge_assets.curate import use_dagster_home
    from emerge_assets.stale_runs import HOST_TAG, PID_TAG

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setenv("DAGSTER_HOME", "")  # `make test` exports the project's; the home's own is wanted here
    monkeypatch.delenv("DAGSTER_HOME")  # (and use_dagster_home's setting is undone after the test)
    home = use_dagster_home(tmp_path / "run")
    runs = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name, status, pid in (("failed", dg.DagsterRunStatus.FAILURE, None),
                                  ("killed", dg.DagsterRunStatus.STARTED, dead.pid),
                                  ("alive", dg.DagsterRunStatus.STARTED, os.getpid()),
                                  ("elsewhere", dg.DagsterRunStatus.STARTING, None)):
            tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)} if pid else {}
            runs[name] = str(uuid.uuid4())
            instance.add_run(dg.DagsterRun(job_name=f"job_{name}", run_id=runs[name], status=status, tags=tags))
    out = emerge("status", "--home", str(tmp_path / "run")).stdout
    line = {name: next(l for l in out.splitlines() if run_id[:8] in l) for name, run_id in runs.items()}
    assert "FAILURE" in line["failed"]
    assert "is gone" in line["killed"] and f"pid {dead.pid}" in line["killed"]
    assert f"running in pid {os.getpid()}" in line["alive"]
    assert "STARTING" in line["elsewhere"] and "not started by" in line["elsewhere"]
    assert "runs:      4 failed or unfinished" in out


def test_status_of_a_home_without_runs_says_how_to_start(tmp_path):
    proc = emerge("status", "--home", str(tmp_path / "fresh"))
    assert proc.returncode == 0 and "no runs yet" in proc.stdout and "emerge curate" in proc.stdout


@pytest.mark.parametrize("content, field, line", [
    ("ops:\n  spans: {config: {min_len: 80, max_len: 64}}\n", "ops.spans.min_len", 2),
    ("ops:\n  raw_texts:\n    config: {}\n  spans:\n    config:\n      min_len: 8\n      stride: many\n",
     "ops.spans.stride", 7),
    ("ops:\n  nonsense: {config: {}}\n", "config", None),
    ("ops:\n  spans: {min_len: 8}\n", "config", None),
    ("opz: {}\n", "config", None),
    ("ops:\n  spans: {config: {min_len: [8}\n", "config", 2),
])
def test_run_config_files_are_validated_whole(tmp_path, content, field, line):
    """The error names the field, the file and (where the file spells it out) its line."""
    from emerge_assets.definitions import ASSETS
    from emerge_assets.run_file import load_run_config

    (tmp_path / "run.yaml").write_text(content)
    with pytest.raises(ConfigError) as exc:
        load_run_config(tmp_path / "run.yaml", ASSETS)
    assert exc.value.field == field and str(tmp_path / "run.yaml") in str(exc.value)
    if line is not None:
        assert f"line {line}" in str(exc.value)


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
