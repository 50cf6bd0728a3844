"""Runs that would otherwise hang on a pool slot: dead holders, silent waits, and Ctrl+C while waiting.

The demo executes its runs in its own process (`execute_in_process`): no daemon, so no run monitoring.
A demo killed with SIGKILL (OOM, power cut) leaves its run STARTED in the instance, holding the only
`gpu` slot (dagster.yaml: `pools: default_limit: 1`), and every later run then waits for it forever.
Dagster itself does not help here:

* nothing fails a run whose process is gone without the daemon, and even the daemon's run monitoring
  does not free the slots of the runs it fails (only `run_monitoring: free_slots_after_run_end_seconds`
  does);
* the wait is reported once, as a DEBUG engine event ("Step blocked by limit for pool gpu"), then
  every 300 s;
* the in-process executor busy-polls the slot and never looks at the interrupt that its own SIGINT
  handler records, so Ctrl+C (and SIGTERM, which Dagster maps to it) does nothing while it waits.

Hence, for the runs that `execute_watched` starts:

* each run is tagged with the host, pid and process identity of its run worker (this process), so
  `fail_dead_runs` can tell, on this host only, that a STARTED run's process is gone. It fails such
  runs (CANCELING ones become CANCELED) and frees every slot they hold, with a WARNING naming each.
  A run from another host or one without these tags (UI, daemon, sensors) is never touched: there is
  no safe way to know its process is dead from here.
* a watcher thread polls the run's claims in the pools; while a step waits it logs at INFO every
  `WAIT_LOG_INTERVAL_S` which run holds the slot, and re-runs `fail_dead_runs` (a holder may die while
  we wait). Polling the concurrency tables is the one hook Dagster gives: the wait loop runs no user
  code and its engine events go to the run's DEBUG log only.
* Ctrl+C while a step waits: the watcher learns of the signal through `signal.set_wakeup_fd` (written
  by the interpreter whatever the Python handler is, so also under Dagster's capturing handler), marks
  the run CANCELING and raises KeyboardInterrupt in the main thread through a SIGUSR1 handler of ours.
  Dagster then ends the run CANCELED, frees its pending claims and re-raises. A Ctrl+C during a step
  is left to Dagster, which interrupts the step's code itself; one that lands between steps, which
  Dagster records and then forgets when the run ends, raises KeyboardInterrupt after the run, so the
  demo does not go on with its next run.
"""

import logging
import os
import select
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from emerge_assets.pools import GPU_POOL

try:  # Dagster's record of a SIGINT its capturing handler swallowed (private; see _raise_interrupt)
    from dagster._utils.interrupts import pop_captured_interrupt
except ImportError:  # pragma: no cover - a later Dagster; the run still stops, its teardown may be cut short
    def pop_captured_interrupt() -> bool:
        return False

log = logging.getLogger(__name__)

HOST_TAG = "emerge/run_host"
PID_TAG = "emerge/run_pid"
# boot id + start time of the pid: a pid reused by a later process (or after a reboot) is not "alive"
PROCESS_TAG = "emerge/run_process"

