"""The HTTP API under 32 concurrent clients, against a real `optibench serve --no-worker` process on
PostgreSQL and Redis: listing a history of 10,000 comparisons, submitting, and a downsampled curve
of a 1,000,000-step run."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager

import httpx
import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session

from bench.common import Result, fresh_databases, seeded_run
from bench.storage import FLUSH_ROWS, synthetic_columns
from db import queries
from db.models import LOCAL_TEAM_ID, Comparison, Run, new_id, utcnow
from db.session import make_engine

CLIENTS = 32
#: uvicorn processes, one per core, as docker-compose runs the API
API_WORKERS = max(2, os.cpu_count() or 1)
HISTORY = 10_000
CURVE_STEPS = 1_000_000
REDIS_URL = os.environ.get("OPTIBENCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

SUBMIT_SPEC = {
    "name": "bench: adam vs sgd on rosenbrock",
    "problem": {"function": {"name": "rosenbrock"}},
    "training": {"steps": 100},
    "optimizers": [{"name": "adam", "params": {"lr": 0.01}}, {"name": "sgd", "params": {"lr": 0.001}}],
    "seeds": [0, 1, 2],
    "reuse": False,
}


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def _seed_history(url: str, count: int) -> None:
    """``count`` finished comparisons of three runs each, written in bulk."""
    engine = make_engine(url)
    spec = dict(SUBMIT_SPEC, name="history")
    comparisons, runs = [], []
    for i in range(count):
        cid = new_id()
        comparisons.append({"id": cid, "team_id": LOCAL_TEAM_ID, "name": f"history {i}", "status": "succeeded",
                            "spec": spec, "tags": ["bench"], "created_at": utcnow(), "finished_at": utcnow()})
        runs += [{"id": new_id(), "comparison_id": cid, "position": p, "entry_index": p, "label": f"opt{p}",
                  "optimizer_name": "adam", "optimizer_params": {}, "seed": 0, "status": "succeeded",
                  "steps_total": 100, "steps_done": 100, "attempt": 1} for p in range(3)]
    with Session(engine) as session, session.begin():
        for start in range(0, count, 2000):
            session.execute(insert(Comparison), comparisons[start:start + 2000])
            session.execute(insert(Run), runs[3 * start:3 * (start + 2000)])
    engine.dispose()


def _analyze(url: str) -> None:
    """Table statistics, as autovacuum keeps them on a live database: without them a freshly loaded
    table gets sequential scans."""
    engine = make_engine(url)
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    engine.dispose()


def _long_run(url: str, steps: int) -> str:
    engine = make_engine(url)
    run_id, attempt = seeded_run(engine, steps)
    for start in range(0, steps, FLUSH_ROWS):
        with Session(engine) as session, session.begin():
            queries.append_steps(session, run_id, attempt, synthetic_columns(FLUSH_ROWS, start), best_loss=None)
    engine.dispose()
    return run_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(database_url: str):
    port = _free_port()
    env = {**os.environ, "OPTIBENCH_DATABASE_URL": database_url, "OPTIBENCH_BROKER_URL": REDIS_URL,
           "OPTIBENCH_PORT": str(port), "OPTIBENCH_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
           "OPTIBENCH_DATA_DIR": tempfile.mkdtemp(prefix="optibench-bench-api-"),
           "OPTIBENCH_MAX_RUNNING_COMPARISONS": "1000000", "OPTIBENCH_API_WORKERS": str(API_WORKERS)}
    log = open(os.path.join(env["OPTIBENCH_DATA_DIR"], "serve.log"), "w")
    process = subprocess.Popen([sys.executable, "-m", "optibench.cli", "serve", "--no-worker"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the API did not start; see {log.name}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        _purge_queue(env["OPTIBENCH_QUEUE"])


def _purge_queue(prefix: str) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).delete(f"{prefix}.cpu", f"{prefix}.gpu")


async def _load(url: str, request, total: int) -> tuple[list[float], int]:
    """``total`` requests from CLIENTS concurrent clients; (latencies in s, non-2xx answers)."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while not queue.empty():
                i = queue.get_nowait()
                started = time.perf_counter()
                response = await request(http, i)
                latencies.append(time.perf_counter() - started)
                errors += not response.is_success

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies, errors


def _warm(url: str, path: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        for _ in range(20):
            http.get(path)


def run() -> list[Result]:
    results = []
    with fresh_databases() as urls:
        url = urls["postgresql"]
        _seed_history(url, HISTORY)
        run_id = _long_run(url, CURVE_STEPS)
        _analyze(url)
        with _server(url) as api:
            _warm(api, "/api/v1/comparisons")
            listed, list_errors = asyncio.run(_load(api, lambda http, i: http.get("/api/v1/comparisons"), 2000))
            p99 = _percentile(listed, 99) * 1000
            results.append(Result(f"GET /api/v1/comparisons, {HISTORY:,} stored, {CLIENTS} clients", "p99 ms",
                                  "<= 100", p99, p99 <= 100 and list_errors == 0,
                                  {"p50_ms": _percentile(listed, 50) * 1000, "requests": len(listed),
                                   "errors": list_errors}))
            submitted, submit_errors = asyncio.run(_load(
                api, lambda http, i: http.post("/api/v1/comparisons", json=SUBMIT_SPEC), 500))
            p99 = _percentile(submitted, 99) * 1000
            results.append(Result(f"POST /api/v1/comparisons, {CLIENTS} clients, PostgreSQL + Redis", "p99 ms",
                                  "<= 200, no errors", p99, p99 <= 200 and submit_errors == 0,
                                  {"p50_ms": _percentile(submitted, 50) * 1000, "requests": len(submitted),
                                   "errors": submit_errors, "runs_per_submit": 6}))
            path = f"/api/v1/runs/{run_id}/curve?points=1000"
            _warm(api, path)
            with httpx.Client(base_url=api, timeout=60) as http:
                curve = []
                for _ in range(200):
                    started = time.perf_counter()
                    assert http.get(path).status_code == 200
                    curve.append(time.perf_counter() - started)
            p95 = _percentile(curve, 95) * 1000
            results.append(Result(f"curve?points=1000 of a {CURVE_STEPS:,}-step run over HTTP", "p95 ms",
                                  "<= 50", p95, p95 <= 50, {"p50_ms": statistics.median(curve) * 1000,
                                                            "requests": len(curve)}))
    return results
