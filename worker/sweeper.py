"""The watchdog and the outbox, run periodically by every API and worker process.

Both are idempotent, so several processes sweeping at once is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from db import queries
from db.models import utcnow
from db.session import transaction
from optibench.settings import get_settings
from worker.dispatch import enqueue_runs

log = logging.getLogger(__name__)


def sweep(reap: bool = True) -> None:
    """Reap runs that lost their worker (unless told not to), then publish the outbox."""
    settings = get_settings()
    requeued, failed = [], []
    if reap:
        with transaction() as session:
            requeued, failed = queries.reap_stale_runs(session, settings.lease_timeout_s, settings.max_attempts)
    if requeued:
        log.warning("requeued %d runs whose worker stopped beating: %s", len(requeued), ", ".join(requeued))
    if failed:
        log.error("failed %d runs that lost their worker %d times: %s", len(failed), settings.max_attempts,
                  ", ".join(failed))
    with transaction() as session:
        pending = queries.unpublished_runs(session, utcnow() - timedelta(seconds=settings.republish_after_s))
    if pending:
        log.info("published %d of %d runs from the outbox", enqueue_runs(pending), len(pending))


def start_sweeper(stop: threading.Event) -> threading.Thread:
    """Sweep every ``sweep_interval_s`` until ``stop`` is set; an outage only delays the next sweep."""

    def loop() -> None:
        # After a database outage every heartbeat looks stale although the workers are alive and
        # about to write again; reap only once the database has been reachable for a whole lease.
        last_failure = time.monotonic()
        while not stop.wait(get_settings().sweep_interval_s):
            try:
                sweep(reap=time.monotonic() - last_failure > get_settings().lease_timeout_s)
            except Exception as exc:
                last_failure = time.monotonic()
                log.warning("sweep skipped: %s: %s", type(exc).__name__, exc)

    thread = threading.Thread(target=loop, name="optibench-sweeper", daemon=True)
    thread.start()
    return thread
