"""`optibench serve` and the worker it supervises, as a process manager treats them: SIGTERM stops
both; a worker that dies is started again, with a backoff, until it crashes too often; a server
killed outright takes its worker and pool processes with it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.conftest import _children, start_service

pytestmark = pytest.mark.e2e
SMALL_SPEC = {
    "name": "after a restart",
    "problem": {"function": {"name": "quadratic"}, "x0": [3.0]},
    "training": {"steps": 200},
    "optimizers": [{"name": "sgd", "params": {"lr": 0.1}}],
    "seeds": [0],
}


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate, timeout: float, what: str, service):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{service.log_tail()}")


def _worker_and_pool(service) -> tuple[int, list[int]] | None:
    workers = _children(service.process.pid)
    pool = [child for worker in workers for child in _children(worker)]
    return (workers[0], pool) if len(workers) == 1 and pool else None


def test_sigterm_stops_serve_its_worker_and_the_pool(tmp_path):
    service = start_service("embedded", {}, tmp_path)
    try:
        worker, pool = _wait(lambda: _worker_and_pool(service), 60, "the worker's pool process", service)
        service.process.send_signal(signal.SIGTERM)
        code = service.process.wait(30)
        assert code == 0, service.log_tail()
        assert _wait(lambda: not any(map(_alive, [worker, *pool])), 5, "worker and pool gone", service)
        assert "Warm shutdown" in service.log.read_text()
    finally:
        if service.process.poll() is None:
            service.process.kill()


def test_a_dead_worker_is_restarted_and_dies_with_a_killed_server(tmp_path):
    service = start_service("embedded", {"OPTIBENCH_LEASE_TIMEOUT_S": "5"}, tmp_path)
    try:
        worker, _ = _wait(lambda: _worker_and_pool(service), 60, "the worker's pool process", service)
        os.kill(worker, signal.SIGKILL)
        restarted, pool = _wait(
            lambda: (found := _worker_and_pool(service)) and found[0] != worker and found, 60, "a new worker", service
        )
        assert "the Celery worker exited with -9; starting a new one in 1 s" in service.log.read_text()
        with service.client as client:
            response = client.post("/api/v1/comparisons", json=SMALL_SPEC)
        assert response.status_code == 202, response.text
        assert service.wait_for(response.json()["id"], 120)["status"] == "succeeded"

        service.process.kill()  # no handler runs: the kernel ends the worker (PR_SET_PDEATHSIG), Celery its pool
        service.process.wait(10)
        assert _wait(lambda: not any(map(_alive, [restarted, *pool])), 10, "worker and pool gone", service)
    finally:
        if service.process.poll() is None:
            service.process.kill()


def test_serve_gives_up_on_a_worker_that_keeps_crashing(tmp_path):
    """Five crashes within a minute (here: killed as soon as it starts) stop the server with status 1,
    for its process manager to see, after backoffs doubling from OPTIBENCH_WORKER_RESTART_BACKOFF_S."""
    service = start_service("embedded", {"OPTIBENCH_WORKER_RESTART_BACKOFF_S": "0.1"}, tmp_path)
    killed: list[int] = []
    try:
        while service.process.poll() is None and len(killed) < 6:
            fresh = [pid for pid in _children(service.process.pid) if pid not in killed]
            for pid in fresh:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)
        code = service.process.wait(30)
        assert code == 1, service.log_tail()
        assert len(killed) == 5, killed
        log = service.log.read_text()
        assert "crashing 5 times in 60 s; stopping the server" in log
        assert [f"starting a new one in {delay} s" in log for delay in (0.1, 0.2, 0.4, 0.8)] == [True] * 4
    finally:
        if service.process.poll() is None:
            service.process.kill()
