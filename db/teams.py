"""Teams, their API keys and limits, history edits, idempotent submits and share links."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Row, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from db import leases, workers
from db.models import (
    QUEUED,
    RUNNING,
    ApiKey,
    Comparison,
    DashboardSession,
    Eval,
    Run,
    ShareLink,
    Step,
    StepRollup,
    Team,
    Worker,
    utcnow,
)
from db.session import rows_matched
from optibench.settings import Settings

#: last_used_at is a hint for admins, not an audit log: at most one write per key per interval
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: a run's recorded data, which runs that reuse it read: steps and rollups have no foreign key to
#: runs, so deleting a run does not take them along
RUN_DATA = (Step, StepRollup, Eval)
#: the limit columns of a team, the Settings fields they override, and their `set-limits` options
LIMITS = {
    "max_runs_per_comparison": "--max-runs",
    "max_steps_per_comparison": "--max-steps",
    "max_running_comparisons": "--max-running",
}


# --- teams and keys ----------------------------------------------------------------------------


def create_team(session: Session, name: str, **limits: int | None) -> Team:
    team = Team(name=name, **limits)
    session.add(team)
    session.flush()
    return team


def find_team(session: Session, name_or_id: str) -> Team | None:
    return session.scalar(select(Team).where(or_(Team.name == name_or_id, Team.id == name_or_id)))


def set_limits(team: Team, **limits: int | None) -> None:
    """Set the given limits; 0 clears one, so that the setting of the same name applies again."""
    for column, value in limits.items():
        if value is not None:
            setattr(team, column, value or None)


def add_key(session: Session, team_id: str, name: str, role: str, key_hash: str, prefix: str) -> ApiKey:
    key = ApiKey(team_id=team_id, name=name, role=role, key_hash=key_hash, prefix=prefix)
    session.add(key)
    session.flush()
    return key


#: what authenticating a request reads of its key, as a plain row from a statement built once: every
#: request with a key runs it, and building an ORM query and object cost more than the query
_KEY_BY_HASH = select(
    ApiKey.id, ApiKey.team_id, ApiKey.role, ApiKey.name, ApiKey.revoked_at, ApiKey.last_used_at
).where(ApiKey.key_hash == bindparam("key_hash"))


def key_by_hash(session: Session, key_hash: str) -> Row | None:
    """The key's id, team_id, role, name, revoked_at and last_used_at."""
    return session.connection().execute(_KEY_BY_HASH, {"key_hash": key_hash}).first()


def key_by_id(session: Session, key_id: str, team_id: str | None = None) -> ApiKey | None:
    query = select(ApiKey).where(ApiKey.id == key_id)
    return session.scalar(query if team_id is None else query.where(ApiKey.team_id == team_id))


def keys_by_id_or_prefix(session: Session, id_or_prefix: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(or_(ApiKey.id == id_or_prefix, ApiKey.prefix == id_or_prefix))))


# --- dashboard sessions ------------------------------------------------------------------------


def add_dashboard_session(session: Session, session_id: str, key_id: str, lifetime: timedelta) -> None:
    now = utcnow()
    session.add(DashboardSession(id=session_id, key_id=key_id, created_at=now, expires_at=now + lifetime))


#: what authenticating a dashboard request reads: its key's columns (as _KEY_BY_HASH) and the
#: session's, through the primary key, built once like the key lookup
_KEY_BY_SESSION = (
    select(
        ApiKey.id,
        ApiKey.team_id,
        ApiKey.role,
        ApiKey.name,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        DashboardSession.expires_at,
        DashboardSession.revoked_at.label("session_revoked_at"),
    )
    .join(ApiKey, ApiKey.id == DashboardSession.key_id)
    .where(DashboardSession.id == bindparam("session_id"))
)


def key_by_session(session: Session, session_id: str) -> Row | None:
    """The session's key (the columns of ``key_by_hash``), its ``expires_at`` and ``session_revoked_at``."""
    return session.connection().execute(_KEY_BY_SESSION, {"session_id": session_id}).first()


