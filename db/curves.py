"""Curves in SQL: the buckets of ``analysis.downsample`` computed by one GROUP BY over the (run_id, step)
primary key, so no raw row crosses to Python. NaN is the text 'NaN' on SQLite and a real NaN on
PostgreSQL (where it sorts above every number); comparing with a NaN bound through FaithfulFloat
finds it on both, and finite values are those strictly between -inf and +inf on both.

x grows with step on every axis (step, cumulative wall time, epoch), so the first and last rows of
a range are found on the index and a bucket's first and last rows are its lowest and highest step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from sqlalchemy import Double, Integer, and_, case, cast, func, literal, select
from sqlalchemy.orm import Session, aliased

from analysis.downsample import Bucket, Curve, Grid, is_raw
from db.models import Eval, FaithfulFloat, Step

Metric = Literal["loss", "lr", "step_time_ms", "grad_norm", "update_norm",
                 "train_loss", "val_loss", "train_accuracy", "val_accuracy"]
Axis = Literal["step", "time", "epoch"]
EVAL_METRICS = frozenset({"train_loss", "val_loss", "train_accuracy", "val_accuracy"})
_AXIS_COLUMN = {"step": "step", "time": "time_s", "epoch": "epoch"}
_NAN = literal(math.nan, FaithfulFloat())
_INF = literal(math.inf, Double())
_NEG_INF = literal(-math.inf, Double())


def has_axis(metric: Metric, axis: Axis) -> bool:
    """Evaluations record no wall time."""
    return not (metric in EVAL_METRICS and axis == "time")


def _columns(metric: Metric, axis: Axis):
    table = Eval if metric in EVAL_METRICS else Step
    return table, getattr(table, metric), getattr(table, _AXIS_COLUMN[axis])


def x_range(session: Session, run_id: str, metric: Metric, axis: Axis) -> tuple[float, float] | None:
    """x of the first and last rows that have the metric, or None without any."""
    table, value, x = _columns(metric, axis)
    query = select(x).where(table.run_id == run_id, value.is_not(None), x.is_not(None)).limit(1)
    first = session.scalar(query.order_by(table.step))
    return None if first is None else (first, session.scalar(query.order_by(table.step.desc())))


def _in_range(table, value, x, run_ids: Sequence[str], start: float, end: float):
    return and_(table.run_id.in_(run_ids), value.is_not(None), x >= start, x <= end)


def count_rows(session: Session, run_id: str, metric: Metric, axis: Axis, start: float, end: float,
               up_to: int) -> int:
    """Rows in [start, end], counted only up to ``up_to`` + 1: the cost stays bounded by the answer's size."""
    table, value, x = _columns(metric, axis)
    rows = select(literal(1)).where(_in_range(table, value, x, [run_id], start, end)).limit(up_to + 1)
    return session.scalar(select(func.count()).select_from(rows.subquery()))


def buckets(session: Session, run_ids: Sequence[str], metric: Metric, axis: Axis, grid: Grid,
            raw: bool = False) -> dict[str, list[Bucket]]:
    """Each run's rows with x in [grid.start, grid.end], in the grid's buckets (raw: one per row),
    in x order. Runs without such rows are left out."""
    table, value, x = _columns(metric, axis)
    if raw:
        key = table.step
    else:
        scaled = (x - literal(grid.start, Double())) * literal(grid.scale, Double())
        # floor: x >= start, so SQLite's truncating CAST is a floor there; PostgreSQL's CAST rounds
        floor = func.floor(scaled) if session.get_bind().dialect.name == "postgresql" else scaled
        index = cast(floor, Integer)
        key = case((index >= grid.points - 1, grid.points - 1), else_=index)
    finite = and_(value > _NEG_INF, value < _INF)
    not_nan = value != _NAN
    grouped = (
        select(table.run_id, key.label("index"), func.count().label("count"),
               func.min(table.step).label("first_step"), func.max(table.step).label("last_step"),
               func.min(case((not_nan, value))).label("min"), func.max(case((not_nan, value))).label("max"),
               func.sum(case((finite, value))).label("total"), func.count(case((value == _NAN, 1))).label("nan"),
               func.count(case((value == _INF, 1))).label("pos_inf"),
               func.count(case((value == _NEG_INF, 1))).label("neg_inf"))
        .where(_in_range(table, value, x, run_ids, grid.start, grid.end))
        .group_by(table.run_id, key)
        .subquery()
    )
    first, last = aliased(table), aliased(table)
    rows = session.execute(
        select(grouped, getattr(first, x.key), getattr(first, metric), getattr(last, x.key), getattr(last, metric))
        .join(first, and_(first.run_id == grouped.c.run_id, first.step == grouped.c.first_step))
        .join(last, and_(last.run_id == grouped.c.run_id, last.step == grouped.c.last_step))
        .order_by(grouped.c.run_id, grouped.c.first_step)
    )
    curves: dict[str, list[Bucket]] = {}
    for (run_id, index, count, _, _, low, high, total, nan, pos_inf, neg_inf,
         x_start, first_value, x_end, last_value) in rows:
        curves.setdefault(run_id, []).append(Bucket(
            index=index, x_start=x_start, x_end=x_end, count=count, first=first_value, last=last_value,
            min=low, max=high, total=total, nan=nan, pos_inf=pos_inf, neg_inf=neg_inf))
    return curves


def run_curve(session: Session, run_id: str, metric: Metric, axis: Axis, points: int,
              start: float | None = None, end: float | None = None) -> Curve:
    """``analysis.downsample.downsample`` of the run's rows, in SQL. ``run_id``: the run that holds
    the rows (a reused run's source)."""
    if start is None or end is None:
        full = x_range(session, run_id, metric, axis)
        if full is None:
            return Curve(raw=True, buckets=[])
        start, end = (full[0] if start is None else start), (full[1] if end is None else end)
    raw = is_raw(count_rows(session, run_id, metric, axis, start, end, up_to=points), points)
    found = buckets(session, [run_id], metric, axis, Grid(start, end, points), raw)
    return Curve(raw=raw, buckets=found.get(run_id, []), start=start, end=end)
