"""Enqueueing, always after the rows it refers to are committed."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from db import leases
from db.models import Run
from db.session import new_session
from engine.identity import ENSEMBLE, Execution, device_kind, plan_runs
from engine.spec import ComparisonSpec
from engine.vectorized import Member
from optibench.settings import HARD_LIMIT_GRACE_S, get_settings
from worker.celery_app import ENSEMBLE_TASK, MAX_PRIORITY, TRAIN_TASK, celery_app

log = logging.getLogger(__name__)

#: (task name, run ids, soft time limit, device kind, comparison id)
Task = tuple[str, list[str], float, str, str | None]


def enqueue_new_runs(
    spec: ComparisonSpec,
    runs: Sequence[Run],
    *,
    marked: bool = False,
    backlog: int | None = None,
    planned: Sequence[tuple[list[str], Execution]] | None = None,
) -> int:
    """Publish a comparison's new queued runs. Runs that share the problem, the optimizer and the batch
    size, where training them as one vectorized ensemble pays, go out as one ensemble task; the rest one
    task each: engine.identity.execution_plan, which decided each run's mode at submit (and reuse keeps
    or drops an ensemble whole, so it finds the same groups here). Returns the runs published.
    ``marked``: the runs were stored as published already (``comparisons.create_comparison(publishing=True)``).
    ``backlog``: the team's unfinished comparisons ahead of this one, where the caller counted them
    (a submit's limit check), sparing the query that ``_priorities`` would make. ``planned``: the plan
    ``comparisons.create_comparison`` made for these runs (run ids, mode), not made again."""
    settings = get_settings()
    device = (runs[0].device if runs else None) or device_kind("auto", settings.auto_device)
    if planned is None:
        members = {run.id: Member(run.entry_index, run.seed, run.optimizer_params) for run in runs}
        planned = plan_runs(spec, members, device, settings.vectorize)
    run_of = {run.id: run for run in runs}
    tasks: list[Task] = []
    for ids, mode in planned:
        grouped = [run_of[run_id] for run_id in ids]
        if mode == ENSEMBLE:
            # an ensemble step costs more than one run's: allow what the runs would have had one by one
            soft = settings.time_limit_base_s + grouped[0].steps_total * settings.time_limit_per_step_s * len(grouped)
            tasks.append((ENSEMBLE_TASK, [r.id for r in grouped], soft, device, grouped[0].comparison_id))
        else:
            tasks += [
                (TRAIN_TASK, [r.id], settings.soft_time_limit_s(r.steps_total), device, r.comparison_id)
                for r in grouped
            ]
    known: dict[str | None, int] | None = None
    if backlog is not None and runs:
        known = {runs[0].comparison_id: min(MAX_PRIORITY, backlog)}
    return _publish(tasks, marked, known)


def enqueue_runs(runs: Mapping[str, leases.Publish]) -> int:
    """Publish one training task per run, on the queue of its device kind, and mark it published. A
    broker outage leaves the runs in the outbox (queued, never published), from where the sweeper
    publishes them later; it never fails a submit. Publishing twice is harmless: runs are leased."""
    settings = get_settings()
    return _publish(
        [
            (
                TRAIN_TASK,
                [run_id],
                settings.soft_time_limit_s(run.steps_total),
                run.device or device_kind("auto", settings.auto_device),
                run.comparison_id,
            )
            for run_id, run in runs.items()
        ]
    )


def _priorities(tasks: Sequence[Task]) -> dict[str | None, int]:
    """Each comparison's message priority: its team's queued or running comparisons created before it
    (0 is served first, MAX_PRIORITY last), so that a team's backlog cannot starve another team's job.
    Every publish takes this path: a submit, an ensemble, a tuning job's final phase, a republish."""
    comparison_ids = [cid for *_, cid in tasks if cid is not None]
    if not comparison_ids or get_settings().embedded_broker:  # its transport has no priorities
        return {}
    try:
        with new_session(autocommit=True) as session:
            ahead = leases.backlog_ahead(session, comparison_ids)
    except SQLAlchemyError as exc:  # the runs are committed: publish them, unordered, rather than not at all
        log.warning("database unreachable (%s): publishing without team priorities", type(exc).__name__)
        return {}
    return {cid: min(MAX_PRIORITY, n) for cid, n in ahead.items()}


def _publish(tasks: Sequence[Task], marked: bool = False, priorities: dict[str | None, int] | None = None) -> int:
    """Send tasks, then mark their runs published, in one write (unless ``marked``: then only a refused
    publish writes, putting them back in the outbox). On Redis the messages go out together in one
    pipeline, one round trip: all of them or, if the broker refuses, none (some may have arrived: a
    duplicate is harmless); the same pipeline records which runs were sent (missing_from_broker)."""
    settings = get_settings()
    sent = [run_id for _, run_ids, *_ in tasks for run_id in run_ids]
    if priorities is None:
        priorities = _priorities(tasks)
    try:
        with celery_app.producer_or_acquire() as producer, producer.batch():
            for name, run_ids, soft, device, comparison_id in tasks:
                celery_app.send_task(
                    name,
                    args=[run_ids] if name == ENSEMBLE_TASK else run_ids,
                    producer=producer,
                    queue=settings.queue_for(device),
                    soft_time_limit=soft,
                    time_limit=soft + HARD_LIMIT_GRACE_S,
                    priority=priorities.get(comparison_id, 0),
                )
            _record_sent(sent, _batch_pipeline(producer))
    except Exception as exc:
        log.warning("broker unreachable (%s); %d runs stay in the outbox", type(exc).__name__, len(sent))
        if marked:
            try:
                _mark(sent, published=False)
            except SQLAlchemyError as db_exc:  # the submit is committed: answer it; the sweeper republishes later
                log.warning(
                    "database unreachable too (%s); %d runs wait OPTIBENCH_REPUBLISH_AFTER_S to be published",
                    type(db_exc).__name__,
                    len(sent),
                )
        return 0
    if not marked:
        _mark(sent, published=True)
    return len(sent)


def _mark(run_ids: list[str], published: bool) -> None:
    if run_ids:
        with new_session(autocommit=True) as session:  # one statement: no transaction to open and commit around it
            leases.mark_enqueued(session, run_ids, published)


# --- which published runs the broker still holds -----------------------------------------------------

#: a run id (engine ids are 32 hex digits) in a message's headers or body
_RUN_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")


def _sent_key() -> str:
    return f"{get_settings().queue}.sent"


@lru_cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def _batch_pipeline(producer: Any) -> Any:
    """The Redis pipeline that kombu's open publish batch sends its messages in (kombu.transport.redis
    PublishBatch, made at the first message), or None. Commands added to it go out with the messages, after
    them, in their round trip: the only one of a submit's publish."""
    batch = getattr(getattr(producer, "_batch_local", None), "current", None)
    return getattr(getattr(batch, "session", None), "pipeline", None)


def _record_sent(run_ids: Sequence[str], pipeline: Any = None) -> None:
    """On Redis, the runs sent, in one sorted set scored by when each entry lapses (one ZADD): a Redis that
    restarts empty loses them with its messages, and a run that never came (its process died between commit
    and publish) has none. They lapse after OPTIBENCH_REPUBLISH_AFTER_S, when the blanket republish takes
    over, twice over. In ``pipeline``, the publish batch's (``_batch_pipeline``), they go with the messages;
    else in a round trip of their own."""
    settings = get_settings()
    if settings.embedded_broker or not run_ids:
        return
    entries = dict.fromkeys(run_ids, time.time() + max(1.0, 2 * settings.republish_after_s))
    if pipeline is not None:
        pipeline.zadd(_sent_key(), entries)
        return
    try:
        _redis(settings.broker_url).zadd(_sent_key(), entries)
    except Exception as exc:  # the messages went out: at worst they are published again after a lease
        log.warning("could not record %d runs as sent: %s: %s", len(run_ids), type(exc).__name__, exc)


def missing_from_broker(run_ids: Sequence[str]) -> set[str]:
    """Those of ``run_ids`` (queued runs published a while ago) whose message the broker does not hold:
    on Redis the runs not recorded as sent, or whose record lapsed (one round trip, which drops the lapsed);
    on the embedded SQLAlchemy broker the runs no stored message names. A broker that cannot be asked
    answers none, and the sweep tries again."""
    settings = get_settings()
    if not run_ids:
        return set()
    try:
        if settings.embedded_broker:
            named = _named_in_sqlalchemy_broker(settings.broker_url.removeprefix("sqla+"))
            return {run_id for run_id in run_ids if run_id not in named}
        with _redis(settings.broker_url).pipeline(transaction=False) as pipeline:
            pipeline.zremrangebyscore(_sent_key(), "-inf", time.time())
            pipeline.zmscore(_sent_key(), list(run_ids))
            _, lapses = pipeline.execute()
        return {run_id for run_id, lapse in zip(run_ids, lapses) if lapse is None}
    except Exception as exc:
        log.warning("could not ask the broker which runs it holds: %s: %s", type(exc).__name__, exc)
        return set()


@lru_cache
def _broker_engine(url: str):
    return create_engine(url)


def _named_in_sqlalchemy_broker(url: str) -> set[str]:
    """Every run id in a message the embedded broker holds, delivered or not (kombu_message)."""
    named: set[str] = set()
    with _broker_engine(url).connect() as connection:
        if not inspect(connection).has_table("kombu_message"):  # nothing was ever published
            return named
        for (payload,) in connection.execute(text("SELECT payload FROM kombu_message")):
            message = json.loads(payload)
            body = message.get("body", "")
            if message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body).decode("utf-8", "replace")
            named.update(_RUN_ID.findall(f"{body} {json.dumps(message.get('headers', {}))}"))
    return named
