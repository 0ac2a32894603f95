"""Real processes: `optibench serve` (uvicorn plus a Celery worker it supervises), as a user runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from db.migrate import upgrade
from tests.conftest import empty_postgres_database

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Every child of ``pid``, whichever thread started it (serve starts its worker from a thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*") if Path(f"/proc/{pid}/task").exists() else []:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


@dataclass
class Service:
    url: str
    process: subprocess.Popen
    log: Path
    backend: str

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def wait_for(self, comparison_id: str, timeout_s: float = 180) -> dict:
        deadline = time.monotonic() + timeout_s
        with self.client as client:
            while time.monotonic() < deadline:
                body = client.get(f"/api/v1/comparisons/{comparison_id}").json()
                if body["status"] in ("succeeded", "failed", "cancelled"):
                    return body
                time.sleep(0.3)
        raise AssertionError(f"comparison {comparison_id} did not finish in {timeout_s}s: {body}\n{self.log_tail()}")

    def log_tail(self, chars: int = 6000) -> str:
        """The log without the test's own polling requests."""
        lines = [line for line in self.log.read_text().splitlines() if '"GET /api/v1/' not in line]
        return "\n".join(lines)[-chars:]


def start_service(backend: str, env_overrides: dict[str, str], data_dir: Path) -> Service:
    port = _free_port()
    env = {
        **os.environ,
        "OPTIBENCH_DATA_DIR": str(data_dir),
        "OPTIBENCH_PORT": str(port),
        "OPTIBENCH_FLUSH_INTERVAL_S": "0.2",
        "OPTIBENCH_QUEUE": f"optibench-test-{uuid.uuid4().hex[:8]}",
        **env_overrides,
    }
    for key in ("OPTIBENCH_DATABASE_URL", "OPTIBENCH_BROKER_URL"):
        if key not in env_overrides:
            env.pop(key, None)
    cli = [sys.executable, "-m", "optibench.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, cwd=REPO, capture_output=True)
    log = data_dir / "serve.log"
    process = subprocess.Popen([*cli, "serve"], env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"optibench serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return Service(f"http://127.0.0.1:{port}", process, log, backend)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"optibench serve did not become ready:\n{log.read_text()[-3000:]}")


def stop_service(service: Service) -> tuple[int, list[int]]:
    """Ctrl-C, as a user would; returns the exit code and the worker pids that were running."""
    workers = _children(service.process.pid)
    service.process.send_signal(signal.SIGINT)
    try:
        code = service.process.wait(30)
    except subprocess.TimeoutExpired:
        service.process.kill()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        raise
    return code, workers


@pytest.fixture(scope="module", params=["embedded", "postgres+redis"])
def service(request, tmp_path_factory):
    with contextlib.ExitStack() as stack:
        if request.param == "embedded":
            overrides: dict[str, str] = {}
        else:
            # a database of the module's own: the team's history (reuse, suite leaderboards) is the module's alone
            database_url = stack.enter_context(empty_postgres_database("optibench_e2e"))
            upgrade(database_url)
            broker_url = request.getfixturevalue("redis_url")
            overrides = {"OPTIBENCH_DATABASE_URL": database_url, "OPTIBENCH_BROKER_URL": broker_url}
        directory = tmp_path_factory.mktemp(f"serve-{request.param.replace('+', '-')}")
        svc = start_service(request.param, overrides, directory)
        yield svc
        if svc.process.poll() is None:
            stop_service(svc)
