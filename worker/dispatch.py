"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy.exc import SQLAlchemyError

from db import queries
from db.models import Run
from db.session import new_session
from engine.identity import device_kind
from engine.spec import ComparisonSpec
from engine.vectorized import Member, group_runs, should_vectorize
from optibench.settings import HARD_LIMIT_GRACE_S, get_settings
from worker.celery_app import ENSEMBLE_TASK, TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


def enqueue_new_runs(spec: ComparisonSpec, runs: Sequence[Run], *, marked: bool = False) -> int:
    """Publish a comparison's new queued runs. Runs that share the problem, the optimizer and the batch
    size, where training them as one vectorized ensemble pays (engine.vectorized.should_vectorize),
    go out as one ensemble task; the rest one task each. Returns the runs published. ``marked``: the
    runs were stored as published already (``queries.create_comparison(publishing=True)``)."""
    settings = get_settings()
    members = [Member(r.entry_index, r.seed, r.optimizer_params) for r in runs]
    run_of = {id(member): run for member, run in zip(members, runs)}  # params are dicts: members don't hash
    tasks: list[tuple[str, list[str], float, str]] = []
    for group in group_runs(spec, members) if settings.vectorize else [[m] for m in members]:
        grouped = [run_of[id(m)] for m in group]
        device = grouped[0].device or device_kind("auto", settings.auto_device)
        if len(group) > 1 and should_vectorize(spec, group, "cuda" if device == "cuda" else "cpu"):
            # an ensemble step costs more than one run's: allow what the runs would have had one by one
            soft = settings.time_limit_base_s + grouped[0].steps_total * settings.time_limit_per_step_s * len(group)
            tasks.append((ENSEMBLE_TASK, [r.id for r in grouped], soft, device))
        else:
            tasks += [(TRAIN_TASK, [r.id], settings.soft_time_limit_s(r.steps_total), device) for r in grouped]
    return _publish(tasks, marked)


def enqueue_runs(runs: Mapping[str, queries.Publish]) -> int:
    """Publish one training task per run, on the queue of its device kind, and mark it published. A
    broker outage leaves the runs in the outbox (queued, never published), from where the sweeper
    publishes them later; it never fails a submit. Publishing twice is harmless: runs are leased."""
    settings = get_settings()
    return _publish([(TRAIN_TASK, [run_id], settings.soft_time_limit_s(run.steps_total),
                      run.device or device_kind("auto", settings.auto_device)) for run_id, run in runs.items()])


def _publish(tasks: Sequence[tuple[str, list[str], float, str]], marked: bool = False) -> int:
    """Send (task name, run ids, soft time limit, device kind) tasks, then mark their runs published, in
    one write (unless ``marked``: then only a refused publish writes, putting them back in the outbox).
    On Redis the messages go out together in one pipeline, one round trip: all of them or, if the broker
    refuses, none (some may have arrived: a duplicate is harmless)."""
    settings = get_settings()
    sent = [run_id for _, run_ids, _, _ in tasks for run_id in run_ids]
    try:
        with celery_app.producer_or_acquire() as producer, producer.batch():
            for name, run_ids, soft, device in tasks:
                celery_app.send_task(name, args=[run_ids] if name == ENSEMBLE_TASK else run_ids, producer=producer,
                                     queue=settings.queue_for(device), soft_time_limit=soft,
                                     time_limit=soft + HARD_LIMIT_GRACE_S)
    except Exception as exc:
        log.warning("broker unreachable (%s); %d runs stay in the outbox", type(exc).__name__, len(sent))
        if marked:
            try:
                _mark(sent, published=False)
            except SQLAlchemyError as db_exc:  # the submit is committed: answer it; the sweeper republishes later
                log.warning("database unreachable too (%s); %d runs wait OPTIBENCH_REPUBLISH_AFTER_S to be "
                            "published", type(db_exc).__name__, len(sent))
        return 0
    if not marked:
        _mark(sent, published=True)
    return len(sent)


def _mark(run_ids: list[str], published: bool) -> None:
    if run_ids:
        with new_session(autocommit=True) as session:  # one statement: no transaction to open and commit around it
            queries.mark_enqueued(session, run_ids, published)
