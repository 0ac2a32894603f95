"""Submitting a comparison: the limits, the memory check, idempotent retries, storing it with its runs,
then publishing them (or failing the comparison, so nothing stays queued with no one to train it).
Refusals are exceptions the API maps to HTTP statuses."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import comparisons, leases, teams
from db.models import QUEUED, Comparison
from engine import sizing
from engine.identity import Execution
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.sweeps import runs_per_entry
from optibench.settings import Settings
from services import access
from worker.adaptive import send_if_due
from worker.dispatch import enqueue_new_runs

log = logging.getLogger(__name__)

#: where in the body a limit on the comparison's size points
_LIMIT_LOC = {"max_runs_per_comparison": ("seeds",), "max_steps_per_comparison": ("training",)}


class Refused(ValueError):
    """The comparison is too large (a limit, the memory budget): ``kind`` and ``loc`` (in the body) say
    which field to make smaller, ``value`` what it came to."""

    def __init__(self, kind: str, loc: tuple, message: str, value: object) -> None:
        super().__init__(message)
        self.kind, self.loc, self.value = kind, loc, value


class TooManyRunning(Exception):
    """The team has its limit of comparisons queued or running: try again later."""


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used for another body, or its comparison was deleted."""


class NotQueued(Exception):
    """The comparison was stored but its runs could not be published; it is marked failed."""


@dataclass(frozen=True)
class Submitted:
    comparison: Comparison
    #: False when an earlier request with the same Idempotency-Key and body created it
    created: bool
    #: how many live workers consumed each queue when it was stored (db.workers.live_queues), if it has queued runs
    served: Counter[str] | None = None


def _check_memory(spec: ComparisonSpec, budget: int) -> None:
    """Refuse a spec whose largest run would not fit a worker's memory budget, from arithmetic on the
    spec alone: nothing is loaded or built, so a memory bomb costs the API nothing."""
    run = sizing.largest_run(spec)
    if run.total > budget:
        raise Refused(
            "memory_budget",
            run.loc,
            f"a run of this comparison needs {run.describe()} of memory, over the worker memory budget of "
            f"{sizing.human_bytes(budget)} (OPTIBENCH_WORKER_MEMORY_BYTES); make this field smaller",
            run.total,
        )


def _over_limit(exc: teams.LimitExceeded, run_steps: list[int]) -> Exception:
    if exc.limit.name == "max_running_comparisons":
        return TooManyRunning(str(exc))
    value = len(run_steps) if exc.limit.name == "max_runs_per_comparison" else sum(run_steps)
    return Refused("limit_exceeded", _LIMIT_LOC[exc.limit.name], str(exc), value)


def _enqueue_or_fail(
    session: Session,
    spec: ComparisonSpec,
    comparison: Comparison,
    backlog: int,
    planned: list[tuple[list[str], Execution]],
) -> None:
    """Publish the stored comparison's runs. A failure here (a broker outage is not one: its runs wait
    in the outbox) fails the comparison with the reason in its runs' error: nothing is left queued with
    no one to train it. ``backlog``: the team's comparisons ahead of it, counted by the limit check,
    from which its messages' priority follows without another query."""
    try:
        queued = [run for run in comparison.runs if run.status == QUEUED]
        enqueue_new_runs(spec, queued, marked=True, backlog=backlog, planned=planned)
    except Exception as exc:
        log.exception("comparison %s was stored but could not be queued", comparison.id)
        reason = f"the submit failed after the comparison was stored: {type(exc).__name__}: {exc}"
        session.rollback()
        leases.fail_unfinished(session, comparison.id, reason[:2000])
        session.commit()
        raise NotQueued(
            f"comparison {comparison.id} was stored but could not be queued, and is "
            f"marked failed: {type(exc).__name__}: {exc}"
        ) from exc


def _earlier_submit(session: Session, team_id: str, idempotency_key: str, request_hash: str) -> Comparison | None:
    """The comparison an earlier request with this Idempotency-Key created, if any."""
    earlier = teams.by_idempotency_key(session, team_id, idempotency_key)
    if earlier is None:
        return None
    if earlier.request_hash != request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was used for a different comparison; send a new key with a new body"
        )
    if earlier.deleted_at is not None:
        raise IdempotencyConflict("the comparison created with this Idempotency-Key was deleted; send a new key")
    return access.comparison(session, earlier.id, team_id)


def submit(
    session: Session,
    spec: ComparisonSpec,
    settings: Settings,
    *,
    team_id: str,
    submitted_by: str,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store a validated comparison with one queued run per optimizer × seed, then enqueue its runs."""
    body = spec.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if idempotency_key and (earlier := _earlier_submit(session, team_id, idempotency_key, request_hash)):
        return Submitted(earlier, created=False)
    totals = [steps_total(spec, i) for i in range(len(spec.optimizers))]
    if max(totals) > settings.max_steps_per_run:
        raise Refused(
            "limit_exceeded",
            ("training",),
            f"{max(totals)} steps per run exceed the limit of "
            f"{settings.max_steps_per_run}; set OPTIBENCH_MAX_STEPS_PER_RUN",
            max(totals),
        )
    _check_memory(spec, settings.worker_memory_bytes)
    # every run the comparison will have: its sweeps' settings × seeds, a tuning job's final runs too
    run_steps = [steps for steps, n in zip(totals, runs_per_entry(body)) for _ in range(n)]
    planned: list[tuple[list[str], Execution]] = []
    try:
        comparison = comparisons.create_comparison(
            session,
            body,
            totals,
            team_id=team_id,
            submitted_by=submitted_by,
            reuse=spec.reuse,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            publishing=True,
            planned=planned,
            validated=spec,
        )
        # the limits lock the team's submits until the commit: taken last, the lock is held the shortest;
        # the live workers come with the count, in the transaction (after the commit, a connection of their own)
        backlog, live = teams.check_submit_limits(session, team_id, settings, run_steps, submitted=comparison.id)
        served = live if any(run.status == QUEUED for run in comparison.runs) else None
        session.commit()
    except teams.LimitExceeded as exc:
        session.rollback()
        raise _over_limit(exc, run_steps) from None
    except IntegrityError:
        # a concurrent request with the same Idempotency-Key committed first
        session.rollback()
        if idempotency_key and (earlier := _earlier_submit(session, team_id, idempotency_key, request_hash)):
            return Submitted(earlier, created=False)
        raise
    _enqueue_or_fail(session, spec, comparison, backlog, planned)
    send_if_due(comparison.id, body)  # its first round may be made of reused runs only
    return Submitted(comparison, created=True, served=served)
