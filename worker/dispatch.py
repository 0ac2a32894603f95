"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from db import queries
from db.session import transaction
from optibench.settings import HARD_LIMIT_GRACE_S, get_settings
from worker.celery_app import TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


def enqueue_runs(runs: Mapping[str, int]) -> int:
    """Publish one training task per run and mark it published. A broker outage leaves the runs in
    the outbox (queued, never published), from where the sweeper publishes them later; it never
    fails a submit. Publishing twice is harmless: runs are leased. ``runs`` maps run ids to their
    steps_total, from which each task's time limits follow."""
    settings = get_settings()
    sent: list[str] = []
    for run_id, steps in runs.items():
        soft = settings.soft_time_limit_s(steps)
        try:
            celery_app.send_task(TRAIN_TASK, args=[run_id], soft_time_limit=soft, time_limit=soft + HARD_LIMIT_GRACE_S)
        except Exception as exc:
            log.warning("broker unreachable (%s); %d runs stay in the outbox", type(exc).__name__, len(runs) - len(sent))
            break
        sent.append(run_id)
    if sent:
        with transaction() as session:
            queries.mark_enqueued(session, sent)
    return len(sent)
