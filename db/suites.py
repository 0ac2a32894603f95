"""A suite's evaluations as stored: one query per workload, every run of the team's history on it."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import Comparison, table_of
from db.session import driver_connection


@dataclass(frozen=True)
class WorkloadRows:
    """A workload's evaluations, a row per (run, evaluation) ordered by run then step; ``runs`` in order."""

    run: np.ndarray
    step: np.ndarray
    time_s: np.ndarray
    value: np.ndarray
    #: per run: (label, optimizer name, params), seed, and whether a client trained it (an external run)
    settings: list[tuple[str, str, str]]
    seeds: list[int]
    external: list[bool]


_CHOSEN = """
FROM comparisons
JOIN runs ON comparisons.id = runs.comparison_id
{joins}
WHERE comparisons.team_id = {{mark}} AND comparisons.suite = {{mark}} AND comparisons.suite_budget = {{mark}}
  AND comparisons.suite_workload = {{mark}} AND comparisons.deleted_at IS NULL
  AND runs.status IN ('succeeded', 'diverged')
"""
#: a workload's runs; their params as the stored JSON text, which names one setting
_RUNS = (
    "SELECT runs.id, runs.label, runs.optimizer_name, CAST(runs.optimizer_params AS TEXT), runs.seed, runs.external"
    + _CHOSEN.format(joins="")
    + "ORDER BY runs.id"
)
#: a workload's evaluations in run order, each with the training clock of the step that ended before it
_EVALUATIONS = (
    "SELECT runs.id, evals.step, evals.{metric}, steps.time_s"
    + _CHOSEN.format(
        joins="JOIN evals ON evals.run_id = coalesce(runs.reused_from_id, runs.id)\n"
        "LEFT OUTER JOIN steps ON steps.run_id = evals.run_id AND steps.step = evals.step - 1"
    )
    + "ORDER BY runs.id, evals.step"
)


def mark(session: Session, comparison_id: str, suite: str, budget: str, workload: str) -> None:
    session.execute(
        update(table_of(Comparison))
        .where(table_of(Comparison).c.id == comparison_id)
        .values(suite=suite, suite_budget=budget, suite_workload=workload)
    )


def workload_rows(session: Session, team_id: str, suite: str, budget: str, workload: str, metric: str) -> WorkloadRows:
    """Every finished run's evaluations of ``metric`` (an Eval column) on the workload, with the training clock
    at each (the time of the step that ended before it; 0 for the initial weights). A reused run reads its
    source's rows. Diverged runs count: their evaluations before divergence are real."""
    mark = "%s" if session.connection().dialect.name == "postgresql" else "?"
    where = (team_id, suite, budget, workload)
    # the driver's rows, not SQLAlchemy's: a suite of 10,000 runs reads some 100,000 evaluations
    with closing(driver_connection(session).cursor()) as cursor:
        cursor.execute(_RUNS.format(mark=mark), where)
        runs = cursor.fetchall()
        cursor.execute(_EVALUATIONS.format(metric=metric, mark=mark), where)
        rows = cursor.fetchall()
    index = {run[0]: i for i, run in enumerate(runs)}
    ids = [row[0] for row in rows]
    # the run of each row, looked up once per run; -1 for a run that finished between the two statements
    starts = [k for k in range(len(ids)) if k == 0 or ids[k] != ids[k - 1]]
    runs_of = np.array([index.get(ids[k], -1) for k in starts], dtype=np.int64)
    run = np.repeat(runs_of, np.diff([*starts, len(ids)]))
    table = np.array([row[1:] for row in rows], dtype=float).reshape(-1, 3)  # None and SQLite's 'NaN' are NaN
    table = table[run >= 0]
    run = run[run >= 0]
    step = table[:, 0].astype(np.int64)
    time_s = table[:, 2]  # NaN where a step row is missing: outside any budget
    time_s[step == 0] = 0.0
    return WorkloadRows(
        run,
        step,
        time_s,
        table[:, 1],
        [(label, name, params) for _, label, name, params, _, _ in runs],
        [seed for *_, seed, _ in runs],
        [bool(external) for *_, external in runs],
    )
