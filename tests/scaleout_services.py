"""Throw-away Redis, PostgreSQL and dagster-celery workers for tests/test_scaleout.py.

Everything listens on loopback only, on free ports, with data in a temporary folder that is
removed afterwards. PostgreSQL refuses to run as root, so as root its commands run as the
`postgres` user (created by the Debian package) via `runuser`.
"""

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / ".ci" / "install-scaleout-services"


class ServiceUnavailable(RuntimeError):
    """A service could not be started here (the test skips, unless EMERGE_REQUIRE_SCALEOUT=1)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise ServiceUnavailable(f"{what} not ready after {timeout:.0f}s\n{tail}")


def postgres_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def ensure_installed() -> None:
    """Install redis-server/postgresql with apt-get (the script does nothing when both are there)."""
    if shutil.which("redis-server") and postgres_bindir():
        return
    proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0 or not (shutil.which("redis-server") and postgres_bindir()):
        raise ServiceUnavailable(f"redis-server/postgresql missing and not installable: "
                                 f"{(proc.stderr or proc.stdout).strip()[-500:]}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a process started with start_new_session=True, and its children, by its group id."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Redis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.log = workdir / "redis.log"
        self.proc = None
        self.workdir = workdir

    def start(self) -> "Redis":
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceUnavailable("redis-server not found")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._ping, 20, "redis-server", self.log)
        return self

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            raise ServiceUnavailable(f"redis-server exited:\n{self.log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


class Postgres:
    """A private cluster: initdb into a temp dir, password auth over TCP on 127.0.0.1."""

    def __init__(self):
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.user, self.db = "dagster", "dagster"
        self.password = secrets.token_hex(8)
        self.as_postgres = os.geteuid() == 0
        # Outside pytest's tmp dirs: those are private to root and the postgres user must enter this one.
        self.datadir = Path(tempfile.mkdtemp(prefix="emerge-pg-"))
        self.started = False

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)

    def start(self) -> "Postgres":
        if self.bindir is None:
            raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
        if self.as_postgres:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServiceUnavailable("running as root and there is no 'postgres' user to run PostgreSQL as") from exc
            if not shutil.which("runuser"):
                raise ServiceUnavailable("running as root and runuser is missing")
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.datadir, 0o700)
        pwfile = self.datadir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_postgres:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        data = self.datadir / "data"
        proc = self._run(["initdb", "-D", str(data), "-U", self.user, f"--pwfile={pwfile}", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
        if proc.returncode != 0:
            raise ServiceUnavailable(f"initdb failed: {proc.stderr.strip()[-1500:]}")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.datadir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        proc = self._run(["pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.datadir / "postgres.log"),
                          "-w", "-t", "60", "start"])
        if proc.returncode != 0:
            log = self.datadir / "postgres.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise ServiceUnavailable(f"pg_ctl start failed: {proc.stderr.strip()[-800:]}\n{tail}")
        self.started = True
        proc = self._run(["createdb", "-h", str(self.datadir), "-p", str(self.port), "-U", self.user, self.db])
        if proc.returncode != 0:
            raise ServiceUnavailable(f"createdb failed: {proc.stderr.strip()[-800:]}")
        return self

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/production/dagster.yaml reads."""
        return {"EMERGE_PG_USER": self.user, "EMERGE_PG_PASSWORD": self.password, "EMERGE_PG_HOST": "127.0.0.1",
                "EMERGE_PG_PORT": str(self.port), "EMERGE_PG_DB": self.db}

    def stop(self) -> None:
        if self.started:
            self._run(["pg_ctl", "-D", str(self.datadir / "data"), "-m", "immediate", "-w", "stop"])
            self.started = False
        shutil.rmtree(self.datadir, ignore_errors=True)


class CeleryWorker:
    """`dagster-celery worker start` with one execution slot, logging to a file."""

    def __init__(self, name: str, config_yaml: Path, env: dict[str, str], logdir: Path):
        self.name, self.config_yaml, self.env = name, config_yaml, env
        self.log = logdir / f"worker-{name}.log"
        self.proc = None

    def start(self) -> "CeleryWorker":
        cli = Path(sys.executable).with_name("dagster-celery")
        self.proc = subprocess.Popen(
            [str(cli), "worker", "start", "-A", "dagster_celery.app", "-y", str(self.config_yaml), "-n", self.name,
             "--", "--concurrency=1", "--without-gossip", "--without-mingle"],
            env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise ServiceUnavailable(f"celery worker {self.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        return self.log.exists() and " ready." in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout=20)
