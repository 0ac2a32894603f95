"""Writes a run's flushes on a background thread, so training never waits for the database."""

from __future__ import annotations

import logging
import queue
import threading
import time

from sqlalchemy.exc import OperationalError

from db import leases
from db.models import CANCELLED
from db.session import transaction
from engine.recorder import StepBatch

log = logging.getLogger(__name__)

_STOP = object()


class StepWriter:
    """Call it with each StepBatch from the training thread; it answers False once the run is
    cancelled. ``close()`` waits for every batch to be written and re-raises the writer's error."""

    def __init__(self, run_id: str, attempt: int, heartbeat_s: float, retry_for_s: float = 300.0) -> None:
        self.run_id, self.attempt = run_id, attempt
        self.heartbeat_s = heartbeat_s
        self.retry_for_s = retry_for_s
        self.cancelled = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=8)  # bounded: a stalled database slows training, never OOMs it
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"step-writer-{run_id[:8]}", daemon=True)
        self._thread.start()

    def __call__(self, batch: StepBatch) -> bool:
        self._put(batch)
        return not self.cancelled.is_set()

    def _put(self, item) -> None:
        """Wait for room in the queue, but never for a writer that has died."""
        while True:
            self._raise_if_failed()
            if not self._thread.is_alive():
                return
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.stop()
        self._raise_if_failed()

    def stop(self) -> None:
        """Finish writing what is queued and end the thread (and so the heartbeat)."""
        try:
            self._put(_STOP)
        except BaseException:
            pass  # the writer failed; close() reports it
        self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.heartbeat_s)
            except queue.Empty:
                item = None  # nothing to write: just beat the heart
            if item is _STOP:
                return
            try:
                self._write(item)
            except BaseException as exc:  # handed to the training thread at its next flush
                self._error = exc
                return

    def _write(self, batch: StepBatch | None) -> None:
        steps = batch.columns() if batch is not None and len(batch) else None
        evals = batch.evals if batch is not None else []
        best = batch.best_loss if batch is not None else None  # the engine's, carried over a resume
        delay, deadline = 0.5, time.monotonic() + self.retry_for_s
        while True:
            try:
                with transaction() as session:
                    status = leases.append_steps(
                        session,
                        self.run_id,
                        self.attempt,
                        steps,
                        best,
                        evals,
                        batch.checkpoint if batch is not None else None,
                    )
                break
            except OperationalError:
                if time.monotonic() > deadline:
                    raise
                log.warning(
                    "database unavailable; keeping %d rows of run %s, retrying in %.1fs",
                    len(batch) if batch is not None else 0,
                    self.run_id,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        if status == CANCELLED:
            self.cancelled.set()
