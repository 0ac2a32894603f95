"""Every read and write the API and the worker make, in one place."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from db.models import (
    CANCELLED, FAILED, LOCAL_TEAM_ID, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Checkpoint, Comparison, Eval, Run, Step,
    utcnow,
)


_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class LeaseLost(Exception):
    """Another delivery of the same run now owns it; this one must stop writing."""


# --- comparisons -------------------------------------------------------------------------------


def create_comparison(session: Session, spec: dict[str, Any], steps_total: int | Sequence[int],
                      team_id: str = LOCAL_TEAM_ID, submitted_by: str | None = None) -> Comparison:
    """One queued run per optimizer entry × seed; ``steps_total`` is per entry, or one for all."""
    if isinstance(steps_total, int):
        steps_total = [steps_total] * len(spec["optimizers"])
    comparison = Comparison(name=spec["name"], spec=spec, tags=spec.get("tags", []), status=QUEUED,
                            team_id=team_id, submitted_by=submitted_by)
    position = 0
    for entry_index, entry in enumerate(spec["optimizers"]):
        for seed in spec["seeds"]:
            comparison.runs.append(Run(
                position=position, entry_index=entry_index, label=entry["label"], optimizer_name=entry["name"],
                optimizer_params=entry["params"], seed=seed, status=QUEUED, steps_total=steps_total[entry_index],
            ))
            position += 1
    session.add(comparison)
    session.flush()
    return comparison


def get_comparison(session: Session, comparison_id: str, team_id: str) -> Comparison | None:
    """The team's comparison, or None: another team's and deleted ones look exactly like missing ones."""
    return session.scalar(
        select(Comparison)
        .where(Comparison.id == comparison_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
        .options(selectinload(Comparison.runs))
    )


def _encode_cursor(comparison: Comparison) -> str:
    raw = json.dumps([comparison.created_at.isoformat(), comparison.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on anything that is not a cursor we issued."""
    try:
        created_at, comparison_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created_at), str(comparison_id)
    except Exception as exc:
        raise ValueError("malformed cursor") from exc


