"""The live Celery workers and the queues they consume: each worker's main process writes its own row
(at start and on every sweep) and deletes it on a clean shutdown; /readyz and a run waiting for a
worker read them. A row not refreshed for ``live_within_s`` is a worker that is gone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session

from db.models import Worker, utcnow
from db.session import rows_matched
from optibench.settings import Settings


def live_within_s(settings: Settings) -> float:
    """A worker refreshes its row every sweep: one missed lease, or two missed sweeps, and it is gone."""
    return max(settings.lease_timeout_s, 2 * settings.sweep_interval_s)


def beat(session: Session, hostname: str, queues: Sequence[str], pid: int) -> None:
    """Insert or refresh the worker's row (an UPDATE first: every sweep but the first finds its row)."""
    now = utcnow()
    refreshed = rows_matched(
        session,
        update(Worker).where(Worker.hostname == hostname).values(queues=sorted(queues), pid=pid, last_seen=now),
    )
    if not refreshed:
        session.add(Worker(hostname=hostname, queues=sorted(queues), pid=pid, started_at=now, last_seen=now))


def forget(session: Session, hostname: str) -> None:
    session.execute(delete(Worker).where(Worker.hostname == hostname))


def live_since(settings: Settings) -> datetime:
    """The oldest ``last_seen`` of a live worker."""
    return utcnow() - timedelta(seconds=live_within_s(settings))


#: built once: /readyz reads it
_LIVE_QUEUES = select(Worker.queues).where(Worker.last_seen >= bindparam("since"))


def live_queues(session: Session, settings: Settings) -> Counter[str]:
    """How many live workers consume each queue (one indexed query)."""
    return queue_counts(session.connection().execute(_LIVE_QUEUES, {"since": live_since(settings)}).scalars())


def queue_counts(workers_queues: Iterable[list[str] | None]) -> Counter[str]:
    """How many of these workers (each its list of queues; None for no worker) consume each queue."""
    counts: Counter[str] = Counter()
    for queues in workers_queues:
        if queues:
            counts.update(queues)
    return counts
