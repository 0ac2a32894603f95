"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from worker.celery_app import TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


def enqueue_runs(run_ids: Iterable[str]) -> int:
    """Publish one training task per run. A broker outage leaves the runs queued in the database,
    from where they are enqueued again at the next worker start; it never fails a submit."""
    sent = 0
    for run_id in run_ids:
        try:
            celery_app.send_task(TRAIN_TASK, args=[run_id])
        except Exception:
            log.exception("could not reach the broker; run %s stays queued", run_id)
            break
        sent += 1
    return sent
