"""A suite's evaluations as stored: one query per workload, every run of the team's history on it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from db.models import DIVERGED, SUCCEEDED, Comparison, Eval, Run, Step, table_of
from engine.identity import canonical_json


@dataclass(frozen=True)
class WorkloadRows:
    """A workload's evaluations, a row per (run, evaluation) ordered by run then step; ``runs`` in order."""

    run: np.ndarray
    step: np.ndarray
    time_s: np.ndarray
    value: np.ndarray
    #: per run: (label, optimizer name, params), seed
    settings: list[tuple[str, str, str]]
    seeds: list[int]


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
    source = func.coalesce(Run.reused_from_id, Run.id)
    rows = session.execute(
        select(
            Run.id,
            Run.label,
            Run.optimizer_name,
            Run.optimizer_params,
            Run.seed,
            Eval.step,
            getattr(Eval, metric),
            Step.time_s,
        )
        .join(Comparison, Comparison.id == Run.comparison_id)
        .join(Eval, Eval.run_id == source)
        .outerjoin(Step, and_(Step.run_id == Eval.run_id, Step.step == Eval.step - 1))
        .where(
            Comparison.team_id == team_id,
            Comparison.suite == suite,
            Comparison.suite_budget == budget,
            Comparison.suite_workload == workload,
            Comparison.deleted_at.is_(None),
            Run.status.in_([SUCCEEDED, DIVERGED]),
        )
        .order_by(Run.id, Eval.step)
    ).all()
    index: dict[str, int] = {}
    settings: list[tuple[str, str, str]] = []
    seeds: list[int] = []
    run, step, time_s, value = [], [], [], []
    for run_id, label, name, params, seed, eval_step, metric_value, clock in rows:
        if run_id not in index:
            index[run_id] = len(settings)
            settings.append((label, name, canonical_json(params)))
            seeds.append(seed)
        run.append(index[run_id])
        step.append(eval_step)
        time_s.append(0.0 if eval_step == 0 else (np.nan if clock is None else clock))
        value.append(np.nan if metric_value is None else metric_value)
    return WorkloadRows(
        np.array(run, dtype=np.int64),
        np.array(step, dtype=np.int64),
        np.array(time_s, dtype=float),
        np.array(value, dtype=float),
        settings,
        seeds,
    )
