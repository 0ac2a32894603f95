"""Real processes for fault tests: the test's own Redis, its own PostgreSQL cluster, Celery workers and
the API, each started, stopped, killed and restarted for real. No mocks.

Every process a harness object starts is recorded in ``REGISTRY``: ``wait_until`` prints the tail of
each one's log when it times out, and ``kill_leftovers()`` (called by the fixtures' teardown and at
exit) makes sure none survives the test session.
"""

from __future__ import annotations

import atexit
import glob
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
LOG_TAIL_CHARS = 3000
T = TypeVar("T")


# --------------------------------------------------------------------------------------------- utilities


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_fault(kind: str, message: str) -> None:
    """``print_fault("INJECTED", "SIGKILL to worker w1")`` / ``print_fault("VERIFIED", "...")``.
    Shown with ``pytest -s``; every fault test prints what it injects and what it verified."""
    print(f"{kind.upper()}: {message}", flush=True)


def injected(message: str) -> None:
    print_fault("INJECTED", message)


def verified(message: str) -> None:
    print_fault("VERIFIED", message)


def _tail(path: Path | None, chars: int = LOG_TAIL_CHARS) -> str:
    if path is None:
        return "(no log)"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"


def _set_pdeathsig() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _die_with_parent():
    """preexec_fn: SIGKILL the child if the pytest process dies without its teardown (Linux). The
    kernel fires it when the spawning *thread* exits, so only children spawned by the main thread get it."""
    return _set_pdeathsig if threading.current_thread() is threading.main_thread() else None


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def children(pid: int) -> list[int]:
    """Every child of ``pid``, whichever of its threads started it (`optibench serve` starts its
    worker from a supervising thread, billiard's pool replaces processes from one)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def forks(pid: int) -> list[int]:
    """The children of ``pid`` that run its own executable (a Celery worker's pool processes), not a
    command it runs for a moment (``uname``, ``ldconfig``)."""

    def executable(process: int) -> str | None:
        try:
            return os.readlink(f"/proc/{process}/exe")
        except OSError:
            return None

    own = executable(pid)
    return [child for child in children(pid) if own is not None and executable(child) == own]


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if _pid_alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if _pid_alive(p)]


# --------------------------------------------------------------------------------------------- registry


class _Registry:
    """Every harness object started in this pytest process (for log tails and the final sweep)."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        if item not in self.items:
            self.items.append(item)

    def discard(self, item: Any) -> None:
        if item in self.items:
            self.items.remove(item)

    def log_tails(self, chars: int = LOG_TAIL_CHARS) -> str:
        """Newest process first: where a long report is cut short, what is cut is the oldest."""
        parts = []
        for item in reversed(self.items):
            state = "alive" if item.alive else "down"
            parts.append(f"----- {item.describe()} ({state}) log {item.log_path}:\n{_tail(item.log_path, chars)}")
            if item.alive and hasattr(item, "sessions"):
                parts.append(f"----- {item.describe()} sessions in a transaction or a wait:\n{item.sessions()}")
        return "\n".join(parts) or "(no processes started)"

    def close_all(self) -> None:
        for item in reversed(list(self.items)):
            try:
                item.close()
            except Exception as exc:  # teardown must go on to the next one
                print(f"harness teardown: {item.describe()}: {type(exc).__name__}: {exc}", file=sys.stderr)
        self.items.clear()


REGISTRY = _Registry()


def kill_leftovers() -> None:
    REGISTRY.close_all()


atexit.register(kill_leftovers)


class GiveUp(Exception):
    """Raised by a ``wait_until`` predicate to stop waiting at once (e.g. the process died)."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that. An exception in the
    predicate counts as "not yet" (a process may be down on purpose), except ``GiveUp``, which fails
    at once. On failure, raise AssertionError with ``what``, the last value or exception, and the
    tail of every harness process's log."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except GiveUp as exc:
            raise AssertionError(f"gave up waiting for {what}: {exc}\n{REGISTRY.log_tails()}") from None
        except Exception as exc:  # noqa: BLE001
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    last_text = f"{type(last).__name__}: {last}" if isinstance(last, BaseException) else repr(last)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last: {last_text[:2000]}\n{REGISTRY.log_tails()}"
    )


# --------------------------------------------------------------------------------------------- Redis


class RedisServer:
    """The test's own ``redis-server`` on a free port, in a temp dir. ``stop()`` (SIGTERM, a clean
    shutdown), ``kill()`` (SIGKILL), ``start()`` again on the same port and dir, ``freeze()``/``thaw()``
    (SIGSTOP/SIGCONT: a broker that hangs instead of refusing). ``appendonly=True`` keeps queued
    messages across a restart (fsync ``appendfsync``); the default keeps nothing."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "always",
        binary: str = "redis-server",
    ) -> None:
        self.dir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="ob-redis-"))
        self._own_dir = directory is None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly, self.appendfsync, self.binary = appendonly, appendfsync, binary
        self.log_path = self.dir / "redis.log"
        self.process: subprocess.Popen | None = None
        REGISTRY.add(self)

    def describe(self) -> str:
        return f"redis-server :{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "notice",
        ]
        if self.appendonly:
            command += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        else:
            command += ["--appendonly", "no"]
        return command

    def start(self, timeout: float = 15) -> RedisServer:
        if self.alive:
            return self
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"redis-server on :{self.port} exited with {self.process.returncode}:\n{_tail(self.log_path)}"
                )
            if self.ping():
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"redis-server on :{self.port} did not answer PING in {timeout}s:\n{_tail(self.log_path)}")

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001
            return False

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2, socket_timeout=5)

    def stop(self, timeout: float = 10) -> None:
        """Clean shutdown (SIGTERM); SIGKILL if it hangs."""
        if not self.alive:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait(10)

    def restart(self, downtime_s: float = 0.0) -> RedisServer:
        self.stop()
        time.sleep(downtime_s)
        return self.start()

    def freeze(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGCONT)

    def queue_length(self, queue: str) -> int:
        client = self.client()
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        REGISTRY.discard(self)