def end_dashboard_session(session: Session, session_id: str) -> None:
    session.execute(
        update(DashboardSession)
        .where(DashboardSession.id == session_id, DashboardSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def list_keys(session: Session, team_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.team_id == team_id).order_by(ApiKey.created_at)))


def revoke_key(key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()


def touch_key(session: Session, key: ApiKey | Row) -> bool:
    """Record the key's use unless that was done less than LAST_USED_RESOLUTION ago; the condition
    is in the UPDATE too, so concurrent requests write once. Returns whether anything is to commit."""
    now = utcnow()
    stale = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at > stale:
        return False
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key.id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale))
        .values(last_used_at=now)
    )
    return True


# --- limits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    name: str
    value: int
    #: True when the team's own row sets it, False when the setting applies
    per_team: bool

    def how_to_change(self, team_name: str) -> str:
        option = f"`optibench admin set-limits {team_name} {LIMITS[self.name]} N`"
        if self.per_team:
            return f"this team's own limit; an operator changes it with {option}"
        return f"change it with OPTIBENCH_{self.name.upper()}, or for this team with {option}"


class LimitExceeded(Exception):
    def __init__(self, limit: Limit, message: str) -> None:
        super().__init__(message)
        self.limit = limit


def limits_of(team: Team | Row, settings: Settings) -> dict[str, Limit]:
    return {
        name: Limit(name, getattr(team, name) or getattr(settings, name), getattr(team, name) is not None)
        for name in LIMITS
    }


class Admitted(NamedTuple):
    """What the limit check of an admitted submit read on its way."""

    #: the team's other comparisons queued or running: the backlog ahead of this one
    backlog: int
    #: how many live workers consume each queue (db.workers.live_queues)
    served: Counter[str]


#: what the limits read of a team: its name and its own limits
_TEAM_LIMITS = select(Team.name, *(getattr(Team, name) for name in LIMITS)).where(Team.id == bindparam("team_id"))
#: on PostgreSQL, with the advisory lock that serialises a team's submits (keys 0x6F62, "ob", and the team's
#: id, hashed) taken in the same statement; until the transaction ends, the team's other submits wait for it
_TEAM_LIMITS_LOCKED = _TEAM_LIMITS.add_columns(func.pg_advisory_xact_lock(0x6F62, func.hashtext(bindparam("team_id"))))
#: the team's comparisons queued or running, but the one this transaction submits, beside each live
#: worker's queues (one row per live worker, or one row whose queues are NULL)
_ACTIVE_AND_WORKERS = (
    select(
        select(func.count())
        .select_from(Comparison)
        .where(
            Comparison.team_id == bindparam("team_id"),
            Comparison.status.in_((QUEUED, RUNNING)),
            Comparison.deleted_at.is_(None),
            Comparison.id != bindparam("submitted"),
        )
        .scalar_subquery(),
        Worker.queues,
    )
    .select_from(Team)
    .outerjoin(Worker, Worker.last_seen >= bindparam("since"))
    .where(Team.id == bindparam("team_id"))
)


def check_submit_limits(
    session: Session, team_id: str, settings: Settings, run_steps: list[int], submitted: str = ""
) -> Admitted:
    """Raise LimitExceeded if a comparison of these runs (their step counts) is over a limit of the
    team. From the first statement on, the team's other submits wait until this transaction ends, so
    that concurrent submits count each other's comparisons. ``submitted``: the comparison's id when this
    transaction has inserted it already, which is then not counted; inserting first keeps the wait
    short, until the commit. Two statements, each built once: a submit runs them both. Returns the
    team's other comparisons queued or running, and the live workers' queues, read with that count."""
    connection = session.connection()
    # a lock on the team's submits until the transaction ends: on PostgreSQL an advisory lock, not the
    # team's row, which the comparison inserted holds FOR KEY SHARE (its foreign key): raising that to a
    # row lock costs the server a multixact per submit. SQLite serialises writers anyway.
    locking = connection.dialect.name == "postgresql"
    team = connection.execute(_TEAM_LIMITS_LOCKED if locking else _TEAM_LIMITS, {"team_id": team_id}).one()
    limits = limits_of(team, settings)

    runs, steps = limits["max_runs_per_comparison"], limits["max_steps_per_comparison"]
    if len(run_steps) > runs.value:
        raise LimitExceeded(
            runs,
            f"{len(run_steps)} runs exceed the limit of {runs.value} "
            f"runs per comparison ({runs.how_to_change(team.name)})",
        )
    if sum(run_steps) > steps.value:
        raise LimitExceeded(
            steps,
            f"{sum(run_steps)} steps over all runs exceed the limit of {steps.value} "
            f"steps per comparison ({steps.how_to_change(team.name)})",
        )
    running = limits["max_running_comparisons"]
    rows = connection.execute(
        _ACTIVE_AND_WORKERS, {"team_id": team_id, "submitted": submitted, "since": workers.live_since(settings)}
    ).all()
    active = rows[0][0]
    if active >= running.value:
        raise LimitExceeded(
            running,
            f"the team has {active} comparisons queued or running, the most it may have "
            f"at once is {running.value}: wait for one to finish or cancel one "
            f"({running.how_to_change(team.name)})",
        )
    return Admitted(int(active), workers.queue_counts(queues for _, queues in rows))


