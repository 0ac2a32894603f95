"""The watchdog and the outbox, run periodically by every API and worker process.

Both are idempotent, so several processes sweeping at once is harmless.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown

from db import leases, tracking, workers
from db.models import utcnow
from db.session import transaction
from optibench.settings import get_settings
from worker import adaptive
from worker.celery_app import sweeper_stop
from worker.dispatch import enqueue_runs, missing_from_broker

log = logging.getLogger(__name__)

#: (hostname, queues) of the Celery worker whose main process this is; None in an API process
_worker: tuple[str, list[str]] | None = None


def register_worker(hostname: str, queues: list[str]) -> None:
    """Called once the worker consumes: its row says which queues a live worker serves."""
    global _worker
    _worker = (hostname, list(queues))
    try:
        with transaction() as session:
            workers.beat(session, hostname, queues, os.getpid())
    except Exception as exc:  # the next sweep writes it
        log.warning("could not record this worker: %s: %s", type(exc).__name__, exc)


def unregister_worker() -> None:
    """A clean shutdown: the worker's queues lose it now rather than a lease later."""
    if _worker is None:
        return
    try:
        with transaction() as session:
            workers.forget(session, _worker[0])
    except Exception as exc:
        log.warning("could not remove this worker's row: %s: %s", type(exc).__name__, exc)


def sweep(reap: bool = True) -> None:
    """Refresh this worker's row; reap runs that lost their worker (unless told not to); publish the
    outbox; then, in a worker, publish again the queued runs whose message the broker no longer has."""
    settings = get_settings()
    if _worker is not None:
        with transaction() as session:
            workers.beat(session, *_worker, os.getpid())
    requeued: list[str] = []
    failed: list[str] = []
    abandoned: list[str] = []
    if reap:
        with transaction() as session:
            requeued, failed = leases.reap_stale_runs(session, settings.lease_timeout_s, settings.max_attempts)
            abandoned = tracking.reap_stale(session, settings.lease_timeout_s)
    if abandoned:
        log.warning("failed %d tracked runs whose client stopped sending: %s", len(abandoned), ", ".join(abandoned))
    if requeued:
        log.warning("requeued %d runs whose worker stopped beating: %s", len(requeued), ", ".join(requeued))
    if failed:
        log.error(
            "failed %d runs that lost their worker %d times: %s", len(failed), settings.max_attempts, ", ".join(failed)
        )
    with transaction() as session:
        pending = leases.unpublished_runs(session, utcnow() - timedelta(seconds=settings.republish_after_s))
    if pending:
        log.info("published %d of %d runs from the outbox", enqueue_runs(pending), len(pending))
    if overdue := adaptive.send_overdue():
        log.warning("sent again the round task of %d comparisons left due", overdue)
    if _worker is not None:
        # a worker's sweep only: the check reads the whole waiting backlog, and API processes serving
        # requests paid for it in their latency (a lost message matters once a worker can train it)
        republish_lost()


def republish_lost() -> int:
    """Queued runs published more than a lease ago whose message the broker no longer holds (a Redis
    restarted without persistence, an API process that died between its commit and its publish) are
    published again now, not OPTIBENCH_REPUBLISH_AFTER_S later; runs whose message is still there,
    such as a long legitimate backlog, are left alone. Returns the runs published."""
    settings = get_settings()
    with transaction() as session:
        waiting = leases.published_runs(session, utcnow() - timedelta(seconds=settings.lease_timeout_s))
    lost = missing_from_broker(list(waiting)) if waiting else set()
    if not lost:
        return 0
    published = enqueue_runs({run_id: publish for run_id, publish in waiting.items() if run_id in lost})
    log.warning("published again %d of %d queued runs whose message the broker had lost", published, len(lost))
    return published


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


@worker_ready.connect
def _start_sweeper(sender=None, **_) -> None:
    """Connected when worker.tasks (which celery_app includes) imports this module, so that celery_app
    itself imports nothing of the worker: no import cycle through dispatch."""
    if sender is not None:
        # the queues this worker really consumes (-Q, or the default one), for /readyz and waiting runs
        register_worker(sender.hostname, [queue.name for queue in sender.task_consumer.queues])
    start_sweeper(sweeper_stop)


@worker_shutdown.connect
def _stop_sweeper(**_) -> None:
    sweeper_stop.set()
    unregister_worker()
