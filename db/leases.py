"""The worker's side of a run: claiming it under a lease, heartbeats and flushes, finishing, cancelling,
the outbox of runs to publish, and reaping runs whose worker died."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import BindParameter, ColumnElement, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from db import bulk, rollups
from db.comparisons import refresh_comparison, stop_adaptive
from db.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    TERMINAL,
    Checkpoint,
    Comparison,
    Eval,
    Run,
    Step,
    table_of,
    utcnow,
)
from db.session import rows_matched

_INSERT: dict[str, Callable[..., postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


class LeaseLost(Exception):
    """Another delivery of the same run now owns it; this one must stop writing."""


@dataclass(frozen=True)
class Claim:
    run_id: str
    attempt: int
    comparison_id: str
    entry_index: int
    seed: int
    steps_total: int
    spec: dict[str, Any]
    #: the run's own, exact params (a swept run's differ from its spec entry's)
    optimizer_params: dict[str, Any]
    #: the device kind the run was routed to ('cpu', 'cuda'); None for runs created before it was stored
    device: str | None = None
    checkpoint: bytes | None = None  # resume from here; None: from step 0


def claim_run(session: Session, run_id: str, lease_timeout_s: float) -> Claim | None:
    """Take the run if it is queued or its holder's heartbeat is stale; None if someone else has it
    or it is finished. An earlier attempt's rows after its last checkpoint are dropped, so the run
    resumes exactly where the checkpoint left it (from step 0 without one)."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_timeout_s)
    checkpoint = session.execute(
        select(Checkpoint.step, Checkpoint.state).where(Checkpoint.run_id == run_id)
    ).one_or_none()
    resume_step = checkpoint.step if checkpoint else 0
    kept_best = select(func.min(Step.loss)).where(Step.run_id == run_id, Step.step < resume_step).scalar_subquery()
    claimed = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.external.is_(False))
        .where(or_(Run.status == QUEUED, and_(Run.status == RUNNING, Run.heartbeat_at < stale)))
        .values(
            status=RUNNING,
            attempt=Run.attempt + 1,
            heartbeat_at=now,
            steps_done=resume_step,
            error=None,
            best_loss=kept_best,
            final_loss=None,
            diverged_step=None,
            wall_time_s=None,
            started_at=func.coalesce(Run.started_at, now),
        )
        .returning(
            Run.attempt, Run.comparison_id, Run.entry_index, Run.seed, Run.steps_total, Run.optimizer_params, Run.device
        )
    ).one_or_none()
    if claimed is None:
        return None
    attempt, comparison_id, entry_index, seed, steps_total, optimizer_params, device = claimed
    if attempt > 1:  # only an earlier attempt can have left rows
        session.execute(delete(Step).where(Step.run_id == run_id, Step.step >= resume_step))
        rollups.rebuild(session, run_id, resume_step)
        session.execute(delete(Eval).where(Eval.run_id == run_id, Eval.step > resume_step))
    refresh_comparison(session, comparison_id)
    spec = session.execute(select(Comparison.spec).where(Comparison.id == comparison_id)).scalar_one()
    return Claim(
        run_id,
        attempt,
        comparison_id,
        entry_index,
        seed,
        steps_total,
        spec,
        optimizer_params,
        device,
        checkpoint.state if checkpoint else None,
    )


def _holding(run_id: str | BindParameter[Any], attempt: int | BindParameter[Any]) -> ColumnElement[bool]:
    return and_(Run.id == run_id, Run.attempt == attempt, Run.status == RUNNING)


@lru_cache
def _heartbeat(flushed: bool):
    """append_steps' lease check and heartbeat, built once: it runs at every flush."""
    values = {"heartbeat_at": bindparam("now", type_=Run.heartbeat_at.type)}
    if flushed:
        values.update(
            steps_done=bindparam("steps_done", type_=Run.steps_done.type),
            best_loss=bindparam("best_loss", type_=Run.best_loss.type),
        )
    return update(table_of(Run)).where(_holding(bindparam("holder"), bindparam("holder_attempt"))).values(values)


