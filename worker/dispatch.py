"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from db import queries
from db.models import Run
from db.session import transaction
from optibench.settings import HARD_LIMIT_GRACE_S, get_settings
from worker.celery_app import TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


def enqueue_runs(run_ids: Iterable[str]) -> int:
    """Publish one training task per run and mark it published. A broker outage leaves the runs in
    the outbox (queued, never published), from where the sweeper publishes them later; it never
    fails a submit. Publishing twice is harmless: runs are leased."""
    settings = get_settings()
    run_ids = list(run_ids)
    if not run_ids:
        return 0
    with transaction() as session:
        steps = dict(session.query(Run.id, Run.steps_total).filter(Run.id.in_(run_ids)))
    sent: list[str] = []
    for run_id in run_ids:
        soft = settings.soft_time_limit_s(steps.get(run_id, settings.max_steps_per_run))
        try:
            celery_app.send_task(TRAIN_TASK, args=[run_id], soft_time_limit=soft, time_limit=soft + HARD_LIMIT_GRACE_S)
        except Exception as exc:
            log.warning("broker unreachable (%s); %d runs stay in the outbox", type(exc).__name__, len(run_ids) - len(sent))
            break
        sent.append(run_id)
    if sent:
        with transaction() as session:
            queries.mark_enqueued(session, sent)
    return len(sent)
