"""What the dashboards and the summary draw besides curves, computed in the database: sampled points of
a run's path (function problems), a histogram of step times, and the per-run figures of the
leaderboard and of its rankings at several budgets (analysis.summary.RowFigures). None sends every
step row to Python."""

from __future__ import annotations

import math
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Double, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from analysis.summary import LOSS_FLOOR, StepFigures, WindowLoss
from db.models import Eval, Step
from db.session import driver_connection

_LARGEST = sys.float_info.max


@dataclass(frozen=True)
class PathPoint:
    step: int
    #: the point before the update of this step
    x: list[float]
    #: f(x)
    loss: float


def path_points(session: Session, run_id: str, steps: Sequence[int]) -> list[PathPoint]:
    """The run's rows at these steps (primary-key lookups), in step order."""
    rows = session.execute(
        select(Step.step, Step.x, Step.loss)
        .where(Step.run_id == run_id, Step.step.in_(steps), Step.x.is_not(None))
        .order_by(Step.step)
    )
    return [PathPoint(step, x, loss) for step, x, loss in rows if x is not None]  # the query's filter: never None


@dataclass(frozen=True)
class Histogram:
    #: bins + 1 edges, in ms, log-spaced: step times are skewed, a slow first step is common
    edges: list[float]
    #: per run id, the count in each bin
    counts: dict[str, list[int]]


def step_time_histogram(session: Session, run_ids: Sequence[str], bins: int) -> Histogram:
    """One set of bins for all the runs' step times, from the fastest step to the slowest; a value
    falls in the bin whose lower edge it reaches (the slowest in the last). Two aggregate queries."""
    positive = (Step.run_id.in_(run_ids), Step.step_time_ms > 0)
    low, high = session.execute(select(func.min(Step.step_time_ms), func.max(Step.step_time_ms)).where(*positive)).one()
    if low is None:
        return Histogram(edges=[], counts={})
    edges = np.geomspace(low, high, bins + 1) if high > low else np.array([low, high])
    inner = edges[1:-1]
    index = (
        case(
            *((Step.step_time_ms < literal(float(edge), Double()), i) for i, edge in enumerate(inner)),
            else_=len(edges) - 2,
        )
        if len(inner)
        else literal(0)
    )
    counts = {run_id: [0] * (len(edges) - 1) for run_id in run_ids}
    for run_id, i, n in session.execute(
        select(Step.run_id, index.label("bin"), func.count()).where(*positive).group_by(Step.run_id, index)
    ):
        counts[run_id][i] = n
    return Histogram(edges=[low, *inner.tolist(), high], counts=counts)


# --- the leaderboard's per-run figures ------------------------------------------------------


def _ensure_log10(session: Session) -> None:
    """SQLite is not always built with its math functions: where log10 is missing, give this
    connection Python's (the same libm function; the built-in one is twice as fast)."""
    if session.connection().dialect.name == "sqlite":
        driver = driver_connection(session)
        try:
            driver.execute("SELECT log10(1)")
        except sqlite3.OperationalError:
            driver.create_function("log10", 1, math.log10, deterministic=True)


def step_figures(session: Session, run_ids: Sequence[str]) -> dict[str, StepFigures]:
    """Per run, its log-loss area and its lowest finite step loss."""
    if not run_ids:
        return {}
    _ensure_log10(session)
    loss = Step.loss
    # NaN fails BETWEEN on both databases: PostgreSQL sorts it above every number, SQLite stores it as text
    finite = loss.between(-_LARGEST, _LARGEST)
    floored = case((loss < LOSS_FLOOR, LOSS_FLOOR), else_=loss)
    rows = session.execute(
        select(Step.run_id, func.avg(case((finite, func.log10(floored, type_=Double)))), func.min(case((finite, loss))))
        .where(Step.run_id.in_(run_ids))
        .group_by(Step.run_id)
    )
    return {run_id: StepFigures(auc, low) for run_id, auc, low in rows}


def _at_chosen_step(
    session: Session,
    table: type[Step] | type[Eval],
    pick: Callable,
    run_ids: Sequence[str],
    columns: Sequence,
    *conditions,
) -> Sequence[Sequence[Any]]:
    """For each run, ``columns`` of its row at the step that ``pick`` (min or max) chooses among the
    rows meeting ``conditions``: one grouped pass joined back on the primary key. (A per-run subquery
    that walks the key in step order is faster when the row comes early, but several times slower on
    PostgreSQL when it comes late, as the default target does for its slowest run.)"""
    chosen = (
        select(table.run_id, pick(table.step).label("step"))
        .where(table.run_id.in_(run_ids), *conditions)
        .group_by(table.run_id)
        .subquery()
    )
    return session.execute(
        select(table.run_id, *columns).join(chosen, and_(table.run_id == chosen.c.run_id, table.step == chosen.c.step))
    ).all()


def first_reached(session: Session, run_ids: Sequence[str], target: float) -> dict[str, tuple[int, float]]:
    """Per run, the first step whose loss is ≤ ``target`` and its time_s; runs that never reach it are absent."""
    rows = _at_chosen_step(session, Step, func.min, run_ids, (Step.step, Step.time_s), Step.loss <= target)
    return {run_id: (step, time_s) for run_id, step, time_s in rows}


def last_evals(session: Session, run_ids: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
    """Per evaluated run, (val_loss, val_accuracy) of its last evaluation."""
    rows = _at_chosen_step(session, Eval, func.max, run_ids, (Eval.val_loss, Eval.val_accuracy))
    return {run_id: (val_loss, val_accuracy) for run_id, val_loss, val_accuracy in rows}


def window_losses(
    session: Session, windows: Mapping[str, Sequence[tuple[int, int]]]
) -> dict[str, dict[int, WindowLoss]]:
    """Per run, for each of its windows of steps (first, last, inclusive) by index: the mean of its
    finite losses there, its rows there, and how many are finite. One grouped query over the primary
    key's ranges per set of windows (runs of the same length share theirs: one query in most comparisons)."""
    by_windows: dict[tuple[tuple[int, int], ...], list[str]] = defaultdict(list)
    for run_id, spans in windows.items():
        by_windows[tuple(spans)].append(run_id)
    finite = Step.loss.between(-_LARGEST, _LARGEST)
    found: dict[str, dict[int, WindowLoss]] = defaultdict(dict)
    for spans, run_ids in by_windows.items():
        inside = [Step.step.between(first, last) for first, last in spans]
        index = case(*((condition, i) for i, condition in enumerate(inside))).label("window")
        rows = session.execute(
            select(Step.run_id, index, func.avg(case((finite, Step.loss))), func.count(), func.count(case((finite, 1))))
            .where(Step.run_id.in_(run_ids), or_(*inside))
            .group_by(Step.run_id, index)
        )
        for run_id, i, mean, count, finite_count in rows:
            found[run_id][i] = WindowLoss(mean, count, finite_count)
    return dict(found)


@dataclass(frozen=True)
class RowFigures:
    """analysis.summary.RowFigures read from this session's database."""

    session: Session

    def step_figures(self, run_ids: Sequence[str]) -> dict[str, StepFigures]:
        return step_figures(self.session, run_ids)

    def first_reached(self, run_ids: Sequence[str], target: float) -> dict[str, tuple[int, float]]:
        return first_reached(self.session, run_ids, target)

    def last_evals(self, run_ids: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
        return last_evals(self.session, run_ids)

    def window_losses(self, windows: Mapping[str, Sequence[tuple[int, int]]]) -> dict[str, dict[int, WindowLoss]]:
        return window_losses(self.session, windows)
