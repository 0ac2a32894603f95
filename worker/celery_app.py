"""The Celery application. The same code runs on the embedded SQLite broker and on Redis."""

from __future__ import annotations

import os

from celery import Celery
import threading

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from optibench.settings import Settings, get_settings

TRAIN_TASK = "optibench.train_run"
ENSEMBLE_TASK = "optibench.train_ensemble"
#: the lowest message priority (Redis serves 0 first)
MAX_PRIORITY = 9


def create_celery(settings: Settings) -> Celery:
    if settings.embedded_broker:
        settings.ensure_data_dir()
    app = Celery("optibench", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        # a task is acknowledged only once it returns, so a crashed worker's run is delivered again
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.queue_for("cpu"),
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.worker_concurrency,
    )
    if not settings.embedded_broker:
        # Redis re-delivers an unacknowledged task after this, so it must outlast the longest run;
        # a run whose worker died is requeued much sooner by the watchdog (worker/sweeper.py).
        # (The SQLAlchemy transport hands its options to create_engine, so it gets none.)
        # Priorities keep one team's backlog from starving another's (worker.dispatch: a run's priority
        # is its team's backlog ahead of it); on Redis, 0 is served first, FIFO within a priority.
        app.conf.broker_transport_options = {"visibility_timeout": settings.longest_run_s,
                                             "queue_order_strategy": "priority",
                                             "priority_steps": list(range(MAX_PRIORITY + 1))}
    return app


celery_app = create_celery(get_settings())


@worker_process_init.connect
def _one_trainer_per_core(**_) -> None:
    import torch

    settings = get_settings()
    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)
    torch.set_num_threads(threads)


_sweeper_stop = threading.Event()


@worker_ready.connect
def _start_sweeper(sender=None, **_) -> None:
    from worker.sweeper import register_worker, start_sweeper

    if sender is not None:
        # the queues this worker really consumes (-Q, or the default one), for /readyz and waiting runs
        register_worker(sender.hostname, [queue.name for queue in sender.task_consumer.queues])
    start_sweeper(_sweeper_stop)


@worker_shutdown.connect
def _stop_sweeper(**_) -> None:
    from worker.sweeper import unregister_worker

    _sweeper_stop.set()
    unregister_worker()
