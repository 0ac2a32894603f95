"""Step rows written per second, through the worker's own write path (``leases.append_steps``:
the lease check, the bulk insert, the rollups), in flushes of FLUSH_ROWS rows, one transaction each."""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy.orm import Session

from bench.common import Result, fresh_databases, seeded_run
from db import leases
from db.session import make_engine

ROWS = 1_000_000
FLUSH_ROWS = 10_000
TARGETS = {"postgresql": 500_000, "sqlite": 200_000}


def synthetic_columns(n: int, start: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """A flush's columns as the worker hands them over (``StepBatch.columns``: arrays)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(start, start + n)
    loss = np.exp(-steps / 2e5) + 0.05 * rng.random(n)
    return {
        "step": steps,
        "epoch": steps // 1000,
        "loss": loss,
        "time_s": steps * 2e-4,
        "step_time_ms": 0.2 + 0.01 * rng.random(n),
        "lr": np.full(n, 1e-3),
    }


def write(url: str, rows: int = ROWS) -> tuple[str, float]:
    """Writes ``rows`` step rows for one run; returns (run id, seconds spent writing)."""
    engine = make_engine(url)
    run_id, attempt = seeded_run(engine, rows)
    chunks = [synthetic_columns(FLUSH_ROWS, start) for start in range(0, rows, FLUSH_ROWS)]
    started = time.perf_counter()
    for columns in chunks:
        with Session(engine) as session, session.begin():
            leases.append_steps(session, run_id, attempt, columns, best_loss=None)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return run_id, elapsed


def run() -> list[Result]:
    results = []
    with fresh_databases() as urls:
        for backend, url in urls.items():
            _, seconds = write(url)
            rate = ROWS / seconds
            results.append(
                Result(
                    f"step rows into {backend}",
                    "rows/s (1M rows, 10k-row flushes)",
                    f">= {TARGETS[backend]:,}",
                    rate,
                    rate >= TARGETS[backend],
                    {"rows": ROWS, "flush_rows": FLUSH_ROWS, "seconds": seconds},
                )
            )
    return results
