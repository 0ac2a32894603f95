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
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BindParameter, Double, Integer, and_, case, cast, func, literal, select
from sqlalchemy.orm import Session, aliased

from analysis.downsample import Bucket, Curve, Grid, is_raw
from db import rollups
from db.models import Eval, FaithfulFloat, Run, Step, StepRollup
from engine.columns import STEP_METRICS

EVAL_METRICS = frozenset({"train_loss", "val_loss", "train_accuracy", "val_accuracy"})
Metric = Literal[(*STEP_METRICS, "train_loss", "val_loss", "train_accuracy", "val_accuracy")]  # type: ignore[valid-type]
Axis = Literal["step", "time", "epoch"]
_AXIS_COLUMN = {"step": "step", "time": "time_s", "epoch": "epoch"}
_NAN = literal(math.nan, FaithfulFloat())
_INF: BindParameter[float] = literal(math.inf, Double())
_NEG_INF: BindParameter[float] = literal(-math.inf, Double())


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
    if first is None:
        return None
    last = session.scalar(query.order_by(table.step.desc()))
    return None if last is None else (first, last)  # None: its rows were removed in between


def last_x(session: Session, run_ids: Sequence[str], metric: Metric, axis: Axis) -> float | None:
    """The largest x of the runs' last rows that have the metric (None without any): one statement,
    one primary-key lookup from the end per run, whatever the number of runs."""
    table, value, x = _columns(metric, axis)
    last = (
        select(x)
        .where(table.run_id == Run.id, value.is_not(None), x.is_not(None))
        .order_by(table.step.desc())
        .limit(1)
        .correlate(Run)
        .scalar_subquery()
    )
    ends = session.scalars(select(last).where(Run.id.in_(run_ids))).all()
    return max((end for end in ends if end is not None), default=None)


def _in_range(table, value, x, run_ids: Sequence[str], start: float, end: float):
    return and_(table.run_id.in_(run_ids), value.is_not(None), x >= start, x <= end)


def count_rows(session: Session, run_id: str, metric: Metric, axis: Axis, start: float, end: float, up_to: int) -> int:
    """Rows in [start, end], counted only up to ``up_to`` + 1: the cost stays bounded by the answer's size."""
    table, value, x = _columns(metric, axis)
    rows = select(literal(1)).where(_in_range(table, value, x, [run_id], start, end)).limit(up_to + 1)
    return session.execute(select(func.count()).select_from(rows.subquery())).scalar_one()


def buckets(
    session: Session, run_ids: Sequence[str], metric: Metric, axis: Axis, grid: Grid, raw: bool = False
) -> dict[str, list[Bucket]]:
    """Each run's rows with x in [grid.start, grid.end], in the grid's buckets (raw: one per row),
    in x order. Runs without such rows are left out. Long loss curves are read from the rollups."""
    curves: dict[str, list[Bucket]] = {}
    scanned = []
    plans = {} if raw or metric != "loss" else _rollup_plans(session, run_ids, axis, grid)
    for run_id in run_ids:
        plan = plans.get(run_id)
        if plan is None:
            scanned.append(run_id)
        else:
            curves[run_id] = _rollup_buckets(session, run_id, axis, grid, plan)
    if scanned:
        curves.update(_scanned_buckets(session, scanned, metric, axis, grid, raw))
    return curves


def _grid_index(session: Session, x, grid: Grid):
    """The SQL of ``Grid.index``: the same (x - start) * scale in float64, floored, clamped."""
    scaled = (x - literal(grid.start, Double())) * literal(grid.scale, Double())
    # floor: x >= start, so SQLite's truncating CAST is a floor there; PostgreSQL's CAST rounds
    floor = func.floor(scaled) if session.get_bind().dialect.name == "postgresql" else scaled
    index = cast(floor, Integer)
    return case((index >= grid.points - 1, grid.points - 1), else_=index)


#: the rollups serve a curve when each bucket gathers at least this many blocks; bucket edges then
#: fall on block edges, so a bucket's width is the nominal one within one block (at most half of it)
MIN_BLOCKS_PER_BUCKET = 2
_ROLLUP_AXIS = {
    "step": ("first_step", "last_step"),
    "time": ("first_time_s", "last_time_s"),
    "epoch": ("first_epoch", "last_epoch"),
}