# --- history -----------------------------------------------------------------------------------


def by_idempotency_key(session: Session, team_id: str, key: str) -> Comparison | None:
    """Deleted comparisons too: a key stays spent."""
    return session.scalar(select(Comparison).where(Comparison.team_id == team_id, Comparison.idempotency_key == key))


def soft_delete(session: Session, comparison: Comparison) -> None:
    """Hide it from history and every read; unfinished runs are cancelled, rows stay until purged."""
    leases.cancel(session, comparison_id=comparison.id)
    comparison.deleted_at = utcnow()


def purge_deleted(session: Session, deleted_before: datetime) -> int:
    """Delete comparisons soft-deleted before ``deleted_before``, with every row they own. A purged
    run that other comparisons' runs reuse hands its rows to the first of them, which becomes the
    source of the others. Returns how many comparisons were purged."""
    doomed = select(Comparison.id).where(Comparison.deleted_at < deleted_before)
    doomed_runs = select(Run.id).where(Run.comparison_id.in_(doomed))
    sources = session.execute(
        select(Run.reused_from_id, func.min(Run.id))
        .where(Run.reused_from_id.in_(doomed_runs), Run.comparison_id.not_in(doomed))
        .group_by(Run.reused_from_id)
    ).all()
    for source, heir in sources:
        for table in RUN_DATA:
            session.execute(update(table).where(table.run_id == source).values(run_id=heir))
        session.execute(
            update(Run).where(Run.reused_from_id == source).values(reused_from_id=func.nullif(heir, Run.id))
        )
    for table in RUN_DATA:
        session.execute(delete(table).where(table.run_id.in_(doomed_runs)))
    return rows_matched(session, delete(Comparison).where(Comparison.id.in_(doomed)))


# --- share links -------------------------------------------------------------------------------


def create_share_link(session: Session, comparison_id: str, created_by: str, expires_in: timedelta) -> ShareLink:
    link = ShareLink(comparison_id=comparison_id, created_by=created_by, expires_at=utcnow() + expires_in)
    session.add(link)
    session.flush()
    return link


def share_links(session: Session, comparison_id: str) -> list[ShareLink]:
    return list(
        session.scalars(
            select(ShareLink).where(ShareLink.comparison_id == comparison_id).order_by(ShareLink.created_at)
        )
    )


def team_share_link(session: Session, link_id: str, team_id: str) -> ShareLink | None:
    return session.scalar(
        select(ShareLink)
        .join(Comparison)
        .where(ShareLink.id == link_id, Comparison.team_id == team_id, Comparison.deleted_at.is_(None))
    )


def shared_comparison(session: Session, link_id: str) -> Comparison | None:
    """The comparison a live link shows: not revoked, not expired, the comparison not deleted."""
    return session.scalar(
        select(Comparison)
        .join(ShareLink)
        .where(
            ShareLink.id == link_id,
            ShareLink.revoked_at.is_(None),
            ShareLink.expires_at > utcnow(),
            Comparison.deleted_at.is_(None),
        )
        .options(selectinload(Comparison.runs))
    )
