"""Suites (docs/suites.md). ``suites``: the profile and score of lite-v1 over 10,000 stored runs (six workloads,
20 optimizer settings, 13 evaluations a run, inserted through the db layer's tables) read and computed in at most
a second, on SQLite and PostgreSQL. ``suite_wall`` (opt-in, minutes): the whole lite-v1 at its full budget with
3 optimizers × 1 seed trained by the real Celery task in-process, its wall time, then its scores."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from sqlalchemy import insert

from bench.common import Result, fresh_databases
from db.models import LOCAL_TEAM_ID, SUCCEEDED, Comparison, Eval, Run, Step, new_id, table_of
from db.session import transaction
from engine.suites import discover

RUNS = 10_000
SETTINGS = 20
SCORE_TARGET_S = 1.0


def _store_synthetic(url: str, suite_id: str) -> None:
    """RUNS runs spread over the suite's workloads and SETTINGS optimizer settings, each with its evaluations and
    the step rows that time them (the rows a suite read joins; a real run has every step)."""
    suite = discover()[suite_id]
    rng = np.random.default_rng(0)
    per_workload = RUNS // len(suite.workloads)
    with transaction(url) as session:
        for workload in suite.workloads:
            budget = workload.budget
            comparison_id = new_id()
            session.execute(
                insert(table_of(Comparison)),
                [
                    {
                        "id": comparison_id,
                        "team_id": LOCAL_TEAM_ID,
                        "name": f"bench {workload.name}",
                        "status": SUCCEEDED,
                        "spec": {},
                        "tags": [],
                        "suite": suite_id,
                        "suite_budget": "full",
                        "suite_workload": workload.name,
                    }
                ],
            )
            labels = [b["label"] for b in suite.baselines] + [f"candidate {k}" for k in range(SETTINGS - 2)]
            runs, evals, steps = [], [], []
            eval_steps = np.arange(0, budget.steps + 1, budget.eval_every)
            for i in range(per_workload):
                run_id = new_id()
                setting = i % SETTINGS
                runs.append(
                    {
                        "id": run_id,
                        "comparison_id": comparison_id,
                        "position": i,
                        "entry_index": setting,
                        "label": labels[setting],
                        "optimizer_name": "adamw",
                        "optimizer_params": {"lr": 10.0 ** -(setting % 5)},
                        "seed": i // SETTINGS,
                        "status": SUCCEEDED,
                        "steps_total": budget.steps,
                    }
                )
                rate = rng.uniform(0.5, 2.0) / budget.steps
                values = np.exp(-rate * eval_steps) + rng.normal(0, 0.01, len(eval_steps))
                clock = np.cumsum(rng.uniform(0.001, 0.002, budget.steps))
                for s, v in zip(eval_steps, values):
                    evals.append(
                        {
                            "run_id": run_id,
                            "step": int(s),
                            "train_loss": float(v),
                            "val_loss": float(v),
                            "val_accuracy": float(1 - v),
                        }
                    )
                    if s:
                        steps.append(
                            {
                                "run_id": run_id,
                                "step": int(s) - 1,
                                "loss": float(v),
                                "time_s": float(clock[s - 1]),
                                "step_time_ms": 1.0,
                            }
                        )
            session.execute(insert(table_of(Run)), runs)
            session.execute(insert(table_of(Eval)), evals)
            session.execute(insert(table_of(Step)), steps)


def scoring() -> Iterator[Result]:
    from services.suites import scores

    with fresh_databases() as urls:
        for backend, url in urls.items():
            _store_synthetic(url, "lite-v1")
            timings = []
            for _ in range(3):
                with transaction(url) as session:
                    started = time.perf_counter()
                    board = scores(session, discover()["lite-v1"], "full", team_id=LOCAL_TEAM_ID)
                    timings.append(time.perf_counter() - started)
            yield Result(
                f"suite scores: lite-v1 over {RUNS:,} stored runs ({backend})",
                "seconds to read runs and evaluations (two statements a workload), compute targets, profiles, scores",
                f"≤ {SCORE_TARGET_S} s",
                min(timings),
                min(timings) <= SCORE_TARGET_S,
                {"timings_s": timings, "settings": len(board["optimizers"]), "workloads": len(board["workloads"])},
            )


def run() -> Iterator[Result]:
    yield from scoring()
