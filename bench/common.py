from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

from engine.spec import ComparisonSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Result:
    name: str
    measure: str
    target: str
    value: float | None
    passed: bool | None  # None: not measured here (e.g. no GPU)
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def example_spec(filename: str) -> ComparisonSpec:
    return ComparisonSpec.model_validate(json.loads((EXAMPLES / filename).read_text()))


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    admin_url = os.environ.get("OPTIBENCH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"optibench_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def fresh_databases() -> Iterator[dict[str, str]]:
    """A migrated SQLite file and a migrated new PostgreSQL database, removed afterwards."""
    from db.migrate import upgrade
    from db.session import get_engine

    with postgres_database() as postgres_url:
        urls = {
            "postgresql": postgres_url,
            "sqlite": f"sqlite:///{tempfile.mkdtemp(prefix='optibench-bench-')}/bench.db",
        }
        try:
            for url in urls.values():
                upgrade(url)
            yield urls
        finally:
            get_engine.cache_clear()


def seeded_run(engine, steps: int) -> tuple[str, int]:
    """A comparison with one run, claimed as a worker would: (run id, attempt)."""
    from sqlalchemy.orm import Session

    from db import comparisons, leases

    spec = ComparisonSpec.model_validate(
        {
            "name": "bench",
            "problem": {"function": {"name": "rosenbrock"}},
            "training": {"steps": steps},
            "optimizers": [{"name": "adam"}],
        }
    )
    with Session(engine) as session, session.begin():
        run_id = comparisons.create_comparison(session, spec.model_dump(mode="json"), steps).runs[0].id
    with Session(engine) as session, session.begin():
        claim = leases.claim_run(session, run_id, lease_timeout_s=3600)
    if claim is None:
        raise RuntimeError(f"the fresh run {run_id} could not be claimed")
    return run_id, claim.attempt


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


def write_steps(url: str, rows: int, flush_rows: int) -> tuple[str, float]:
    """Writes ``rows`` step rows for one new run through the worker's own write path (``leases.append_steps``),
    ``flush_rows`` a transaction; returns (run id, seconds spent writing)."""
    from sqlalchemy.orm import Session

    from db import leases
    from db.session import make_engine

    engine = make_engine(url)
    run_id, attempt = seeded_run(engine, rows)
    chunks = [synthetic_columns(flush_rows, start) for start in range(0, rows, flush_rows)]
    started = time.perf_counter()
    for columns in chunks:
        with Session(engine) as session, session.begin():
            leases.append_steps(session, run_id, attempt, columns, best_loss=None)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return run_id, elapsed