def append_steps(
    session: Session,
    run_id: str,
    attempt: int,
    steps: Mapping[str, Sequence[Any] | np.ndarray | None] | None,
    best_loss: float | None,
    evals: Sequence[dict[str, Any]] = (),
    checkpoint: tuple[int, bytes] | None = None,
) -> str:
    """Write a flush (step rows as columns, see ``StepBatch.columns``; evaluations; the checkpoint
    taken right after it) and beat the heart, only while this attempt holds the lease. Returns the
    run's status as others left it: 'cancelled' stops the trainer."""
    values: dict[str, Any] = {"holder": run_id, "holder_attempt": attempt, "now": utcnow()}
    flushed_steps = steps["step"] if steps else None
    flushed = False
    if flushed_steps is not None and len(flushed_steps):
        flushed = True
        values.update(steps_done=int(flushed_steps[-1]) + 1, best_loss=best_loss)
    held = session.connection().execute(_heartbeat(flushed), values).rowcount
    if not held:
        status = session.scalar(select(Run.status).where(Run.id == run_id))
        if status == CANCELLED:
            return CANCELLED
        raise LeaseLost(f"run {run_id} attempt {attempt} no longer holds its lease (status {status})")
    if steps:
        bulk.ingest_steps(session, run_id, steps)
    if evals:
        statement = _INSERT[session.get_bind().dialect.name](Eval).on_conflict_do_nothing(
            index_elements=["run_id", "step"]
        )
        session.execute(statement, [{"run_id": run_id, **row} for row in evals])
    if checkpoint is not None:
        step, state = checkpoint
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        session.add(Checkpoint(run_id=run_id, step=step, state=state))
    return RUNNING


def finish_run(
    session: Session,
    run_id: str,
    attempt: int,
    status: str,
    *,
    steps_done: int | None = None,
    final_loss: float | None = None,
    best_loss: float | None = None,
    wall_time_s: float | None = None,
    diverged_step: int | None = None,
    device: str | None = None,
    error: str | None = None,
    hardware: dict[str, Any] | None = None,
    execution: str | None = None,
) -> bool:
    """End a held run; ``execution``: how it trained ('alone' or 'ensemble'), which reuse compares."""
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    for key, value in (
        ("steps_done", steps_done),
        ("final_loss", final_loss),
        ("best_loss", best_loss),
        ("wall_time_s", wall_time_s),
        ("diverged_step", diverged_step),
        ("device", device),
        ("hardware", hardware),
        ("execution", execution),
    ):
        if value is not None:
            values[key] = value
    held = rows_matched(session, update(Run).where(_holding(run_id, attempt)).values(**values))
    if held:
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        comparison_id = session.execute(select(Run.comparison_id).where(Run.id == run_id)).scalar_one()
        refresh_comparison(session, comparison_id)
    return bool(held)


def cancel(session: Session, *, comparison_id: str | None = None, run_id: str | None = None) -> list[str]:
    """Cancel every unfinished run of a comparison, or one run. Queued runs end at once; a running
    run's trainer sees the status at its next flush and stops. Rows already written are kept."""
    query = select(Run.id, Run.comparison_id).where(Run.status.not_in(TERMINAL))
    query = query.where(Run.comparison_id == comparison_id) if comparison_id else query.where(Run.id == run_id)
    targets = session.execute(query.with_for_update()).all()
    if not targets:
        if comparison_id:  # between two rounds of adaptive seeding
            stop_adaptive(session, comparison_id)
        return []
    ids = [t.id for t in targets]
    session.execute(
        update(Run).where(Run.id.in_(ids), Run.status.not_in(TERMINAL)).values(status=CANCELLED, finished_at=utcnow())
    )
    session.execute(delete(Checkpoint).where(Checkpoint.run_id.in_(ids)))
    for cid in {t.comparison_id for t in targets}:
        refresh_comparison(session, cid)
    return ids


def fail_unfinished(session: Session, comparison_id: str, error: str) -> list[str]:
    """Fail every unfinished run of a comparison with ``error`` (a submit that broke after storing
    it), so that nothing stays queued with no one to train it."""
    ids = list(session.scalars(select(Run.id).where(Run.comparison_id == comparison_id, Run.status.not_in(TERMINAL))))
    if ids:
        session.execute(
            update(Run)
            .where(Run.id.in_(ids), Run.status.not_in(TERMINAL))
            .values(status=FAILED, error=error, finished_at=utcnow())
        )
        refresh_comparison(session, comparison_id)
    return ids


_MARK_ENQUEUED = (
    update(table_of(Run))
    .where(Run.id.in_(bindparam("ids", expanding=True)), Run.status == QUEUED)
    .values(enqueued_at=bindparam("at", type_=Run.enqueued_at.type))
)


def mark_enqueued(session: Session, run_ids: Sequence[str], published: bool = True) -> None:
    """Mark queued runs published (now), or not (back in the outbox)."""
    session.connection().execute(_MARK_ENQUEUED, {"ids": list(run_ids), "at": utcnow() if published else None})


@dataclass(frozen=True)
class Publish:
    """What publishing a run's task needs: its time limits follow from its steps, its queue from its device."""

    steps_total: int
    device: str | None
    #: its priority follows from its comparison's place in the team's backlog (backlog_ahead)
    comparison_id: str | None = None

    @classmethod
    def of(cls, run: Run) -> Publish:
        return cls(run.steps_total, run.device, run.comparison_id)