# --------------------------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb, else the directory of initdb on PATH."""
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if candidates:
        return max(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresCluster:
    """The test's own PostgreSQL cluster: initdb in a temp dir, trust auth, 127.0.0.1 on a free port,
    its unix socket inside that dir. As root, every server command runs as the ``postgres`` OS user.

    ``start()``, ``stop(mode="fast"|"smart"|"immediate")``, ``restart()`` on the same port,
    ``kill()`` (SIGKILL to the postmaster and every backend: a crash), ``create_database()``,
    ``url`` for the app (``postgresql+psycopg://postgres@127.0.0.1:PORT/optibench``).

    ``template``: a stopped cluster whose data dir is copied instead of running initdb (see
    ``make_template``: initdb, database created and migrated once per session)."""

    def __init__(
        self,
        *,
        port: int | None = None,
        database: str = "optibench",
        os_user: str = "postgres",
        bin_dir: Path | None = None,
        fsync: bool = False,
        template: PostgresCluster | None = None,
        register: bool = True,
    ) -> None:
        self.bin = Path(bin_dir) if bin_dir else postgres_bin_dir()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH")
        self.port = port or free_port()
        self.database = database
        self.as_root = os.geteuid() == 0
        self.os_user = os_user
        self.fsync = fsync
        # not under pytest's tmp_path: that is 0700 root, and the server runs as another user
        self.base = Path(tempfile.mkdtemp(prefix="ob-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log_path = self.base / "postgres.log"
        self.ctl_log = self.base / "pg_ctl.log"
        self.template = template
        self._initialized = False
        (self.base / "owner.pid").write_text(str(os.getpid()))  # for reap_stale_clusters()
        if register:
            REGISTRY.add(self)

    def describe(self) -> str:
        return f"postgres :{self.port}"

    # -- urls
    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={self.database} connect_timeout=3"

    # -- running commands as the server's user
    def _run(self, args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", self.os_user, "--", *args] if self.as_root else args
        with open(self.ctl_log, "ab") as out:
            out.write(f"$ {' '.join(args)}\n".encode())
            out.flush()
            result = subprocess.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                start_new_session=True,
            )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited with {result.returncode}:\n{_tail(self.ctl_log)}\n"
                f"server log:\n{_tail(self.log_path)}"
            )
        return result

    def init(self) -> PostgresCluster:
        if self._initialized:
            return self
        self.socket_dir.mkdir()
        self.log_path.touch()
        self.ctl_log.touch()
        if self.as_root:
            shutil.chown(self.base, self.os_user, self.os_user)
            for path in (self.socket_dir, self.log_path, self.ctl_log):
                shutil.chown(path, self.os_user, self.os_user)
        if self.template is not None:
            if self.template.alive or not (self.template.data / "PG_VERSION").exists():
                raise AssertionError("a template cluster must be initialized and stopped")
            # cp -a keeps the owner (postgres) and the 0700 mode the server insists on
            subprocess.run(["cp", "-a", str(self.template.data), str(self.data)], check=True, timeout=120)
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        else:
            self._run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout=120,
            )
        # the last setting of a name wins, so a copied template's port and socket are replaced
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            f"fsync = {'on' if self.fsync else 'off'}",
            "full_page_writes = on",
            "max_connections = 200",
            "log_min_messages = warning",
            "log_connections = off",
        ]
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# optibench fault harness\n" + "\n".join(conf) + "\n")
        self._initialized = True
        return self

    def start(self, timeout: float = 30) -> PostgresCluster:
        self.init()
        if self.alive:
            return self
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(timeout)),
            ],
            timeout=timeout + 10,
        )
        wait_until(self.is_ready, timeout, f"pg_isready on :{self.port}", interval=0.1)
        return self

    def is_ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-t", "1"],
            capture_output=True,
            timeout=10,
        )
        return result.returncode == 0

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """``pg_ctl stop -m fast|smart|immediate``; escalates to SIGKILL if it does not stop in time."""
        if not self.alive:
            return
        result = self._run(
            [str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout))],
            timeout=timeout + 10,
            check=False,
        )
        if result.returncode != 0 or self.alive:
            self.kill()

    def restart(self, mode: str = "fast", downtime_s: float = 0.0) -> PostgresCluster:
        self.stop(mode)
        time.sleep(downtime_s)
        return self.start()

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def alive(self) -> bool:
        pid = self.postmaster_pid
        return pid is not None and _pid_alive(pid)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once (a crash); the next start recovers."""
        pid = self.postmaster_pid
        if pid is None or not _pid_alive(pid):
            return
        victims = [pid, *children(pid)]
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        left = _wait_gone(victims, 10)
        if left:
            raise AssertionError(f"postgres processes {left} survived SIGKILL")
        # a killed postmaster may linger as a zombie (nobody reaps it here), and PostgreSQL's
        # "is the old postmaster alive" check (kill(pid, 0)) counts zombies: drop the stale lock files
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for stale in (f".s.PGSQL.{self.port}.lock", f".s.PGSQL.{self.port}"):
            (self.socket_dir / stale).unlink(missing_ok=True)

    def connect(self, database: str | None = None, autocommit: bool = True):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=database or self.database,
            autocommit=autocommit,
            connect_timeout=3,
        )

    def sessions(self) -> str:
        """Every client session in a transaction or waiting, with what blocks it: a stalled job's
        locks show here."""
        try:
            with self.connect("postgres") as connection:
                rows = connection.execute(
                    "SELECT pid, datname, state, wait_event_type, wait_event, pg_blocking_pids(pid), "
                    "round(extract(epoch FROM now() - xact_start)::numeric, 1), left(query, 160) "
                    "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                    "AND (xact_start IS NOT NULL OR wait_event_type = 'Lock') ORDER BY xact_start"
                ).fetchall()
        except Exception as exc:  # noqa: BLE001 - a report must not fail on a server that is down
            return f"(unreadable: {type(exc).__name__}: {exc})"
        header = "pid db state wait_type wait blocked_by xact_s query"
        return "\n".join([header, *(" | ".join(map(str, row)) for row in rows)]) if rows else "(none)"

    def create_database(self, name: str | None = None) -> str:
        name = name or self.database
        with self.connect("postgres") as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def close(self) -> None:
        try:
            if self.alive:
                self.stop("immediate", timeout=10)
        finally:
            if self.alive:
                self.kill()
            shutil.rmtree(self.base, ignore_errors=True)
            REGISTRY.discard(self)


def reap_stale_clusters() -> list[Path]:
    """Stop and remove the clusters of test sessions that died without their teardown (pytest
    SIGKILLed: the postmaster is not our child, so it would outlive us). Returns what was removed."""
    removed = []
    for base in Path(tempfile.gettempdir()).glob("ob-pg-*"):
        try:
            owner = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            owner = None
        if owner is not None and (owner == os.getpid() or _pid_alive(owner)):
            continue
        if owner is None and time.time() - base.stat().st_mtime < 60:
            continue  # being created right now
        stale = PostgresCluster.__new__(PostgresCluster)
        stale.base, stale.data, stale.socket_dir = base, base / "data", base / "sock"
        stale.port = 0
        try:
            stale.port = int(
                next(
                    line.split("=")[1]
                    for line in reversed((stale.data / "postgresql.conf").read_text().splitlines())
                    if line.startswith("port =")
                )
            )
        except (OSError, StopIteration, ValueError):
            pass
        try:
            stale.kill()
        except Exception as exc:  # noqa: BLE001
            print(f"reap_stale_clusters: {base}: {exc}", file=sys.stderr)
            continue
        shutil.rmtree(base, ignore_errors=True)
        removed.append(base)
    return removed


def make_template(database: str = "optibench") -> PostgresCluster:
    """A cluster initialized once, its database created and migrated with ``optibench db upgrade``,
    then stopped: ``PostgresCluster(template=...)`` copies it (much faster than initdb + migrate).
    Not registered: the caller closes it."""
    template = PostgresCluster(database=database, register=False)
    try:
        template.start()
        template.create_database()
        data_dir = template.base / "app"
        migrate(service_env(template.url, "redis://127.0.0.1:1/0", data_dir))
        template.stop("fast")
    except BaseException:
        template.close()
        raise
    return template


def migrate(env: dict[str, str]) -> None:
    """``python -m optibench.cli db upgrade`` with ``env``."""
    result = subprocess.run(
        [sys.executable, "-m", "optibench.cli", "db", "upgrade"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"optibench db upgrade failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


# --------------------------------------------------------------------------------------------- app processes


def service_env(
    database_url: str,
    broker_url: str,
    data_dir: Path,
    *,
    queue: str | None = None,
    flush_interval_s: float = 0.2,
    **overrides: Any,
) -> dict[str, str]:
    """The environment of the API and the workers: the process's own, OPTIBENCH_* replaced.
    ``overrides`` are settings names (``lease_timeout_s=5``) or full variable names."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIBENCH_")}
    env.update(
        {
            "OPTIBENCH_DATABASE_URL": database_url,
            "OPTIBENCH_BROKER_URL": broker_url,
            "OPTIBENCH_QUEUE": queue or f"faults-{uuid.uuid4().hex[:10]}",
            "OPTIBENCH_DATA_DIR": str(data_dir),
            "OPTIBENCH_FLUSH_INTERVAL_S": str(flush_interval_s),
            "PYTHONUNBUFFERED": "1",
        }
    )
    for key, value in overrides.items():
        name = key if key.isupper() else f"OPTIBENCH_{key.upper()}"
        env[name] = str(value)
    return env