WAIT_LOG_INTERVAL_S = 20.0  # the issue asks for a sign of life at least every 30 s
_POLL_S = 1.0
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
_STOP_SIGNALS = {int(signal.SIGINT), int(signal.SIGTERM)}
_INTERRUPT_SIGNAL = getattr(signal, "SIGUSR1", None)  # None on Windows: Ctrl+C while waiting stays Dagster's


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) from /proc, or None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses
    return fields[0], fields[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_identity(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return f"{_boot_id()}:{stat[1]}" if stat else None


def run_worker_tags() -> dict[str, str]:
    """Tags naming this process as the run worker, for `fail_dead_runs` (see the module docstring)."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    identity = _process_identity(os.getpid())
    if identity:
        tags[PROCESS_TAG] = identity
    return tags


def process_alive(pid: int, identity: str | None = None) -> bool:
    """Whether `pid` is a running process on this host and, if `identity` is given, still the same one.

    Errs towards "alive": only a pid that does not exist, is a zombie, or now belongs to a process
    started later counts as dead.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    if stat[0] == "Z":
        return False
    return identity is None or f"{_boot_id()}:{stat[1]}" == identity


def local_worker_pid(run: dg.DagsterRun) -> int | None:
    """The pid of `run`'s worker when `run_worker_tags` tagged it on this host, else None."""
    pid = run.tags.get(PID_TAG, "")
    return int(pid) if run.tags.get(HOST_TAG) == socket.gethostname() and pid.isdigit() else None


def _slot_holders(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """run id -> the pools it holds a slot in or waits for (one entry per step)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    holders: dict[str, list[str]] = {}
    for pool, info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items():
        for slot in info.claimed_slots:
            holders.setdefault(slot.run_id, []).append(pool)
        for pending in info.pending_steps:
            if pending.assigned_timestamp is None:
                holders.setdefault(pending.run_id, []).append(f"{pool} (queued)")
    return holders


def _held(pools: Sequence[str] | None) -> str:
    return f"freed its pool slots ({', '.join(pools)})" if pools else "it held no pool slot"


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the in-progress runs whose run worker on this host is gone, free their slots; return their ids.

    Only runs tagged by `run_worker_tags` with this host's name are considered, and only those whose pid
    is not alive (`process_alive`); a live run is never touched. STARTING/STARTED runs become FAILURE,
    CANCELING ones CANCELED (what Dagster's run monitoring does with each). Also frees the slots still
    held by finished runs (e.g. force-terminated from the UI): a finished run has no worker left that
    would ever release them.
    """
    host = socket.gethostname()
    holders = _slot_holders(instance)
    done: list[str] = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS, tags={HOST_TAG: host})):
        run = record.dagster_run
        pid = local_worker_pid(run)
        if pid is None or process_alive(pid, run.tags.get(PROCESS_TAG)):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in IN_PROGRESS:
            continue  # finished meanwhile
        reason = (f"The run worker of this run (pid {pid} on {host}) is gone (killed, e.g. SIGKILL or out of "
                  f"memory) while the run was {current.status.value}; marked by emerge_assets.stale_runs.")
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, reason)
            outcome = "CANCELED"
        else:
            instance.report_run_failed(current, reason)
            outcome = "FAILURE"
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning("run %s (%s) was %s, but its process (pid %d on %s) is gone: marked it %s and %s",
                    run.run_id, run.job_name, current.status.value, pid, host, outcome,
                    _held(holders.pop(run.run_id, None)))
        done.append(run.run_id)
    for run_id, pools in holders.items():
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            log.warning("run %s (%s) is %s but still held pool slots: %s", run_id, run.job_name,
                        run.status.value, _held(pools))
    return done


def _describe_holder(instance: dg.DagsterInstance, run_id: str, step_key: str) -> str:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (step {step_key!r}; no such run in this instance)"
    where = run.tags.get(HOST_TAG)
    if where == socket.gethostname() and run.tags.get(PID_TAG):
        origin = f"pid {run.tags[PID_TAG]} on this host, alive"
    else:
        origin = (f"not checkable from here{' (host ' + where + ')' if where else ''}; if its process is gone: "
                  f"`dagster run delete {run_id}` frees the slot")
    return f"run {run_id} ({run.status.value}, {run.job_name}, step {step_key!r}; {origin})"


