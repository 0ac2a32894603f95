"""External runs: runs a client trains on its own machine and uploads (docs/ingest.md). They live beside a
comparison's catalogue runs, paired with them by seed; their lease is refreshed by every upload or heartbeat,
and the watchdog (``leases.reap_stale_runs``) fails one whose client went away, keeping its rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Unpack

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db import bulk
from db.comparisons import refresh_comparison
from db.models import CANCELLED, RUNNING, Comparison, Eval, Run, Step, utcnow
from db.session import rows_matched


class NotRunning(Exception):
    """The run is finished (or was never external): it takes no more rows; ``status`` says what it is."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id} is {status}: it takes no more steps")
        self.status = status


def create_run(
    session: Session,
    comparison: Comparison,
    *,
    label: str,
    optimizer_name: str,
    optimizer_params: dict[str, Any],
    seed: int,
    steps_total: int,
    device: str | None,
    hardware: dict[str, Any] | None,
    client: dict[str, Any] | None,
) -> Run:
    """A running external run at the end of the comparison's runs, its lease starting now."""
    now = utcnow()
    position = session.scalar(
        select(func.coalesce(func.max(Run.position), -1)).where(Run.comparison_id == comparison.id)
    )
    run = Run(
        comparison_id=comparison.id,
        position=int(position if position is not None else -1) + 1,
        entry_index=-1,  # no entry of the spec: never the spec's baseline
        label=label,
        optimizer_name=optimizer_name,
        optimizer_params=optimizer_params,
        seed=seed,
        status=RUNNING,
        steps_total=steps_total,
        attempt=1,
        device=device,
        hardware=hardware,
        client=client,
        external=True,
        execution="alone",
        heartbeat_at=now,
        started_at=now,
    )
    session.add(run)
    session.flush()
    refresh_comparison(session, comparison.id)
    return run


def _hold(session: Session, run_id: str, **values: Any) -> str:
    """Beat the heart of a running external run (taking its row lock, so one upload writes at a time);
    returns its status, 'running' when held. Raises NotRunning for a finished one."""
    held = rows_matched(
        session,
        update(Run)
        .where(Run.id == run_id, Run.external.is_(True), Run.status == RUNNING)
        .values(heartbeat_at=utcnow(), **values),
    )
    if held:
        return RUNNING
    status = session.scalar(select(Run.status).where(Run.id == run_id)) or "missing"
    if status == CANCELLED:
        return CANCELLED
    raise NotRunning(run_id, status)


def heartbeat(session: Session, run_id: str) -> str:
    """Extend the lease; 'cancelled' when someone cancelled the run (the client stops)."""
    return _hold(session, run_id)


def append_steps(session: Session, run_id: str, columns: Mapping[str, np.ndarray | None]) -> tuple[str, int]:
    """Store a batch of step rows (strictly increasing steps) through the worker's write path, idempotent by
    (run, step): rows already stored are kept, the others added. Returns the run's status (a cancelled run
    stores nothing) and how many of the batch's rows were new."""
    step = np.asarray(columns["step"], dtype=np.int64)
    loss = np.asarray(columns["loss"], dtype=np.float64)
    finite = loss[np.isfinite(loss)]
    batch_best = float(finite.min()) if len(finite) else None
    values: dict[str, Any] = {"steps_done": func.max(Run.steps_done, int(step[-1]) + 1)}
    if session.get_bind().dialect.name == "postgresql":
        values["steps_done"] = func.greatest(Run.steps_done, int(step[-1]) + 1)
    if batch_best is not None:
        least = func.least if session.get_bind().dialect.name == "postgresql" else func.min
        values["best_loss"] = func.coalesce(least(Run.best_loss, batch_best), batch_best)
    status = _hold(session, run_id, **values)
    if status != RUNNING:
        return status, 0
    before = _count(session, run_id, int(step[0]), int(step[-1]))
    bulk.ingest_steps(session, run_id, columns)
    return RUNNING, len(step) - before


def append_evals(session: Session, run_id: str, evals: Sequence[Mapping[str, Any]]) -> tuple[str, int]:
    """Store whole-set evaluations (one row per step), idempotent by (run, step) as the worker's flushes are:
    an evaluation already stored is kept. Returns the run's status (a cancelled run stores nothing) and how
    many evaluations were new."""
    status = _hold(session, run_id)
    if status != RUNNING or not evals:
        return status, 0
    steps = [int(row["step"]) for row in evals]
    before = int(
        session.scalar(select(func.count()).select_from(Eval).where(Eval.run_id == run_id, Eval.step.in_(steps))) or 0
    )
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Eval).on_conflict_do_nothing(index_elements=["run_id", "step"])
    session.execute(statement, [{"run_id": run_id, **row} for row in evals])
    return RUNNING, len(evals) - before


def _count(session: Session, run_id: str, first: int, last: int) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Step).where(Step.run_id == run_id, Step.step.between(first, last))
        )
        or 0
    )


class Outcome(TypedDict):
    """What the client says of how an external run ended, beside its status."""

    final_loss: float | None
    wall_time_s: float | None
    diverged_step: int | None
    error: str | None


def finish(session: Session, run_id: str, status: str, **outcome: Unpack[Outcome]) -> Run:
    """End a running external run with ``status``; raises NotRunning for a finished one (a cancelled one
    stays cancelled)."""
    run = session.scalar(select(Run).where(Run.id == run_id).with_for_update())
    assert run is not None, "the caller found the run"
    if not run.external or run.status != RUNNING:
        raise NotRunning(run_id, run.status)
    final_loss = outcome["final_loss"]
    run.status, run.finished_at, run.error = status, utcnow(), outcome["error"]
    run.final_loss, run.wall_time_s, run.diverged_step = final_loss, outcome["wall_time_s"], outcome["diverged_step"]
    if final_loss is not None and np.isfinite(final_loss):
        run.best_loss = final_loss if run.best_loss is None else min(run.best_loss, final_loss)
    session.flush()
    refresh_comparison(session, run.comparison_id)
    return run
