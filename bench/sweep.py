"""A 1,000-run sweep of tiny runs, two ways. Through the real service: submitted over HTTP, one Celery task
per run (OPTIBENCH_VECTORIZE=false, so every run is claimed, trained and finished on its own), trained by
a worker on the embedded default (SQLite and its broker) and on PostgreSQL + Redis: runs finished per
second. And through the worker's write path alone (``leases.claim_run``, one
flush of ``leases.append_steps``, ``leases.finish_run``) by WORKERS threads at once, as that many
worker processes would: runs finished per second. Each claim and finish recomputes the comparison's
status, which once read every run (O(N²) over the sweep); the rate must hold up as N grows. The broker
is not on this path (a run's message is consumed before the claim), so the measure is the database's."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from bench.common import Result, fresh_databases, synthetic_columns
from db import comparisons, leases
from db.session import make_engine
from engine.spec import ComparisonSpec

ENTRIES, SEEDS = 10, 100  # 1,000 runs
STEPS = 5
WORKERS = 2
#: measured 31 and 61 on 2 shared cores; the figure must hold as the sweep grows (it once fell with N)
TARGETS = {"postgresql": 25, "sqlite": 50}
#: through Celery, one task per run
SERVICE_TARGETS = {"postgresql": 10, "sqlite": 5}
REDIS_URL = os.environ.get("OPTIBENCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SWEEP_SPEC = {
    "name": "bench: 1,000-run sweep",
    "problem": {"function": {"name": "rosenbrock"}},
    "training": {"steps": STEPS},
    "reuse": False,
    "seeds": list(range(SEEDS)),
    "optimizers": [{"name": "sgd", "label": f"sgd {i}", "params": {"lr": 1e-4 * (i + 1)}} for i in range(ENTRIES)],
}


def _sweep(engine) -> tuple[str, list[str]]:
    spec = ComparisonSpec.model_validate(SWEEP_SPEC).model_dump(mode="json")
    with Session(engine) as session, session.begin():
        comparison = comparisons.create_comparison(session, spec, STEPS)
        return comparison.id, [run.id for run in comparison.runs]


def _train(engine, run_ids: list[str]) -> None:
    columns = synthetic_columns(STEPS)
    for run_id in run_ids:
        with Session(engine) as session, session.begin():
            claim = leases.claim_run(session, run_id, lease_timeout_s=3600)
        if claim is None:
            raise RuntimeError(f"the fresh run {run_id} could not be claimed")
        attempt = claim.attempt
        with Session(engine) as session, session.begin():
            leases.append_steps(session, run_id, attempt, columns, best_loss=float(columns["loss"].min()))
        with Session(engine) as session, session.begin():
            leases.finish_run(session, run_id, attempt, "succeeded", steps_done=STEPS, final_loss=1.0, best_loss=1.0)


def finish_sweep(url: str) -> tuple[float, str]:
    """Seconds to claim, flush and finish every run of a fresh 1,000-run sweep; and its final status."""
    engine = make_engine(url)
    comparison_id, run_ids = _sweep(engine)
    threads = [threading.Thread(target=_train, args=(engine, run_ids[i::WORKERS])) for i in range(WORKERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    with Session(engine) as session:
        status = session.get_one(comparisons.Comparison, comparison_id).status
    engine.dispose()
    return elapsed, status


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, processes: list[subprocess.Popen], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{url}/readyz", timeout=2).json()
            if ready.get("status") == "ok" and any(q["workers"] for q in ready.get("queues", {}).values()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.3)
    raise RuntimeError(f"the service did not start; see {log}")


def finish_sweep_through_celery(database_url: str, broker_url: str | None) -> tuple[float, str]:
    """Seconds from the submit's answer to the sweep's end, trained by one worker of 2 processes; and
    its final status. ``broker_url`` None: the embedded default (`optibench serve` with its worker)."""
    data_dir = Path(tempfile.mkdtemp(prefix="optibench-bench-sweep-"))
    port = _free_port()
    env = {
        **os.environ,
        "OPTIBENCH_DATABASE_URL": database_url,
        "OPTIBENCH_DATA_DIR": str(data_dir),
        "OPTIBENCH_PORT": str(port),
        "OPTIBENCH_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
        "OPTIBENCH_VECTORIZE": "false",
        "OPTIBENCH_WORKER_CONCURRENCY": "2",
        "OPTIBENCH_TORCH_THREADS": "1",
        "OPTIBENCH_SECRET_KEY": secrets.token_urlsafe(48),
    }
    if broker_url is not None:
        env["OPTIBENCH_BROKER_URL"] = broker_url
    log = data_dir / "service.log"
    with open(log, "w") as out:
        serve = [sys.executable, "-m", "optibench.cli", "serve"] + ([] if broker_url is None else ["--no-worker"])
        processes = [subprocess.Popen(serve, env=env, stdout=out, stderr=subprocess.STDOUT)]
        if broker_url is not None:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "optibench.cli", "worker", "--device", "cpu"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, processes, log)
            with httpx.Client(base_url=url, timeout=60) as http:
                submitted = http.post("/api/v1/comparisons", json=SWEEP_SPEC)
                submitted.raise_for_status()
                started = time.perf_counter()
                path = f"/api/v1/comparisons/{submitted.json()['id']}"
                while (status := http.get(path).json()["status"]) in ("queued", "running"):
                    time.sleep(0.2)
            return time.perf_counter() - started, status
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


def run() -> list[Result]:
    results = []
    runs = ENTRIES * SEEDS
    with fresh_databases() as urls:
        for backend, url in urls.items():
            seconds, status = finish_sweep_through_celery(url, REDIS_URL if backend == "postgresql" else None)
            rate = runs / seconds
            deployment = "PostgreSQL + Redis" if backend == "postgresql" else "embedded SQLite + its broker"
            results.append(
                Result(
                    f"sweep through Celery, {deployment}",
                    f"runs finished/s ({runs:,} tiny runs, one task each, a worker of 2 processes)",
                    f">= {SERVICE_TARGETS[backend]:,}",
                    rate,
                    rate >= SERVICE_TARGETS[backend] and status == "succeeded",
                    {"runs": runs, "seconds": seconds, "status": status},
                )
            )
    with fresh_databases() as urls:
        for backend, url in urls.items():
            seconds, status = finish_sweep(url)
            rate = runs / seconds
            results.append(
                Result(
                    f"sweep on {backend}",
                    f"runs finished/s ({runs:,} tiny runs, {WORKERS} workers)",
                    f">= {TARGETS[backend]:,}",
                    rate,
                    rate >= TARGETS[backend] and status == "succeeded",
                    {"runs": runs, "seconds": seconds, "status": status},
                )
            )
    return results
