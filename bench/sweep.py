"""A 1,000-run sweep of tiny runs, finished through the worker's write path (``leases.claim_run``, one
flush of ``leases.append_steps``, ``leases.finish_run``) by WORKERS threads at once, as that many
worker processes would: runs finished per second. Each claim and finish recomputes the comparison's
status, which once read every run (O(N²) over the sweep); the rate must hold up as N grows. The broker
is not on this path (a run's message is consumed before the claim), so the measure is the database's."""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import Session

from bench.common import Result, fresh_databases
from bench.storage import synthetic_columns
from db import comparisons, leases
from db.session import make_engine
from engine.spec import ComparisonSpec

ENTRIES, SEEDS = 10, 100  # 1,000 runs
STEPS = 5
WORKERS = 2
#: measured 31 and 61 on 2 shared cores; the figure must hold as the sweep grows (it once fell with N)
TARGETS = {"postgresql": 25, "sqlite": 50}


def _sweep(engine) -> tuple[str, list[str]]:
    spec = ComparisonSpec.model_validate({
        "name": "bench: 1,000-run sweep", "problem": {"function": {"name": "rosenbrock"}},
        "training": {"steps": STEPS}, "reuse": False, "seeds": list(range(SEEDS)),
        "optimizers": [{"name": "sgd", "label": f"sgd {i}", "params": {"lr": 1e-4 * (i + 1)}} for i in range(ENTRIES)],
    }).model_dump(mode="json")
    with Session(engine) as session, session.begin():
        comparison = comparisons.create_comparison(session, spec, STEPS)
        return comparison.id, [run.id for run in comparison.runs]


def _train(engine, run_ids: list[str]) -> None:
    columns = synthetic_columns(STEPS)
    for run_id in run_ids:
        with Session(engine) as session, session.begin():
            attempt = leases.claim_run(session, run_id, lease_timeout_s=3600).attempt
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
        status = session.get(comparisons.Comparison, comparison_id).status
    engine.dispose()
    return elapsed, status


def run() -> list[Result]:
    results = []
    runs = ENTRIES * SEEDS
    with fresh_databases() as urls:
        for backend, url in urls.items():
            seconds, status = finish_sweep(url)
            rate = runs / seconds
            results.append(Result(f"sweep on {backend}", f"runs finished/s ({runs:,} tiny runs, {WORKERS} workers)",
                                  f">= {TARGETS[backend]:,}", rate, rate >= TARGETS[backend] and status == "succeeded",
                                  {"runs": runs, "seconds": seconds, "status": status}))
    return results