@dataclass(frozen=True)
class _RollupPlan:
    level: int
    #: the first and last steps of the top-level blocks overlapping the range: rows in the range lie
    #: between them, so where the blocks read cover them, there are no partial blocks to read at the ends
    first_step: int
    last_step: int


def _rollup_plan(session: Session, run_id: str, axis: Axis, grid: Grid) -> _RollupPlan | None:
    return _rollup_plans(session, [run_id], axis, grid).get(run_id)


def _rollup_plans(session: Session, run_ids: Sequence[str], axis: Axis, grid: Grid) -> dict[str, _RollupPlan]:
    """Per run, the coarsest rollup level with MIN_BLOCKS_PER_BUCKET blocks per bucket, judged from
    the top-level blocks overlapping the range (a few rows per run, one statement for all); runs left
    out: read the rows themselves."""
    first, last = (getattr(StepRollup, c) for c in _ROLLUP_AXIS[axis])
    found = session.execute(
        select(
            StepRollup.run_id,
            func.sum(StepRollup.count),
            func.min(StepRollup.first_step),
            func.max(StepRollup.last_step),
        )
        .where(
            StepRollup.run_id.in_(run_ids),
            StepRollup.level == rollups.LEVELS[-1],
            last >= grid.start,
            first <= grid.end,
        )
        .group_by(StepRollup.run_id)
    ).all()
    plans = {}
    for run_id, rows, first_step, last_step in found:
        for level in reversed(rollups.LEVELS):
            if (rows or 0) >> level >= MIN_BLOCKS_PER_BUCKET * grid.points:
                plans[run_id] = _RollupPlan(level, first_step, last_step)
                break
    return plans


def _rollup_buckets(session: Session, run_id: str, axis: Axis, grid: Grid, plan: _RollupPlan) -> list[Bucket]:
    """A run's loss buckets from the blocks lying inside [start, end], each in the bucket of its
    first row, plus the rows of the partial blocks at the range's two ends, read directly."""
    first_x, last_x = (getattr(StepRollup, c) for c in _ROLLUP_AXIS[axis])
    r, level = StepRollup, plan.level
    index = _grid_index(session, first_x, grid).label("index")
    whole_bucket = {"partition_by": index, "order_by": r.block, "rows": (None, None)}
    blocks = (
        select(
            r,
            index,
            func.first_value(r.first).over(**whole_bucket).label("bucket_first"),
            func.last_value(r.last).over(**whole_bucket).label("bucket_last"),
            func.first_value(first_x).over(**whole_bucket).label("x_start"),
            func.last_value(last_x).over(**whole_bucket).label("x_end"),
        )
        .where(r.run_id == run_id, r.level == level, first_x >= grid.start, last_x <= grid.end)
        .subquery()
    )
    b = blocks.c
    rows = session.execute(
        select(
            b.index,
            func.sum(b.count).label("count"),
            func.sum(b.nan_count).label("nan"),
            func.sum(b.pos_inf_count).label("pos_inf"),
            func.sum(b.neg_inf_count).label("neg_inf"),
            func.sum(b.finite_sum).label("total"),
            func.min(b.min).label("min"),
            func.max(b.max).label("max"),
            func.min(b.first_step).label("first_step"),
            func.max(b.last_step).label("last_step"),
            # one value per bucket, repeated on each of its blocks: min() just picks it
            func.min(b.bucket_first, type_=FaithfulFloat()).label("first"),
            func.min(b.bucket_last, type_=FaithfulFloat()).label("last"),
            func.min(b.x_start).label("x_start"),
            func.min(b.x_end).label("x_end"),
        )
        .group_by(b.index)
        .order_by(b.index)
    ).all()
    if not rows:
        return _scanned_buckets(session, [run_id], "loss", axis, grid).get(run_id, [])
    middle = {
        index: Bucket(
            index,
            x_start,
            x_end,
            count,
            first,
            last,
            low,
            high,
            total if count - nan - pos_inf - neg_inf else None,
            nan,
            pos_inf,
            neg_inf,
        )
        for (index, count, nan, pos_inf, neg_inf, total, low, high, _, _, first, last, x_start, x_end) in map(
            tuple, rows
        )
    }
    block = 1 << level
    first_step, last_step = rows[0].first_step, rows[-1].last_step
    before, after = (
        {
            edge.index: edge
            for edge in _scanned_buckets(session, [run_id], "loss", axis, grid, steps=span).get(run_id, [])
        }
        if needed
        else {}
        for span, needed in (
            ((first_step - block, first_step - 1), first_step > plan.first_step),
            ((last_step + 1, last_step + block), last_step < plan.last_step),
        )
    )
    merged = []
    for index in sorted({*before, *middle, *after}):
        parts = [part[index] for part in (before, middle, after) if index in part]
        bucket = parts[0]
        for part in parts[1:]:
            bucket = bucket.merge(part)
        merged.append(bucket)
    return merged