def _waiting_steps(instance: dg.DagsterInstance, run_id: str, pools: Sequence[str]) -> list[str]:
    """One line per step of `run_id` that waits for a slot in one of `pools`, naming who holds them."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    lines = []
    for pool, info in storage.get_concurrency_infos(list(pools)).items():
        claimed = {slot.step_key for slot in info.claimed_slots if slot.run_id == run_id}
        for pending in info.pending_steps:
            if pending.run_id != run_id or pending.step_key in claimed:
                continue
            others = [_describe_holder(instance, s.run_id, s.step_key) for s in info.claimed_slots]
            held = ", ".join(others) if others else "no run (other steps are ahead in the queue)"
            lines.append(f"step {pending.step_key!r} is waiting for a free {pool!r} slot held by {held} "
                         f"[limit {info.limit}]")
    return lines


def _read_signals(sock: socket.socket | None, timeout: float) -> set[int]:
    if sock is None:
        time.sleep(timeout)
        return set()
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return set()
    try:
        return set(sock.recv(64))
    except BlockingIOError:
        return set()


def _watch(instance: dg.DagsterInstance, run_id: str, pools: Sequence[str], log_every_s: float,
           signals: socket.socket | None, stop: threading.Event, interrupted: threading.Event) -> None:
    wait_started: float | None = None
    last_log = -float("inf")
    while not stop.is_set():
        if _read_signals(signals, _POLL_S) & _STOP_SIGNALS:
            interrupted.set()
        if stop.is_set():
            return
        try:
            waiting = _waiting_steps(instance, run_id, pools)
            if not waiting:
                wait_started, last_log = None, -float("inf")  # the next wait is reported at once
                continue
            wait_started = wait_started or time.monotonic()
            if interrupted.is_set() and _INTERRUPT_SIGNAL is not None and signals is not None:
                run = instance.get_run_by_id(run_id)
                if run is not None and not run.is_finished:
                    instance.report_run_canceling(run, "Interrupted (Ctrl+C) while waiting for a pool slot")
                log.warning("run %s: interrupted while waiting for a pool slot; canceling it", run_id)
                os.kill(os.getpid(), _INTERRUPT_SIGNAL)
                return
            if fail_dead_runs(instance):
                continue  # a dead holder's slot was freed: Dagster's next claim attempt gets it
            if time.monotonic() - last_log >= log_every_s:
                last_log = time.monotonic()
                for line in waiting:
                    log.info("run %s: %s (waiting %.0f s%s)", run_id, line, last_log - wait_started,
                             "; Ctrl+C stops the run" if signals is not None else "")
        except Exception:  # a locked SQLite read must not end the watch
            log.debug("slot watch of run %s: instance read failed", run_id, exc_info=True)


@contextmanager
def watch_slot_waits(instance: dg.DagsterInstance, run_id: str, pools: Sequence[str] = (GPU_POOL,),
                     log_every_s: float | None = None) -> Iterator[None]:
    """While the block runs, log the waits of run `run_id` for slots of `pools` and make Ctrl+C stop them.

    See the module docstring; `log_every_s` defaults to `WAIT_LOG_INTERVAL_S`. A Ctrl+C that Dagster's
    handler swallowed outside any step (it drops it when the run ends) raises KeyboardInterrupt once the
    block is done, so the caller stops instead of starting its next run. On a thread other than the main
    one only the logging works (signal handlers and the wakeup fd belong to the main thread).
    """
    log_every_s = WAIT_LOG_INTERVAL_S if log_every_s is None else log_every_s
    stop, interrupted = threading.Event(), threading.Event()
    on_main = threading.current_thread() is threading.main_thread() and _INTERRUPT_SIGNAL is not None
    reader = writer = None
    previous_fd, previous_handler = -1, None
    if on_main:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        delivered = threading.Event()

        def _raise_interrupt(signum: int, frame: Any) -> None:
            if not delivered.is_set():  # once: a second one could cut Dagster's clean-up short
                delivered.set()
                # Dagster re-raises a swallowed SIGINT at the next user-code boundary, which would be
                # the resources' teardown: consume it, this KeyboardInterrupt is that Ctrl+C.
                pop_captured_interrupt()
                raise KeyboardInterrupt

        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        previous_handler = signal.signal(_INTERRUPT_SIGNAL, _raise_interrupt)
    watcher = threading.Thread(target=_watch, name=f"slot-watch-{run_id[:8]}", daemon=True,
                               args=(instance, run_id, pools, log_every_s, reader, stop, interrupted))
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        if writer is not None:
            try:
                writer.send(b"\0")  # wake the watcher now rather than after its poll interval
            except OSError:
                pass
        watcher.join(timeout=10)
        if _read_signals(reader, 0) & _STOP_SIGNALS:  # arrived after the watcher's last read
            interrupted.set()
        if on_main:
            signal.set_wakeup_fd(previous_fd)
            signal.signal(_INTERRUPT_SIGNAL, previous_handler)
            for sock in (reader, writer):
                sock.close()
    if interrupted.is_set():
        log.warning("run %s: interrupted (Ctrl+C) outside a step; it ended %s, stopping here", run_id,
                    getattr(instance.get_run_by_id(run_id), "status", dg.DagsterRunStatus.NOT_STARTED).value)
        raise KeyboardInterrupt


def execute_watched(job: dg.JobDefinition, instance: dg.DagsterInstance, pools: Sequence[str] = (GPU_POOL,),
                    tags: Mapping[str, str] | None = None, **kwargs: Any) -> dg.ExecuteInProcessResult:
    """`job.execute_in_process` on `instance`, tagged with `run_worker_tags` and under `watch_slot_waits`.

    A run that the call leaves unfinished (Ctrl+C after Dagster created it but before it started is
    the usual case: NOT_STARTED forever otherwise) is marked CANCELED: nothing executes it any more.
    """
    run_id = str(uuid.uuid4())
    try:
        with watch_slot_waits(instance, run_id, pools):
            return job.execute_in_process(instance=instance, run_id=run_id,
                                          tags={**(tags or {}), **run_worker_tags()}, **kwargs)
    except BaseException:
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_canceled(run, "Interrupted before the run could finish (Ctrl+C).")
        raise
