"""A hard-killed run must not make later runs hang (emerge_assets.stale_runs).

Real SQLite instances with the repo's dagster.yaml (pool `gpu`, limit 1), no model: the pooled step is a
stub. The subprocess tests kill or interrupt a real `execute_watched` run, as the demo runs them.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from emerge_assets import stale_runs
from emerge_assets.pools import GPU_POOL

REPO = Path(__file__).resolve().parents[1]

# One pooled asset named like the demo's; it writes `marker` when it holds the slot, then sleeps.
RUN_SCRIPT = '''
import logging, sys, time
from pathlib import Path

import dagster as dg

from emerge_assets import stale_runs

home, marker, sleep_s = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
logging.getLogger("emerge_assets").setLevel(logging.INFO)
stale_runs.WAIT_LOG_INTERVAL_S = 1.0


@dg.asset(pool="gpu")
def span_embeddings() -> None:
    marker.write_text("holding the gpu slot")
    time.sleep(sleep_s)


defs = dg.Definitions(assets=[span_embeddings], jobs=[dg.define_asset_job("embed_sources", [span_embeddings])])
with dg.DagsterInstance.from_config(home) as instance:
    try:
        stale_runs.execute_watched(defs.resolve_job_def("embed_sources"), instance)
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        sys.exit(130)
'''


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    return tmp_path


@pytest.fixture
def instance(home: Path):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default(GPU_POOL)
        assert instance.event_log_storage.get_concurrency_info(GPU_POOL).limit == 1
        yield instance


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(instance: dg.DagsterInstance, tags: dict[str, str],
         status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED) -> dg.DagsterRun:
    """A run record as the demo leaves it, holding the gpu slot for its span_embeddings step."""
    run = dg.DagsterRun(job_name="embed_sources", run_id=str(uuid.uuid4()), status=status, tags=tags)
    instance.add_run(run)
    assert instance.event_log_storage.claim_concurrency_slot(GPU_POOL, run.run_id, "span_embeddings").is_claimed
    return run


def _tags(pid: int, host: str | None = None) -> dict[str, str]:
    return {stale_runs.HOST_TAG: host or socket.gethostname(), stale_runs.PID_TAG: str(pid)}


def _holders(instance: dg.DagsterInstance) -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(GPU_POOL).claimed_slots]


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_a_dead_run_is_failed_its_slot_freed_and_named_in_a_warning(instance, caplog):
    dead = _run(instance, _tags(_dead_pid()))
    assert _holders(instance) == [dead.run_id]  # the state the issue describes: every later run waits

    with caplog.at_level(logging.WARNING, logger="emerge_assets.stale_runs"):
        assert stale_runs.fail_dead_runs(instance) == [dead.run_id]

    assert _status(instance, dead.run_id) == dg.DagsterRunStatus.FAILURE
    assert _holders(instance) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and dead.run_id in warnings[0] and "gpu" in warnings[0]
    assert instance.event_log_storage.claim_concurrency_slot(GPU_POOL, "next-run", "span_embeddings").is_claimed


def test_live_runs_other_hosts_and_untagged_runs_are_left_alone(instance, caplog):
    live = _run(instance, _tags(os.getpid()))
    with caplog.at_level(logging.WARNING, logger="emerge_assets.stale_runs"):
        assert stale_runs.fail_dead_runs(instance) == []
    instance.event_log_storage.free_concurrency_slots_for_run(live.run_id)
    elsewhere = _run(instance, _tags(_dead_pid(), host="another-host"))
    assert stale_runs.fail_dead_runs(instance) == []
    instance.event_log_storage.free_concurrency_slots_for_run(elsewhere.run_id)
    untagged = _run(instance, {})  # e.g. launched from the UI: nothing says where its process was
    assert stale_runs.fail_dead_runs(instance) == []

    for run in (live, elsewhere, untagged):
        assert _status(instance, run.run_id) == dg.DagsterRunStatus.STARTED
    assert _holders(instance) == [untagged.run_id]
    assert not caplog.records


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_a_pid_reused_by_a_later_process_is_not_the_run_worker(instance):
    assert stale_runs.process_alive(os.getpid(), stale_runs.run_worker_tags()[stale_runs.PROCESS_TAG])
    reused = _run(instance, {**_tags(os.getpid()), stale_runs.PROCESS_TAG: "another-boot:0"})
    assert stale_runs.fail_dead_runs(instance) == [reused.run_id]
    assert _status(instance, reused.run_id) == dg.DagsterRunStatus.FAILURE


def test_a_canceling_dead_run_becomes_canceled(instance):
    canceling = _run(instance, _tags(_dead_pid()), status=dg.DagsterRunStatus.CANCELING)
    assert stale_runs.fail_dead_runs(instance) == [canceling.run_id]
    assert _status(instance, canceling.run_id) == dg.DagsterRunStatus.CANCELED
    assert _holders(instance) == []


def test_a_finished_run_still_holding_a_slot_is_freed(instance, caplog):
    # e.g. force-terminated from the UI after its process died: nothing else would ever free the slot
    finished = _run(instance, {}, status=dg.DagsterRunStatus.CANCELED)
    with caplog.at_level(logging.WARNING, logger="emerge_assets.stale_runs"):
        assert stale_runs.fail_dead_runs(instance) == []
    assert _holders(instance) == []
    assert any(finished.run_id in r.getMessage() for r in caplog.records)


def test_a_ctrl_c_that_dagster_swallowed_outside_a_step_stops_the_caller(instance):
    # Dagster's capture_interrupts handler only records a SIGINT and forgets it when the run ends:
    # without this the demo would go on with its next run after Ctrl+C.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        with pytest.raises(KeyboardInterrupt):
            with stale_runs.watch_slot_waits(instance, str(uuid.uuid4())):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    with stale_runs.watch_slot_waits(instance, str(uuid.uuid4())):  # no signal: no KeyboardInterrupt
        time.sleep(0.2)


def test_a_run_interrupted_before_it_started_does_not_stay_unfinished(instance):
    class InterruptedJob:  # Ctrl+C after Dagster created the run, before its SIGINT handler is in place
        def execute_in_process(self, instance: dg.DagsterInstance, run_id: str, tags: dict, **kwargs):
            instance.add_run(dg.DagsterRun(job_name="embed_sources", run_id=run_id, tags=tags))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stale_runs.execute_watched(InterruptedJob(), instance)
    (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.CANCELED and run.tags[stale_runs.PID_TAG] == str(os.getpid())


def _start_run(home: Path, tmp_path: Path, sleep_s: float) -> tuple[subprocess.Popen, Path, Path]:
    marker, log = tmp_path / "step_started", tmp_path / "run.log"
    script = tmp_path / "run_embed.py"
    script.write_text(RUN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(home)}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(home), str(marker), str(sleep_s)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, marker, log


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"run process: rc={proc.poll()}\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def test_a_sigkilled_run_no_longer_blocks_the_next_one(home, tmp_path, instance, caplog):
    proc, marker, log = _start_run(home, tmp_path, sleep_s=600)
    _wait_for(marker.exists, proc, log)
    proc.send_signal(signal.SIGKILL)  # as an OOM kill or a power cut would
    proc.wait(timeout=10)
    (killed,) = instance.get_runs()
    assert killed.status == dg.DagsterRunStatus.STARTED and _holders(instance) == [killed.run_id]

    with caplog.at_level(logging.WARNING, logger="emerge_assets.stale_runs"):
        assert stale_runs.fail_dead_runs(instance) == [killed.run_id]  # what the demo does before its runs
    assert _status(instance, killed.run_id) == dg.DagsterRunStatus.FAILURE
    assert any(killed.run_id in r.getMessage() for r in caplog.records)

    @dg.asset(pool=GPU_POOL, name="span_embeddings")
    def quick() -> int:
        return 1

    job = dg.Definitions(assets=[quick], jobs=[dg.define_asset_job("embed_sources", [quick])]).resolve_job_def(
        "embed_sources")
    assert stale_runs.execute_watched(job, instance).success  # gets the slot instead of waiting forever
    assert _holders(instance) == []


def test_a_wait_for_the_slot_is_logged_and_ctrl_c_stops_the_run(home, tmp_path, instance):
    assert stale_runs.WAIT_LOG_INTERVAL_S <= 30  # the shipped interval (the subprocess below uses 1 s)
    holder = _run(instance, _tags(os.getpid()))  # alive (this test), so it keeps the slot
    proc, marker, log = _start_run(home, tmp_path, sleep_s=0)
    waiting = f"waiting for a free 'gpu' slot held by run {holder.run_id}"
    _wait_for(lambda: log.read_text().count(waiting) >= 2, proc, log)  # WAIT_LOG_INTERVAL_S = 1 there
    assert "INFO emerge_assets.stale_runs run " in log.read_text()

    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"Ctrl+C did not stop the waiting run\n{log.read_text()[-4000:]}")
    assert rc == 130 and time.monotonic() - t0 < 15 and not marker.exists()

    (waiter,) = [run for run in instance.get_runs() if run.run_id != holder.run_id]
    assert waiter.status == dg.DagsterRunStatus.CANCELED
    info = instance.event_log_storage.get_concurrency_info(GPU_POOL)
    assert [p.run_id for p in info.pending_steps] == [holder.run_id]  # the canceled run's claim is gone
    assert _status(instance, holder.run_id) == dg.DagsterRunStatus.STARTED
