"""Free-form tracking (docs/tracking.md): the cost of ``run.log`` in the loop (floats and CPU tensors, the
background upload running), the server's write path for metrics (``db.tracking.append_metrics``) on each
database, and the same rows uploaded over HTTP through the in-process app. ``python -m bench.tracking``."""

from __future__ import annotations

import io
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.common import fresh_databases
from db import tracking
from db.models import LOCAL_TEAM_ID, TrackedRun
from db.session import make_engine

STEPS = 100_000
METRICS = ("loss", "lr", "grad_norm")
BATCH = 10_000
LOG_STEPS = 200_000


def _arrow(first: int, last: int) -> bytes:
    step = np.arange(first, last, dtype=np.int64)
    table = pa.table({"step": step, **{name: np.random.default_rng(0).random(len(step)) for name in METRICS}})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def write_path(url: str) -> float:
    """Values per second stored by ``append_metrics`` in batches of BATCH steps of every metric."""
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        run_id = tracking.create_run(
            session, LOCAL_TEAM_ID, "bench", name="w", config={}, config_hash="0" * 64, client={}
        ).id
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for first in range(0, STEPS, BATCH):
        step = np.arange(first, first + BATCH, dtype=np.int64)
        metrics = {name: np.ma.MaskedArray(rng.random(BATCH)) for name in METRICS}
        with Session(engine) as session, session.begin():
            tracking.append_metrics(session, run_id, step, metrics)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return STEPS * len(METRICS) / elapsed


def over_http(url: str) -> float:
    """Values per second stored through POST /tracking/runs/{id}/metrics (the app in this process)."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    os.environ["OPTIBENCH_DATABASE_URL"] = url
    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()
    client = TestClient(create_app())
    run_id = client.post("/api/v1/tracking/runs", json={"project": "bench", "config": {}}).json()["id"]
    bodies = [_arrow(first, first + BATCH) for first in range(0, STEPS, BATCH)]
    headers = {"Content-Type": "application/vnd.apache.arrow.stream"}
    start = time.perf_counter()
    for body in bodies:
        answer = client.post(f"/api/v1/tracking/runs/{run_id}/metrics", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
    return STEPS * len(METRICS) / (time.perf_counter() - start)


def log_cost(url: str) -> dict[str, float]:
    """Microseconds per ``run.log(loss=...)`` in a loop, the flushes and the upload thread included."""
    import torch

    from optibench.client import Client
    from optibench.tracking import track

    os.environ["OPTIBENCH_DATABASE_URL"] = url
    from fastapi.testclient import TestClient

    from api.main import create_app

    client = Client("http://testserver", transport=TestClient(create_app())._transport)
    costs = {}
    for kind in ("float", "tensor"):
        values = [torch.tensor(0.5) for _ in range(LOG_STEPS)] if kind == "tensor" else [0.5] * LOG_STEPS
        run = track(client, "bench", {"kind": kind}, spool_dir=tempfile.mkdtemp())
        start = time.perf_counter()
        for value in values:
            run.log(loss=value)
        costs[kind] = (time.perf_counter() - start) / LOG_STEPS * 1e6
        run.finish()
    return costs


def main() -> None:
    with fresh_databases() as urls:
        for name, url in urls.items():
            print(f"{name}: write path {write_path(url):,.0f} values/s; over HTTP {over_http(url):,.0f} values/s")
        costs = log_cost(urls["sqlite"])
        print(f"run.log: {costs['float']:.2f} us per float, {costs['tensor']:.2f} us per CPU tensor")
        engine = make_engine(urls["sqlite"])
        with Session(engine) as session:
            assert session.scalars(select(TrackedRun.status)).all()


if __name__ == "__main__":
    main()
