"""The HTTP API under 32 concurrent clients, against a real `optibench serve --no-worker` process on
PostgreSQL and Redis, run as the team deployment runs it (OPTIBENCH_AUTH=required, an API key on every
request): listing a history of 10,000 comparisons, submitting, and a downsampled curve of a
1,000,000-step run.

The load comes from wrk where it is installed (C, a few microseconds per request), else from Python
httpx clients, which cost the machine more per request than the server does and so take CPU from it
when they share the cores; each result says which generator measured it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session

from bench.common import Result, fresh_databases, write_steps
from bench.storage import FLUSH_ROWS
from db.models import LOCAL_TEAM_ID, MEMBER, Comparison, Run, new_id, utcnow
from db.session import make_engine
from services import keys

CLIENTS = 32
#: uvicorn processes, one per core, as docker-compose runs the API
API_WORKERS = max(2, os.cpu_count() or 1)
HISTORY = 10_000
CURVE_STEPS = 1_000_000
#: seconds of load per measure through wrk; the Python clients send a fixed number of requests instead
LOAD_S, WARM_S = 10, 2
WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
COMPARISONS = "/api/v1/comparisons"
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


@dataclass(frozen=True)
class Load:
    """What CLIENTS clients in a closed loop measured: requests, answers other than 2xx (and failed
    connections), and the latency percentiles."""

    generator: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    def details(self) -> dict:
        return {
            "generator": self.generator,
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_s": round(self.requests / self.seconds, 1),
            "p50_ms": round(self.p50_ms, 1),
        }


def _seed_history(url: str, count: int) -> None:
    """``count`` finished comparisons of three runs each, written in bulk."""
    engine = make_engine(url)
    spec = dict(SUBMIT_SPEC, name="history")
    comparisons, runs = [], []
    for i in range(count):
        cid = new_id()
        comparisons.append(
            {
                "id": cid,
                "team_id": LOCAL_TEAM_ID,
                "name": f"history {i}",
                "status": "succeeded",
                "spec": spec,
                "tags": ["bench"],
                "created_at": utcnow(),
                "finished_at": utcnow(),
            }
        )
        runs += [
            {
                "id": new_id(),
                "comparison_id": cid,
                "position": p,
                "entry_index": p,
                "label": f"opt{p}",
                "optimizer_name": "adam",
                "optimizer_params": {},
                "seed": 0,
                "status": "succeeded",
                "steps_total": 100,
                "steps_done": 100,
                "attempt": 1,
            }
            for p in range(3)
        ]
    with Session(engine) as session, session.begin():
        for start in range(0, count, 2000):
            session.execute(insert(Comparison), comparisons[start : start + 2000])
            session.execute(insert(Run), runs[3 * start : 3 * (start + 2000)])
    engine.dispose()


def _api_key(url: str) -> str:
    """A member key of the team that owns the history."""
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        _, secret = keys.issue_key(session, LOCAL_TEAM_ID, "bench", MEMBER)
    engine.dispose()
    return secret


def _settle(url: str) -> None:
    """Leave the seeded database as a live one is in steady state: vacuumed, with statistics (without
    them a freshly loaded table gets sequential scans), and checkpointed, so that the seed's own
    aftermath (a million fresh rows to vacuum and to write out) cannot land in the measurement."""
    engine = make_engine(url)
    with engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql("VACUUM (ANALYZE)")
        connection.exec_driver_sql("CHECKPOINT")
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(database_url: str):
    port = _free_port()
    env = {
        **os.environ,
        "OPTIBENCH_DATABASE_URL": database_url,
        "OPTIBENCH_BROKER_URL": REDIS_URL,
        "OPTIBENCH_PORT": str(port),
        "OPTIBENCH_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
        "OPTIBENCH_DATA_DIR": tempfile.mkdtemp(prefix="optibench-bench-api-"),
        "OPTIBENCH_MAX_RUNNING_COMPARISONS": "1000000",
        "OPTIBENCH_API_WORKERS": str(API_WORKERS),
        "OPTIBENCH_AUTH": "required",
        "OPTIBENCH_SECRET_KEY": secrets.token_urlsafe(48),
    }
    log = open(os.path.join(env["OPTIBENCH_DATA_DIR"], "serve.log"), "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "optibench.cli", "serve", "--no-worker"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
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


def _load(url: str, key: str, method: str, path: str, body: dict | None, seconds: float, total: int) -> Load:
    """CLIENTS concurrent clients in a closed loop: through wrk for ``seconds``, else ``total``
    requests from Python clients."""
    if shutil.which("wrk"):
        return _wrk(url, key, method, path, body, seconds)
    return asyncio.run(_httpx(url, key, method, path, body, total))


def _wrk(url: str, key: str, method: str, path: str, body: dict | None, seconds: float) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as body_file:
        json.dump(body, body_file)
        body_file.flush()
        env = {
            **os.environ,
            "BENCH_METHOD": method,
            "BENCH_AUTHORIZATION": f"Bearer {key}",
            **({"BENCH_BODY_FILE": body_file.name} if body is not None else {}),
        }
        done = subprocess.run(
            ["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds}s", "--timeout", "60s", "-s", str(WRK_SCRIPT), f"{url}{path}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return Load(
        "wrk",
        measured["requests"],
        measured["status_errors"] + measured["socket_errors"],
        measured["duration_us"] / 1e6,
        measured["p50_us"] / 1000,
        measured["p99_us"] / 1000,
    )


async def _httpx(url: str, key: str, method: str, path: str, body: dict | None, total: int) -> Load:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await http.request(method, path, json=body)
                latencies.append(time.perf_counter() - started)
                errors += not response.is_success

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return Load(
        "httpx",
        len(latencies),
        errors,
        time.perf_counter() - started,
        _percentile(latencies, 50) * 1000,
        _percentile(latencies, 99) * 1000,
    )


def run() -> list[Result]:
    results = []
    with fresh_databases() as urls:
        url = urls["postgresql"]
        _seed_history(url, HISTORY)
        key = _api_key(url)
        run_id, _ = write_steps(url, CURVE_STEPS, FLUSH_ROWS)
        _settle(url)
        with _server(url) as api:
            # every process imports its components and prepares its statements before anything is timed
            _load(api, key, "GET", COMPARISONS, None, WARM_S, 200)
            _load(api, key, "POST", COMPARISONS, SUBMIT_SPEC, WARM_S, 100)
            listed = _load(api, key, "GET", COMPARISONS, None, LOAD_S, 2000)
            results.append(
                Result(
                    f"GET /api/v1/comparisons, {HISTORY:,} stored, {CLIENTS} clients",
                    "p99 ms",
                    "<= 100",
                    listed.p99_ms,
                    listed.p99_ms <= 100 and listed.errors == 0,
                    listed.details(),
                )
            )
            submitted = _load(api, key, "POST", COMPARISONS, SUBMIT_SPEC, LOAD_S, 500)
            results.append(
                Result(
                    f"POST /api/v1/comparisons, {CLIENTS} clients, PostgreSQL + Redis",
                    "p99 ms",
                    "<= 200, no errors",
                    submitted.p99_ms,
                    submitted.p99_ms <= 200 and submitted.errors == 0,
                    submitted.details() | {"runs_per_submit": 6},
                )
            )
            path = f"/api/v1/runs/{run_id}/curve?points=1000"
            with httpx.Client(base_url=api, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
                for _ in range(20):
                    http.get(path)
                curve = []
                for _ in range(200):
                    started = time.perf_counter()
                    assert http.get(path).status_code == 200
                    curve.append(time.perf_counter() - started)
            p95 = _percentile(curve, 95) * 1000
            results.append(
                Result(
                    f"curve?points=1000 of a {CURVE_STEPS:,}-step run over HTTP",
                    "p95 ms",
                    "<= 50",
                    p95,
                    p95 <= 50,
                    {"p50_ms": statistics.median(curve) * 1000, "requests": len(curve)},
                )
            )
    return results
