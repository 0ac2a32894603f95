"""Free-form tracked runs (docs/tracking.md): their rows and their metrics, stored long, one row per logged
value. A run's lease is renewed by every upload or heartbeat; ``reap_stale`` fails one whose client went
away, keeping its metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from db import columnar
from db.models import FAILED, RUNNING, TrackedMetric, TrackedRun, utcnow
from db.session import rows_matched

#: the kinds of tracked_metrics' columns for ``columnar.insert``
_METRIC_KINDS = {"run_id": "text", "name": "text", "step": "int4", "value": "faithful"}


class NotRunning(Exception):
    """The run is finished: it takes no more metrics; ``status`` says how it ended."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"tracked run {run_id} is {status}: it takes no more metrics")
        self.status = status


def get_run(session: Session, run_id: str, team_id: str) -> TrackedRun | None:
    """The team's run, or None (another team's looks missing)."""
    return session.scalar(select(TrackedRun).where(TrackedRun.id == run_id, TrackedRun.team_id == team_id))


def run_with_key(session: Session, team_id: str, project: str, key: str) -> TrackedRun | None:
    """The run the team's project created with the client's idempotency ``key``, if any."""
    for run_id, client in session.execute(
        select(TrackedRun.id, TrackedRun.client).where(TrackedRun.team_id == team_id, TrackedRun.project == project)
    ):
        if (client or {}).get("key") == key:
            return session.get(TrackedRun, run_id)
    return None


def create_run(session: Session, team_id: str, project: str, **values: Any) -> TrackedRun:
    """A running tracked run, its lease starting now."""
    now = utcnow()
    run = TrackedRun(team_id=team_id, project=project, status=RUNNING, created_at=now, heartbeat_at=now, **values)
    session.add(run)
    session.flush()
    return run


def hold(session: Session, run_id: str) -> str:
    """Renew a running run's lease (taking its row lock, so one upload writes at a time); 'running'. Raises
    NotRunning for a finished one."""
    held = rows_matched(
        session,
        update(TrackedRun).where(TrackedRun.id == run_id, TrackedRun.status == RUNNING).values(heartbeat_at=utcnow()),
    )
    if held:
        return RUNNING
    raise NotRunning(run_id, session.scalar(select(TrackedRun.status).where(TrackedRun.id == run_id)) or "missing")


def append_metrics(session: Session, run_id: str, step: np.ndarray, metrics: Mapping[str, np.ma.MaskedArray]) -> int:
    """Store a batch's logged values (masked entries: not logged at that step), idempotent by (run, name,
    step): values already stored are kept. Renews the lease; raises NotRunning for a finished run. Returns
    how many values were new."""
    hold(session, run_id)
    names: list[str] = []
    logged_names: list[str] = []
    steps: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for name, column in metrics.items():
        logged = ~np.ma.getmaskarray(column)
        if not logged.any():
            continue
        logged_names.append(name)
        names += [name] * int(logged.sum())
        steps.append(step[logged])
        values.append(np.ma.getdata(column)[logged].astype(np.float64))
    rows = len(names)
    if not rows:
        return 0
    first, last = int(step[0]), int(step[-1])
    before = _count(session, run_id, logged_names, first, last)
    columnar.insert(
        session,
        TrackedMetric.__tablename__,
        _METRIC_KINDS,
        {"run_id": run_id, "name": names, "step": np.concatenate(steps), "value": np.concatenate(values)},
        rows,
        # nothing stored in the batch's range (the usual case): no conflict is possible, so no staging table
        skip_existing=before > 0,
    )
    return rows if before == 0 else _count(session, run_id, logged_names, first, last) - before


def _count(session: Session, run_id: str, names: list[str], first: int, last: int) -> int:
    """Values stored in the batch's range: one range of the primary key's index per name."""
    counted = session.scalar(
        select(func.count())
        .select_from(TrackedMetric)
        .where(
            TrackedMetric.run_id == run_id,
            TrackedMetric.name.in_(names),
            TrackedMetric.step.between(first, last),
        )
    )
    return int(counted or 0)


def finish(session: Session, run_id: str, status: str, error: str | None) -> TrackedRun:
    """End a running run with ``status``; raises NotRunning for a finished one."""
    run = session.scalar(select(TrackedRun).where(TrackedRun.id == run_id).with_for_update())
    assert run is not None, "the caller found the run"
    if run.status != RUNNING:
        raise NotRunning(run_id, run.status)
    run.status, run.finished_at, run.error = status, utcnow(), error
    session.flush()
    return run


def metric_rows(session: Session, run_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every logged value of the run as columns: names, steps, values, ordered by step then name."""
    rows = session.execute(
        select(TrackedMetric.name, TrackedMetric.step, TrackedMetric.value)
        .where(TrackedMetric.run_id == run_id)
        .order_by(TrackedMetric.step, TrackedMetric.name)
    ).all()
    if not rows:
        return [], np.empty(0, np.int64), np.empty(0, np.float64)
    names, steps, values = zip(*rows, strict=True)
    return list(names), np.asarray(steps, np.int64), np.asarray(values, np.float64)


def project_runs(session: Session, team_id: str, project: str) -> list[TrackedRun]:
    """The team's runs of ``project``, oldest first."""
    return list(
        session.scalars(
            select(TrackedRun)
            .where(TrackedRun.team_id == team_id, TrackedRun.project == project)
            .order_by(TrackedRun.created_at, TrackedRun.id)
        )
    )


def last_values(session: Session, run_ids: Sequence[str]) -> dict[tuple[str, str], tuple[int, float]]:
    """(run, metric) -> (step, value) of each metric's last logged value in each run."""
    if not run_ids:
        return {}
    last = (
        select(TrackedMetric.run_id, TrackedMetric.name, func.max(TrackedMetric.step).label("step"))
        .where(TrackedMetric.run_id.in_(run_ids))
        .group_by(TrackedMetric.run_id, TrackedMetric.name)
        .subquery()
    )
    rows = session.execute(
        select(TrackedMetric.run_id, TrackedMetric.name, TrackedMetric.step, TrackedMetric.value).join(
            last,
            and_(
                TrackedMetric.run_id == last.c.run_id,
                TrackedMetric.name == last.c.name,
                TrackedMetric.step == last.c.step,
            ),
        )
    )
    return {(run_id, name): (step, value) for run_id, name, step, value in rows}


def reap_stale(session: Session, lease_timeout_s: float) -> list[str]:
    """The watchdog: running tracked runs whose client sent nothing for a lease fail, keeping their metrics.
    Returns their ids."""
    stale = utcnow() - timedelta(seconds=lease_timeout_s)
    abandoned = list(
        session.scalars(
            select(TrackedRun.id)
            .where(TrackedRun.status == RUNNING, TrackedRun.heartbeat_at < stale)
            .with_for_update(skip_locked=True)
        )
    )
    if abandoned:
        session.execute(
            update(TrackedRun)
            .where(TrackedRun.id.in_(abandoned))
            .values(
                status=FAILED,
                finished_at=utcnow(),
                error=f"its client sent nothing for {lease_timeout_s:.0f}s (no upload or heartbeat); metrics kept",
            )
        )
    return abandoned
