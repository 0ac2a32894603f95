"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from db import queries
from db.session import transaction
from engine.identity import device_kind
from optibench.settings import HARD_LIMIT_GRACE_S, get_settings
from worker.celery_app import TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


def enqueue_runs(runs: Mapping[str, queries.Publish]) -> int:
    """Publish one training task per run, on the queue of its device kind, and mark it published. A
    broker outage leaves the runs in the outbox (queued, never published), from where the sweeper
    publishes them later; it never fails a submit. Publishing twice is harmless: runs are leased."""
    settings = get_settings()
    sent: list[str] = []
    for run_id, run in runs.items():
        soft = settings.soft_time_limit_s(run.steps_total)
        queue = settings.queue_for(run.device or device_kind("auto", settings.auto_device))
        try:
            celery_app.send_task(TRAIN_TASK, args=[run_id], queue=queue, soft_time_limit=soft,
                                 time_limit=soft + HARD_LIMIT_GRACE_S)
        except Exception as exc:
            log.warning("broker unreachable (%s); %d runs stay in the outbox", type(exc).__name__, len(runs) - len(sent))
            break
        sent.append(run_id)
    if sent:
        with transaction() as session:
            queries.mark_enqueued(session, sent)
    return len(sent)