def list_comparisons(session: Session, team_id: str, limit: int,
                     cursor: str | None = None) -> tuple[list[Comparison], str | None]:
    """The team's history, newest first, keyset-paginated on (created_at, id) so deep pages stay as
    fast as the first."""
    query: Select = (select(Comparison)
                     .where(Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
                     .order_by(Comparison.created_at.desc(), Comparison.id.desc()))
    if cursor:
        created_at, comparison_id = decode_cursor(cursor)
        query = query.where(or_(
            Comparison.created_at < created_at,
            and_(Comparison.created_at == created_at, Comparison.id < comparison_id),
        ))
    rows = list(session.scalars(query.limit(limit + 1)))
    page = rows[:limit]
    return page, (_encode_cursor(page[-1]) if len(rows) > limit else None)


@dataclass(frozen=True)
class Progress:
    runs_total: int = 0
    runs_done: int = 0
    steps_total: int = 0
    steps_done: int = 0


def progress_of(session: Session, comparison_ids: Sequence[str]) -> dict[str, Progress]:
    """Progress of many comparisons in one aggregate query."""
    if not comparison_ids:
        return {}
    done = func.sum(case((Run.status.in_(TERMINAL), 1), else_=0))
    rows = session.execute(
        select(Run.comparison_id, func.count(), done, func.sum(Run.steps_total), func.sum(Run.steps_done))
        .where(Run.comparison_id.in_(comparison_ids))
        .group_by(Run.comparison_id)
    )
    return {cid: Progress(n, int(d or 0), int(st or 0), int(sd or 0)) for cid, n, d, st, sd in rows}


def comparison_status(run_statuses: Sequence[str]) -> str:
    """A comparison's status follows from its runs."""
    if all(s in TERMINAL for s in run_statuses):
        if CANCELLED in run_statuses:
            return CANCELLED
        return FAILED if FAILED in run_statuses else SUCCEEDED
    return QUEUED if all(s == QUEUED for s in run_statuses) else RUNNING


def refresh_comparison(session: Session, comparison_id: str) -> None:
    """Recompute status from the runs. The row lock makes concurrent finishers see each other."""
    comparison = session.scalar(select(Comparison).where(Comparison.id == comparison_id).with_for_update())
    statuses = list(session.scalars(select(Run.status).where(Run.comparison_id == comparison_id)))
    comparison.status = comparison_status(statuses)
    if comparison.status in TERMINAL and comparison.finished_at is None:
        comparison.finished_at = utcnow()


# --- runs: the lease ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    run_id: str
    attempt: int
    comparison_id: str
    entry_index: int
    seed: int
    steps_total: int
    spec: dict[str, Any]
    checkpoint: bytes | None = None  # resume from here; None: from step 0


def claim_run(session: Session, run_id: str, lease_timeout_s: float) -> Claim | None:
    """Take the run if it is queued or its holder's heartbeat is stale; None if someone else has it
    or it is finished. An earlier attempt's rows after its last checkpoint are dropped, so the run
    resumes exactly where the checkpoint left it (from step 0 without one)."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_timeout_s)
    checkpoint = session.execute(select(Checkpoint.step, Checkpoint.state).where(Checkpoint.run_id == run_id)).one_or_none()
    resume_step = checkpoint.step if checkpoint else 0
    kept_best = (select(func.min(Step.loss)).where(Step.run_id == run_id, Step.step < resume_step)
                 .scalar_subquery())
    claimed = session.execute(
        update(Run)
        .where(Run.id == run_id)
        .where(or_(Run.status == QUEUED, and_(Run.status == RUNNING, Run.heartbeat_at < stale)))
        .values(status=RUNNING, attempt=Run.attempt + 1, heartbeat_at=now, steps_done=resume_step, error=None,
                best_loss=kept_best, final_loss=None, diverged_step=None, wall_time_s=None,
                started_at=func.coalesce(Run.started_at, now))
        .returning(Run.attempt, Run.comparison_id, Run.entry_index, Run.seed, Run.steps_total)
    ).one_or_none()
    if claimed is None:
        return None
    attempt, comparison_id, entry_index, seed, steps_total = claimed
    session.execute(delete(Step).where(Step.run_id == run_id, Step.step >= resume_step))
    session.execute(delete(Eval).where(Eval.run_id == run_id, Eval.step > resume_step))
    refresh_comparison(session, comparison_id)
    spec = session.scalar(select(Comparison.spec).where(Comparison.id == comparison_id))
    return Claim(run_id, attempt, comparison_id, entry_index, seed, steps_total, spec,
                 checkpoint.state if checkpoint else None)


def _holding(run_id: str, attempt: int):
    return and_(Run.id == run_id, Run.attempt == attempt, Run.status == RUNNING)


def append_steps(session: Session, run_id: str, attempt: int, rows: list[dict[str, Any]],
                 best_loss: float | None, evals: list[dict[str, Any]] = (),
                 checkpoint: tuple[int, bytes] | None = None) -> str:
    """Write a flush (and the checkpoint taken right after it) and beat the heart, only while this
    attempt holds the lease. Returns the run's status as others left it: 'cancelled' stops the trainer."""
    steps_done = rows[-1]["step"] + 1 if rows else None
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if steps_done is not None:
        values["steps_done"] = steps_done
        values["best_loss"] = best_loss
    held = session.execute(update(Run).where(_holding(run_id, attempt)).values(**values)).rowcount
    if not held:
        status = session.scalar(select(Run.status).where(Run.id == run_id))
        if status == CANCELLED:
            return CANCELLED
        raise LeaseLost(f"run {run_id} attempt {attempt} no longer holds its lease (status {status})")
    insert_into = _INSERT[session.get_bind().dialect.name]
    for table, table_rows in ((Step, rows), (Eval, evals)):
        if table_rows:
            stmt = insert_into(table).on_conflict_do_nothing(index_elements=["run_id", "step"])
            session.execute(stmt, [{"run_id": run_id, **row} for row in table_rows])
    if checkpoint is not None:
        step, state = checkpoint
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        session.add(Checkpoint(run_id=run_id, step=step, state=state))
    return RUNNING


def finish_run(session: Session, run_id: str, attempt: int, status: str, *, steps_done: int | None = None,
               final_loss: float | None = None, best_loss: float | None = None, wall_time_s: float | None = None,
               diverged_step: int | None = None, device: str | None = None, error: str | None = None) -> bool:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    for key, value in (("steps_done", steps_done), ("final_loss", final_loss), ("best_loss", best_loss),
                       ("wall_time_s", wall_time_s), ("diverged_step", diverged_step), ("device", device)):
        if value is not None:
            values[key] = value
    held = session.execute(update(Run).where(_holding(run_id, attempt)).values(**values)).rowcount
    if held:
        session.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        comparison_id = session.scalar(select(Run.comparison_id).where(Run.id == run_id))
        refresh_comparison(session, comparison_id)
    return bool(held)


def cancel(session: Session, *, comparison_id: str | None = None, run_id: str | None = None) -> list[str]:
    """Cancel every unfinished run of a comparison, or one run. Queued runs end at once; a running
    run's trainer sees the status at its next flush and stops. Rows already written are kept."""
    query = select(Run.id, Run.comparison_id).where(Run.status.not_in(TERMINAL))
    query = query.where(Run.comparison_id == comparison_id) if comparison_id else query.where(Run.id == run_id)
    targets = session.execute(query.with_for_update()).all()
    if not targets:
        return []
    ids = [t.id for t in targets]
    session.execute(update(Run).where(Run.id.in_(ids), Run.status.not_in(TERMINAL))
                    .values(status=CANCELLED, finished_at=utcnow()))
    session.execute(delete(Checkpoint).where(Checkpoint.run_id.in_(ids)))
    for cid in {t.comparison_id for t in targets}:
        refresh_comparison(session, cid)
    return ids


def mark_enqueued(session: Session, run_ids: Sequence[str]) -> None:
    session.execute(update(Run).where(Run.id.in_(run_ids), Run.status == QUEUED).values(enqueued_at=utcnow()))


def unpublished_runs(session: Session, republish_before: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """The outbox: queued runs whose task was never published (the broker was down at submit), and
    those published before ``republish_before`` that nobody has taken (the broker may have lost them).
    Maps each run id to its steps_total."""
    unpublished = Run.enqueued_at.is_(None)
    if republish_before is not None:
        unpublished = or_(unpublished, Run.enqueued_at < republish_before)
    rows = session.execute(
        select(Run.id, Run.steps_total).where(Run.status == QUEUED, unpublished)
        .order_by(Run.comparison_id, Run.position).limit(limit)
    )
    return {run_id: steps_total for run_id, steps_total in rows}


def reap_stale_runs(session: Session, lease_timeout_s: float, max_attempts: int) -> tuple[list[str], list[str]]:
    """The watchdog: a 'running' run whose heartbeat is older than the lease lost its worker. It goes
    back to the outbox while attempts remain, else fails with the reason. Returns (requeued, failed)."""
    stale = utcnow() - timedelta(seconds=lease_timeout_s)
    rows = session.execute(
        select(Run.id, Run.attempt, Run.comparison_id)
        .where(Run.status == RUNNING, or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < stale))
        .with_for_update(skip_locked=True)
    ).all()
    requeued = [r.id for r in rows if r.attempt < max_attempts]
    failed = [r.id for r in rows if r.attempt >= max_attempts]
    if requeued:
        session.execute(update(Run).where(Run.id.in_(requeued)).values(status=QUEUED, enqueued_at=None))
    if failed:
        session.execute(update(Run).where(Run.id.in_(failed)).values(
            status=FAILED, finished_at=utcnow(),
            error=f"lost its worker {max_attempts} times (no heartbeat for {lease_timeout_s:.0f}s); giving up",
        ))
        session.execute(delete(Checkpoint).where(Checkpoint.run_id.in_(failed)))
    for cid in {r.comparison_id for r in rows}:
        refresh_comparison(session, cid)
    return requeued, failed


def requeue_orphans(session: Session, older_than: datetime) -> list[str]:
    """Runs left 'running' by a worker that died: back to the outbox, to be enqueued again."""
    orphans = list(session.scalars(
        select(Run.id).where(Run.status == RUNNING, or_(Run.heartbeat_at.is_(None), Run.heartbeat_at < older_than))
    ))
    if orphans:
        session.execute(update(Run).where(Run.id.in_(orphans), Run.status == RUNNING)
                        .values(status=QUEUED, enqueued_at=None))
    return orphans


# --- steps -------------------------------------------------------------------------------------


def get_run(session: Session, run_id: str, team_id: str) -> Run | None:
    """The team's run, or None, as for get_comparison."""
    return session.scalar(
        select(Run).join(Comparison)
        .where(Run.id == run_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
    )


def iter_evals(session: Session, run_id: str) -> list[Eval]:
    return list(session.scalars(select(Eval).where(Eval.run_id == run_id).order_by(Eval.step)))


def iter_steps(session: Session, run_id: str, chunk: int = 10_000) -> Iterator[Step]:
    query = select(Step).where(Step.run_id == run_id).order_by(Step.step).execution_options(yield_per=chunk)
    yield from session.scalars(query)
