"""The Celery application. The same code runs on the embedded SQLite broker and on Redis."""

from __future__ import annotations

import logging
import os
import threading

from celery import Celery, bootsteps
from celery.signals import worker_process_init

from optibench.settings import Settings, get_settings

TRAIN_TASK = "optibench.train_run"
ENSEMBLE_TASK = "optibench.train_ensemble"
ADAPTIVE_TASK = "optibench.adaptive_round"
#: how long the embedded broker's consumer sleeps after taking nothing (kombu's default is 1 s)
EMBEDDED_POLLING_INTERVAL_S = 0.05
#: the lowest message priority (Redis serves 0 first)
MAX_PRIORITY = 9
# The exit status of a worker on the embedded broker that lost a pool process (see _exit_when_a_pool_process_dies);
# `optibench serve` starts a fresh worker at once on it. EX_TEMPFAIL: "try again".
POOL_PROCESS_LOST = 75

log = logging.getLogger(__name__)


class _PoolGuard(bootsteps.StartStopStep):
    """Watches the pool from the moment its processes exist (see _exit_when_a_pool_process_dies)."""

    requires = ("celery.worker.components:Pool",)

    def start(self, worker) -> None:
        _exit_when_a_pool_process_dies(worker.pool)


def create_celery(settings: Settings) -> Celery:
    if settings.embedded_broker:
        settings.ensure_data_dir()
        # The SQLAlchemy transport sleeps its polling interval whenever it takes nothing, and it takes
        # nothing while every pool process holds a task: with kombu's 1 s, a worker finished at most one
        # task per process per second however short (docs/performance.md). Its transport options go to
        # create_engine, so the interval is set on the class.
        from kombu.transport import sqlalchemy

        sqlalchemy.Transport.polling_interval = EMBEDDED_POLLING_INTERVAL_S
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
        # a killed pool process's task is rejected (and requeued) after this wait for a result it may
        # have sent; the tasks send none, so there is nothing to wait for
        worker_lost_wait=1.0,
    )
    app.steps["worker"].add(_PoolGuard)
    if not settings.embedded_broker:
        # Redis re-delivers an unacknowledged task after this, so it must outlast the longest run;
        # a run whose worker died is requeued much sooner by the watchdog (worker/sweeper.py).
        # (The SQLAlchemy transport hands its options to create_engine, so it gets none.)
        # Priorities keep one team's backlog from starving another's (worker.dispatch: a run's priority
        # is its team's backlog ahead of it); on Redis, 0 is served first, FIFO within a priority.
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.longest_run_s,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(MAX_PRIORITY + 1)),
        }
    return app


celery_app = create_celery(get_settings())


#: set when the worker shuts down: stops the sweeper (worker.sweeper), and a pool process dying then is no fault
sweeper_stop = threading.Event()


@worker_process_init.connect
def _one_trainer_per_core(**_) -> None:
    import torch

    from db.session import forget_inherited_connections

    # first: the main process's watchdog has pooled connections of its own, inherited by this fork
    forget_inherited_connections()
    settings = get_settings()
    threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency)
    torch.set_num_threads(threads)


def _exit_when_a_pool_process_dies(task_pool) -> None:
    """On a broker without asynchronous I/O (the embedded SQLAlchemy one) Celery runs its synchronous
    loop, whose pool processes share one task pipe behind one lock, taken by an idle process while it
    waits for a task. A pool process killed then (by the OOM killer, a SIGKILL, a hard time limit) takes
    the lock with it: its replacement waits on it forever, and the worker keeps its prefetched message,
    so nothing trains. No replacement can be trusted, so the worker exits at once with
    POOL_PROCESS_LOST: its supervisor (`optibench serve`) starts a fresh one, whose lock is free, and
    puts back what the dead one held. The asynchronous loop (Redis) gives each process its own pipe
    and replaces a dead one safely, so it is left alone."""
    from celery.concurrency.asynpool import AsynPool

    pool = getattr(task_pool, "_pool", None)
    if pool is None or isinstance(pool, AsynPool) or not hasattr(pool, "on_process_down"):
        return
    from billiard.pool import EX_OK, EX_RECYCLE, RUN

    def on_process_down(process) -> None:
        if (
            sweeper_stop.is_set()
            or pool._state != RUN
            or process.exitcode in (EX_OK, EX_RECYCLE)
            or getattr(process, "_controlled_termination", False)
        ):
            return  # a shutdown, or a process recycled on purpose
        log.error(
            "pool process %s exited with %s; a replacement could wait forever on the lock it held: "
            "exiting (status %d) for the supervisor to start a fresh worker",
            process.pid,
            process.exitcode,
            POOL_PROCESS_LOST,
        )
        logging.shutdown()
        os._exit(POOL_PROCESS_LOST)  # the pool processes die with it (PR_SET_PDEATHSIG, set by Celery)

    pool.on_process_down = on_process_down