class _GroupProcess:
    """A child started in its own session/process group, logging to a file."""

    name = "process"

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        REGISTRY.add(self)

    def describe(self) -> str:
        return self.name

    def _spawn(self, command: list[str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        self.pgid = self.process.pid  # start_new_session: the leader's pid is the group id

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def group(self) -> list[int]:
        """Every live process of its group (the leader and, for a worker, its pool children)."""
        return group_pids(self.pgid) if self.process else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def sigkill(self, timeout: float = 10) -> None:
        """SIGKILL the whole process group at once, and wait until every member is gone."""
        if self.process is None:
            return
        self.signal_group(signal.SIGCONT)  # a frozen process group dies just the same, but be explicit
        self.signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        left = _wait_gone(self.group(), timeout)
        if left:
            raise AssertionError(f"{self.describe()}: processes {left} survived SIGKILL")

    def terminate(self, timeout: float = 15, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` to the leader (SIGTERM: a warm shutdown), then SIGKILL the group if it has not ended
        in ``timeout`` s (or left children behind). Returns the leader's exit code."""
        if self.process is None:
            return None
        if self.alive:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        code = self.process.poll()
        if self.alive or _wait_gone(self.group(), 5):
            self.sigkill()
        return code

    def freeze(self) -> None:
        """SIGSTOP the group: the process hangs (no heartbeats, no acks) without its sockets closing."""
        self.signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal_group(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and (self.alive or self.group()):
            self.sigkill()
        REGISTRY.discard(self)


class WorkerProcess(_GroupProcess):
    """A Celery worker: ``python -m celery -A worker.celery_app worker --concurrency N -n NAME@%h``
    (``via_cli=True``: ``python -m optibench.cli worker``), in its own process group.
    ``sigkill()`` kills the group (main process and prefork children), ``kill_pool()`` only the
    children (the training process), ``terminate()`` a warm shutdown."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        name: str | None = None,
        concurrency: int = 1,
        via_cli: bool = False,
        extra_args: Iterable[str] = (),
    ) -> None:
        super().__init__(env, log_path)
        self.node = name or f"faults-{uuid.uuid4().hex[:8]}"
        self.name = f"worker {self.node}"
        self.concurrency = concurrency
        self.via_cli = via_cli
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        if self.via_cli:
            return [sys.executable, "-m", "optibench.cli", "worker", "--concurrency", str(self.concurrency)]
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(self.concurrency),
            "-n",
            f"{self.node}@%h",
            *self.extra_args,
        ]

    def start(self, wait_ready: bool = True, timeout: float = 60) -> WorkerProcess:
        self._mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn(self.command())
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Until Celery logs ``... ready.`` (it is consuming); fails at once if the worker exits."""

        def ready() -> bool:
            if not self.alive:
                raise GiveUp(f"{self.describe()} exited with {self.returncode}")
            with open(self.log_path, "rb") as f:
                f.seek(self._mark)
                return b" ready." in f.read()

        wait_until(ready, timeout, f"{self.describe()} to be ready", interval=0.1)

    def pool_pids(self) -> list[int]:
        return forks(self.pid) if self.alive else []

    def kill_pool(self) -> list[int]:
        """SIGKILL only the prefork children (the training processes); the main process lives on."""
        pids = self.pool_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids


class ApiProcess(_GroupProcess):
    """``python -m optibench.cli serve --no-worker`` on a free port. Started when /healthz answers 200
    (not /readyz: readiness may be 503 on purpose while a dependency is down)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, port: int | None = None) -> None:
        super().__init__(env, log_path)
        self.port = port or free_port()
        self.name = f"api :{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60, wait: bool = True) -> ApiProcess:
        """``wait=False`` returns at once (start a worker meanwhile), then call ``wait_healthy()``."""
        self._spawn(
            [
                sys.executable,
                "-m",
                "optibench.cli",
                "serve",
                "--no-worker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
        )
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60) -> ApiProcess:
        def healthy() -> bool:
            if not self.alive:
                raise GiveUp(f"{self.describe()} exited with {self.returncode}")
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

        wait_until(healthy, timeout, f"{self.describe()} /healthz", interval=0.2)
        return self

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def get(self, path: str, timeout: float = 30) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=timeout)

    def readyz(self, timeout: float = 30) -> httpx.Response:
        return self.get("/readyz", timeout=timeout)

    def submit(self, spec: dict) -> str:
        response = httpx.post(f"{self.url}/api/v1/comparisons", json=spec, timeout=30)
        if response.status_code != 202:
            raise AssertionError(f"submit answered {response.status_code}: {response.text[:2000]}")
        return response.json()["id"]

    def comparison(self, comparison_id: str) -> dict:
        response = self.get(f"/api/v1/comparisons/{comparison_id}")
        response.raise_for_status()
        return response.json()


class ServeProcess(ApiProcess):
    """``python -m optibench.cli serve`` with its own worker, as a user runs the embedded default:
    the server (the group leader), the Celery worker it supervises, and that worker's pool processes."""

    def start(self, timeout: float = 60, wait: bool = True) -> ServeProcess:
        self.name = f"serve :{self.port}"
        self._spawn([sys.executable, "-m", "optibench.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)])
        if wait:
            self.wait_healthy(timeout)
        return self

    def worker_pids(self) -> list[int]:
        return children(self.pid) if self.alive else []

    def pool_pids(self) -> list[int]:
        return [child for worker in self.worker_pids() for child in forks(worker)]


# --------------------------------------------------------------------------------------------- SQL, read directly


def _sql(database_url: str, query: str, params: dict | None = None) -> list[Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    connect_args = {"connect_timeout": 5} if database_url.startswith("postgresql") else {}
    engine = create_engine(database_url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(query), params or {}))
    finally:
        engine.dispose()


def step_rows(database_url: str, run_id: str) -> list[tuple[int, float]]:
    """Every (step, loss) row of a run straight from SQL, in step order (independent of the API)."""
    rows = _sql(database_url, "SELECT step, loss FROM steps WHERE run_id = :r ORDER BY step", {"r": run_id})
    return [(int(step), float(loss)) for step, loss in rows]


def step_problems(rows: list[tuple[int, float]], expected: int | None = None) -> list[str]:
    """What is wrong with a run's rows: duplicate steps, gaps, not starting at 0, a wrong count,
    non-finite losses. Empty when the rows are 0..expected-1, each once."""
    steps = [s for s, _ in rows]
    problems = []
    seen, dups = set(), set()
    for s in steps:
        (dups if s in seen else seen).add(s)
    if dups:
        problems.append(f"duplicate steps {sorted(dups)[:20]}")
    if steps:
        want = set(range(0, max(steps) + 1))
        missing = sorted(want - seen)
        if missing:
            problems.append(f"{len(missing)} missing steps, first {missing[:20]}")
    if expected is not None and len(seen) != expected:
        problems.append(f"{len(seen)} distinct steps, expected {expected}")
    bad = [s for s, loss in rows if not math.isfinite(loss)]
    if bad:
        problems.append(f"non-finite losses at steps {bad[:20]}")
    return problems


def run_rows(database_url: str, comparison_id: str) -> list[dict[str, Any]]:
    """The comparison's runs straight from SQL: id, position, status, attempt, steps_done, steps_total,
    heartbeat_at, error."""
    rows = _sql(
        database_url,
        "SELECT id, position, status, attempt, steps_done, steps_total, heartbeat_at, error "
        "FROM runs WHERE comparison_id = :c ORDER BY position",
        {"c": comparison_id},
    )
    return [dict(row._mapping) for row in rows]


def submit(api: ApiProcess | str, spec: dict) -> str:
    """POST a comparison; its id (fails unless 202)."""
    url = api.url if isinstance(api, ApiProcess) else api
    response = httpx.post(f"{url}/api/v1/comparisons", json=spec, timeout=30)
    if response.status_code != 202:
        raise AssertionError(f"submit answered {response.status_code}: {response.text[:2000]}")
    return response.json()["id"]


# --------------------------------------------------------------------------------------------- one test's world


TERMINAL = ("succeeded", "failed", "cancelled")


class FaultEnv:
    """A fresh Redis + a fresh, migrated PostgreSQL + the env for the app's processes.
    ``start_api()`` / ``start_worker()`` add processes; ``close()`` removes everything."""

    def __init__(
        self,
        directory: Path,
        *,
        redis_appendonly: bool = False,
        postgres_template: PostgresCluster | None = None,
        **env_overrides: Any,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[_GroupProcess] = []
        self.api: ApiProcess | None = None
        self.redis = RedisServer(self.dir / "redis", appendonly=redis_appendonly)
        self.postgres = PostgresCluster(template=postgres_template)
        try:
            self.redis.start()
            self.postgres.start()
            if postgres_template is None:
                self.postgres.create_database()
            self.env = service_env(self.postgres.url, self.redis.url, self.dir / "data", **env_overrides)
            if postgres_template is None:
                self.migrate()
        except BaseException:
            self.close()
            raise

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def queue(self) -> str:
        return self.env["OPTIBENCH_QUEUE"]

    def migrate(self) -> None:
        migrate(self.env)

    def start_api(self, timeout: float = 60, *, wait: bool = True, **env_overrides: Any) -> ApiProcess:
        api = ApiProcess(self._merge(env_overrides), self.dir / "logs" / f"api-{len(self.processes)}.log")
        self.processes.append(api)
        api.start(timeout, wait=wait)
        if self.api is None or not self.api.alive:
            self.api = api
        return api

    def start_worker(
        self,
        name: str | None = None,
        *,
        wait_ready: bool = True,
        concurrency: int = 1,
        via_cli: bool = False,
        timeout: float = 60,
        **env_overrides: Any,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            self._merge(env_overrides),
            self.dir / "logs" / f"worker-{len(self.processes)}.log",
            name=name,
            concurrency=concurrency,
            via_cli=via_cli,
        )
        self.processes.append(worker)
        return worker.start(wait_ready, timeout)

    def set(self, **settings: Any) -> None:
        """Settings for the processes started from now on (``lease_timeout_s=5`` or full names)."""
        self.env.update(self._merge(settings))

    def _merge(self, overrides: dict[str, Any]) -> dict[str, str]:
        env = dict(self.env)
        for key, value in overrides.items():
            env[key if key.isupper() else f"OPTIBENCH_{key.upper()}"] = str(value)
        return env

    def _api(self) -> ApiProcess:
        if self.api is None:
            raise AssertionError("no API started: call fault_env.start_api() first")
        return self.api

    def submit(self, spec: dict) -> str:
        return submit(self._api(), spec)

    def comparison(self, comparison_id: str) -> dict:
        return self._api().comparison(comparison_id)

    def wait_for_comparison(self, comparison_id: str, timeout: float = 60, statuses: Iterable[str] = TERMINAL) -> dict:
        statuses = tuple(statuses)

        def done() -> dict | None:
            body = self.comparison(comparison_id)
            return body if body["status"] in statuses else None

        return wait_until(done, timeout, f"comparison {comparison_id} to reach {statuses}")

    def wait_for_runs(self, comparison_id: str, statuses: Iterable[str], timeout: float = 60) -> list[dict[str, Any]]:
        """Until every run of the comparison has one of ``statuses``, read from SQL (no API needed)."""
        statuses = tuple(statuses)

        def done() -> list[dict[str, Any]] | None:
            rows = self.run_rows(comparison_id)
            return rows if rows and all(r["status"] in statuses for r in rows) else None

        return wait_until(done, timeout, f"every run of {comparison_id} to reach {statuses} (SQL)")

    def wait_until(self, predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.2) -> T:
        return wait_until(predicate, timeout, what, interval=interval)

    def step_rows(self, run_id: str) -> list[tuple[int, float]]:
        return step_rows(self.database_url, run_id)

    def run_rows(self, comparison_id: str) -> list[dict[str, Any]]:
        return run_rows(self.database_url, comparison_id)

    def log_tails(self) -> str:
        return REGISTRY.log_tails()

    def close(self) -> None:
        for process in reversed(getattr(self, "processes", [])):
            try:
                process.close()
            except Exception as exc:  # noqa: BLE001
                print(f"harness teardown: {process.describe()}: {exc}", file=sys.stderr)
        for server in (getattr(self, "redis", None), getattr(self, "postgres", None)):
            if server is not None:
                try:
                    server.close()
                except Exception as exc:  # noqa: BLE001
                    print(f"harness teardown: {server.describe()}: {exc}", file=sys.stderr)
