"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from db import queries
from db.session import transaction
from db.models import Run
from engine.identity import device_kind
from engine.spec import ComparisonSpec
from engine.vectorized import Member, group_runs, should_vectorize
from optibench.settings import HARD_LIMIT_GRACE_S, get_settings
from worker.celery_app import ENSEMBLE_TASK, TRAIN_TASK, celery_app

log = logging.getLogger(__name__)


def enqueue_new_runs(spec: ComparisonSpec, runs: Sequence[Run]) -> int:
    """Publish a comparison's new queued runs. Runs that share the problem, the optimizer and the batch
    size, where training them as one vectorized ensemble pays (engine.vectorized.should_vectorize),
    go out as one ensemble task; the rest one task each. Returns the runs published."""
    settings = get_settings()
    members = [Member(r.entry_index, r.seed, r.optimizer_params) for r in runs]
    run_of = {id(member): run for member, run in zip(members, runs)}  # params are dicts: members don't hash
    singles: dict[str, queries.Publish] = {}
    sent = 0
    for group in group_runs(spec, members) if settings.vectorize else [[m] for m in members]:
        group_of_runs = [run_of[id(m)] for m in group]
        device = group_of_runs[0].device or device_kind("auto", settings.auto_device)
        if len(group) > 1 and should_vectorize(spec, group, "cuda" if device == "cuda" else "cpu"):
            sent += _publish_ensemble(settings, [r.id for r in group_of_runs], group_of_runs[0].steps_total, device)
        else:
            singles.update({r.id: queries.Publish.of(r) for r in group_of_runs})
    return sent + enqueue_runs(singles)


def _publish_ensemble(settings, run_ids: list[str], steps: int, device: str) -> int:
    # an ensemble step costs more than one run's: allow what the runs would have had one by one
    soft = settings.time_limit_base_s + steps * settings.time_limit_per_step_s * len(run_ids)
    try:
        celery_app.send_task(ENSEMBLE_TASK, args=[run_ids], queue=settings.queue_for(device), soft_time_limit=soft,
                             time_limit=soft + HARD_LIMIT_GRACE_S)
    except Exception as exc:
        log.warning("broker unreachable (%s); %d runs stay in the outbox", type(exc).__name__, len(run_ids))
        return 0
    with transaction() as session:
        queries.mark_enqueued(session, run_ids)
    return len(run_ids)


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