def _scanned_buckets(
    session: Session,
    run_ids: Sequence[str],
    metric: Metric,
    axis: Axis,
    grid: Grid,
    raw: bool = False,
    steps: tuple[int, int] | None = None,
) -> dict[str, list[Bucket]]:
    """``buckets`` from the step rows; ``steps``: only the rows in that span of steps."""
    table, value, x = _columns(metric, axis)
    if raw:
        key = table.step
    else:
        key = _grid_index(session, x, grid)
    finite = and_(value > _NEG_INF, value < _INF)
    not_nan = value != _NAN
    in_range = _in_range(table, value, x, run_ids, grid.start, grid.end)
    if steps is not None:
        in_range = and_(in_range, table.step.between(*steps))
    grouped = (
        select(
            table.run_id,
            key.label("index"),
            func.count().label("count"),
            func.min(table.step).label("first_step"),
            func.max(table.step).label("last_step"),
            func.min(case((not_nan, value))).label("min"),
            func.max(case((not_nan, value))).label("max"),
            func.sum(case((finite, value))).label("total"),
            func.count(case((value == _NAN, 1))).label("nan"),
            func.count(case((value == _INF, 1))).label("pos_inf"),
            func.count(case((value == _NEG_INF, 1))).label("neg_inf"),
        )
        .where(in_range)
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
    for (
        run_id,
        index,
        count,
        _,
        _,
        low,
        high,
        total,
        nan,
        pos_inf,
        neg_inf,
        x_start,
        first_value,
        x_end,
        last_value,
    ) in rows:
        curves.setdefault(run_id, []).append(
            Bucket(
                index=index,
                x_start=x_start,
                x_end=x_end,
                count=count,
                first=first_value,
                last=last_value,
                min=low,
                max=high,
                total=total,
                nan=nan,
                pos_inf=pos_inf,
                neg_inf=neg_inf,
            )
        )
    return curves


def run_curve(
    session: Session,
    run_id: str,
    metric: Metric,
    axis: Axis,
    points: int,
    start: float | None = None,
    end: float | None = None,
) -> Curve:
    """``analysis.downsample.downsample`` of the run's rows, in SQL. ``run_id``: the run that holds
    the rows (a reused run's source)."""
    if start is None or end is None:
        full = x_range(session, run_id, metric, axis)
        if full is None:
            return Curve(raw=True, buckets=[])
        start, end = (full[0] if start is None else start), (full[1] if end is None else end)
    grid = Grid(start, end, points)
    plan = _rollup_plan(session, run_id, axis, grid) if metric == "loss" else None
    if plan is not None:  # thousands of rows per point: not raw, and no need to count them
        return Curve(raw=False, buckets=_rollup_buckets(session, run_id, axis, grid, plan), start=start, end=end)
    raw = is_raw(count_rows(session, run_id, metric, axis, start, end, up_to=points), points)
    found = _scanned_buckets(session, [run_id], metric, axis, grid, raw)
    return Curve(raw=raw, buckets=found.get(run_id, []), start=start, end=end)
