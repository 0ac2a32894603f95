"""Opt-in (`python -m bench suite_wall`, minutes): the whole lite-v1 at its full budget with 3 optimizers (its two
baselines and Adam) × 1 seed, each run trained by the real Celery task in-process on the embedded database; the
wall time of the suite and of each workload, then the suite's scores from the stored runs."""

from __future__ import annotations

import time
from collections.abc import Iterator

from bench.common import Result
from db import comparisons
from db import suites as marks
from db.models import LOCAL_TEAM_ID
from db.session import transaction
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.suites import discover

CANDIDATE = {"name": "adam", "label": "adam", "params": {"lr": 0.003}}
#: one optimizer × one seed over the whole of lite-v1, on this 2-core machine
LITE_TARGET_S = 600.0


def run_suite(suite_id: str, device: str | None = None, seeds: list[int] | None = None) -> dict:
    """Train every workload of the suite (its baselines and CANDIDATE) and score it: wall seconds per workload."""
    from services.suites import scores
    from worker.tasks import train_run

    suite = discover()[suite_id]
    per_workload = {}
    for workload in suite.workloads:
        body = workload.spec(suite.baselines + [CANDIDATE], seeds or [0], workload.budget, device or suite.device)
        spec = ComparisonSpec.model_validate(body)
        with transaction() as session:
            made = comparisons.create_comparison(
                session, spec.model_dump(mode="json"), [steps_total(spec, i) for i in range(len(spec.optimizers))]
            )
            marks.mark(session, made.id, suite.id, "full", workload.name)
            run_ids = [r.id for r in made.runs]
        started = time.perf_counter()
        for run_id in run_ids:
            assert train_run(run_id) == "succeeded", run_id
        per_workload[workload.name] = time.perf_counter() - started
        print(f"    {workload.name}: {per_workload[workload.name]:.1f} s", flush=True)
    with transaction() as session:
        board = scores(session, suite, "full", team_id=LOCAL_TEAM_ID)
    return {
        "per_workload_s": per_workload,
        "scores": {o["label"]: o["score"] for o in board["optimizers"]},
        "scores_steps": {o["label"]: o["score_steps"] for o in board["optimizers"]},
        "targets": {w["name"]: w["target"] for w in board["workloads"]},
    }


def run() -> Iterator[Result]:
    started = time.perf_counter()
    details = run_suite("lite-v1")
    total = time.perf_counter() - started
    per_optimizer = total / 3
    yield Result(
        "lite-v1, 3 optimizers × 1 seed, full budget (cpu)",
        "wall seconds for the whole suite, trained by the worker task in-process; per optimizer in details",
        f"≤ {LITE_TARGET_S:.0f} s per optimizer × seed",
        total,
        per_optimizer <= LITE_TARGET_S,
        details | {"per_optimizer_s": per_optimizer},
    )