def unpublished_runs(
    session: Session, republish_before: datetime | None = None, limit: int = 500, comparison_id: str | None = None
) -> dict[str, Publish]:
    """The outbox: queued runs whose task was never published (the broker was down at submit, or a
    tuning job's final phase was just created), and those published before ``republish_before`` that
    nobody has taken (the broker may have lost them)."""
    unpublished: ColumnElement[bool] = Run.enqueued_at.is_(None)
    if republish_before is not None:
        unpublished = or_(unpublished, Run.enqueued_at < republish_before)
    query = select(Run.id, Run.steps_total, Run.device, Run.comparison_id).where(Run.status == QUEUED, unpublished)
    if comparison_id is not None:
        query = query.where(Run.comparison_id == comparison_id)
    rows = session.execute(query.order_by(Run.comparison_id, Run.position).limit(limit))
    return {run_id: Publish(steps_total, device, cid) for run_id, steps_total, device, cid in rows}


def published_runs(session: Session, published_before: datetime, limit: int = 50_000) -> dict[str, Publish]:
    """Queued runs published before ``published_before`` and not taken since: their message should be
    in the broker (worker.sweeper.republish_lost checks that it is). Served by the index on enqueued_at."""
    rows = session.execute(
        select(Run.id, Run.steps_total, Run.device, Run.comparison_id)
        .where(Run.enqueued_at < published_before, Run.status == QUEUED)
        .limit(limit)
    )
    return {run_id: Publish(steps_total, device, cid) for run_id, steps_total, device, cid in rows}


def backlog_ahead(session: Session, comparison_ids: Sequence[str]) -> dict[str, int]:
    """For each comparison, how many of its team's comparisons created before it are queued or running:
    the more a team has waiting, the later its next work is served (worker.dispatch's priorities)."""
    earlier = aliased(Comparison)
    rows = session.execute(
        select(Comparison.id, func.count(earlier.id))
        .outerjoin(
            earlier,
            and_(
                earlier.team_id == Comparison.team_id,
                earlier.status.in_((QUEUED, RUNNING)),
                earlier.created_at < Comparison.created_at,
            ),
        )
        .where(Comparison.id.in_(list(set(comparison_ids))))
        .group_by(Comparison.id)
    )
    return dict(rows.all())


def reap_stale_runs(session: Session, lease_timeout_s: float, max_attempts: int) -> tuple[list[str], list[str]]:
    """The watchdog: a 'running' run whose heartbeat is older than the lease lost its worker. It goes
    back to the outbox while attempts remain, else fails with the reason. Returns (requeued, failed)."""
    stale = utcnow() - timedelta(seconds=lease_timeout_s)
    rows = session.execute(
        select(Run.id, Run.attempt, Run.comparison_id, Run.external)
        .where(Run.status == RUNNING, or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < stale))
        .with_for_update(skip_locked=True)
    ).all()
    # an external run's client trains it: no worker can take it over
    requeued = [r.id for r in rows if r.attempt < max_attempts and not r.external]
    failed = [r.id for r in rows if r.attempt >= max_attempts and not r.external]
    abandoned = [r.id for r in rows if r.external]
    if requeued:
        session.execute(update(Run).where(Run.id.in_(requeued)).values(status=QUEUED, enqueued_at=None))
    for ending, error in (
        (failed, f"lost its worker {max_attempts} times (no heartbeat for {lease_timeout_s:.0f}s); giving up"),
        (abandoned, f"its client sent nothing for {lease_timeout_s:.0f}s (no upload or heartbeat); rows kept"),
    ):
        if ending:
            session.execute(
                update(Run).where(Run.id.in_(ending)).values(status=FAILED, finished_at=utcnow(), error=error)
            )
    if failed:
        session.execute(delete(Checkpoint).where(Checkpoint.run_id.in_(failed)))
    failed += abandoned
    for cid in {r.comparison_id for r in rows}:
        refresh_comparison(session, cid)
    return requeued, failed


def requeue_orphans(session: Session, older_than: datetime) -> list[str]:
    """Runs left 'running' by a worker that died: back to the outbox, to be enqueued again."""
    orphans = list(
        session.scalars(
            select(Run.id).where(
                Run.status == RUNNING,
                Run.external.is_(False),
                or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < older_than),
            )
        )
    )
    if orphans:
        session.execute(
            update(Run).where(Run.id.in_(orphans), Run.status == RUNNING).values(status=QUEUED, enqueued_at=None)
        )
    return orphans
