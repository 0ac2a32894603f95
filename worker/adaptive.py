"""Adaptive seeding's round task: sent after the commit that ended a round's last run, it evaluates the
round and publishes the next one's runs (db.adaptive). It takes ids, re-reads everything under the
comparison's row lock, and does nothing for a round already evaluated, so redelivery is harmless."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from db import adaptive, leases
from db.models import Comparison, utcnow
from db.session import transaction
from engine.identity import device_kind
from optibench.settings import get_settings
from worker.celery_app import ADAPTIVE_TASK, celery_app
from worker.dispatch import enqueue_runs

log = logging.getLogger(__name__)


@celery_app.task(name=ADAPTIVE_TASK)
def adaptive_round(comparison_id: str, round_: int) -> int:
    """Evaluate round ``round_`` of the comparison and publish the runs it adds; returns how many."""
    with transaction() as session:
        spec = session.scalar(select(Comparison.spec).where(Comparison.id == comparison_id))
    if spec is None:
        return 0
    adaptive.pair_design(spec, adaptive.settings_count(spec) - 1)  # calibrated now, not under the lock
    with transaction() as session:
        added = adaptive.next_round(session, comparison_id, round_)
    if added:
        with transaction() as session:
            pending = leases.unpublished_runs(session, comparison_id=comparison_id)
        enqueue_runs(pending)
    log.info("comparison %s: round %d evaluated, %d runs added", comparison_id, round_, added)
    return added


def send_round(comparison_id: str, round_: int, device: str) -> None:
    """Send the round task on the queue of the comparison's runs; a broker that refuses it leaves the
    round due, and the sweeper sends it again."""
    settings = get_settings()
    try:
        celery_app.send_task(
            ADAPTIVE_TASK,
            args=[comparison_id, round_],
            queue=settings.queue_for(device_kind(device, settings.auto_device)),
        )
    except Exception as exc:
        log.warning("could not send round %d of %s: %s: %s", round_, comparison_id, type(exc).__name__, exc)


def send_if_due(comparison_id: str, spec: dict) -> None:
    """After a commit that may have ended a round (a run's finish, a submit of reused runs only)."""
    if not adaptive.is_adaptive(spec):
        return
    with transaction() as session:
        round_ = adaptive.due(session, comparison_id)
    if round_ is not None:
        send_round(comparison_id, round_, spec["device"])


def send_overdue() -> int:
    """Send again the round tasks of rounds due for longer than OPTIBENCH_REPUBLISH_AFTER_S (a lost
    message, a worker that died between its commit and its send). Returns how many."""
    settings = get_settings()
    with transaction() as session:
        overdue = adaptive.overdue(session, utcnow() - timedelta(seconds=settings.republish_after_s))
    for comparison_id, round_, device in overdue:
        send_round(comparison_id, round_, device)
    return len(overdue)
