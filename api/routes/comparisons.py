import hashlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import AdminDep, Principal, PrincipalDep, SessionDep, SettingsDep
from api.reads import HistoryQuery
from api.schemas import (
    NOT_FOUND,
    ComparisonOut,
    ComparisonPage,
    ComparisonPatch,
    HTTPError,
    model_body,
    page_body,
)
from db import comparisons, history, leases, teams
from db.models import QUEUED
from engine import sizing
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.sweeps import runs_per_entry
from services import access
from worker.dispatch import enqueue_new_runs

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/comparisons", tags=["comparisons"])

#: seconds a client over its team's concurrency limit should wait before trying again
RETRY_AFTER_S = 60
#: where in the body a limit on the comparison's size points
_LIMIT_LOC = {"max_runs_per_comparison": ("seeds",), "max_steps_per_comparison": ("training",)}


def _limit_error(loc: tuple, message: str, value) -> RequestValidationError:
    return RequestValidationError([{"type": "limit_exceeded", "loc": ("body", *loc), "msg": message, "input": value}])


def _over_limit(exc: teams.LimitExceeded, run_steps: list[int]) -> Exception:
    if exc.limit.name == "max_running_comparisons":
        return HTTPException(429, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)})
    value = len(run_steps) if exc.limit.name == "max_runs_per_comparison" else sum(run_steps)
    return _limit_error(_LIMIT_LOC[exc.limit.name], str(exc), value)


def _check_memory(spec: ComparisonSpec, budget: int) -> None:
    """Refuse a spec whose largest run would not fit a worker's memory budget, from arithmetic on the
    spec alone: nothing is loaded or built, so a memory bomb costs the API nothing."""
    run = sizing.largest_run(spec)
    if run.total > budget:
        raise RequestValidationError([{
            "type": "memory_budget", "loc": ("body", *run.loc), "input": run.total,
            "msg": f"a run of this comparison needs {run.describe()} of memory, over the worker memory budget of "
                   f"{sizing.human_bytes(budget)} (OPTIBENCH_WORKER_MEMORY_BYTES); make this field smaller",
        }])


def _enqueue_or_fail(session: Session, spec: ComparisonSpec, comparison) -> None:
    """Publish the stored comparison's runs. A failure here (a broker outage is not one: its runs wait
    in the outbox) fails the comparison with the reason in its runs' error, then answers 500: nothing
    is left queued with no one to train it."""
    try:
        enqueue_new_runs(spec, [run for run in comparison.runs if run.status == QUEUED], marked=True)
    except Exception as exc:
        log.exception("comparison %s was stored but could not be queued", comparison.id)
        reason = f"the submit failed after the comparison was stored: {type(exc).__name__}: {exc}"
        session.rollback()
        leases.fail_unfinished(session, comparison.id, reason[:2000])
        session.commit()
        raise HTTPException(500, f"comparison {comparison.id} was stored but could not be queued, and is "
                                 f"marked failed: {type(exc).__name__}: {exc}") from exc


def _earlier_submit(session: Session, principal: Principal, idempotency_key: str, request_hash: str):
    """The comparison an earlier request with this Idempotency-Key created, if any; 409 if that
    request's body was a different one, or its comparison was deleted since."""
    earlier = teams.by_idempotency_key(session, principal.team_id, idempotency_key)
    if earlier is None:
        return None
    if earlier.request_hash != request_hash:
        raise HTTPException(409, "this Idempotency-Key was used for a different comparison; "
                                 "send a new key with a new body")
    if earlier.deleted_at is not None:
        raise HTTPException(409, "the comparison created with this Idempotency-Key was deleted; send a new key")
    return access.comparison(session, earlier.id, principal.team_id)


@router.post("", status_code=202, response_model=ComparisonOut, responses={
    200: {"model": ComparisonOut, "description": "a retry: the Idempotency-Key and the body were seen before; "
                                                 "the comparison they created"},
    409: {"model": HTTPError, "description": "the Idempotency-Key was used before with a different body"},
    413: {"model": HTTPError, "description": "body larger than OPTIBENCH_MAX_BODY_BYTES"},
    429: {"model": HTTPError, "description": "the team already has OPTIBENCH_MAX_RUNNING_COMPARISONS "
                                             "comparisons queued or running; see Retry-After"},
})
def submit_comparison(
    spec: ComparisonSpec, session: SessionDep, settings: SettingsDep, principal: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, description=(
        "makes the submit safe to retry: the same key and body answer the same comparison (200), "
        "the same key with another body 409"))] = None,
) -> Response:
    """Validate a comparison completely, store it with one queued run per optimizer × seed, then enqueue."""
    body = spec.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if idempotency_key and (earlier := _earlier_submit(session, principal, idempotency_key, request_hash)):
        return model_body(ComparisonOut.full(earlier))
    totals = [steps_total(spec, i) for i in range(len(spec.optimizers))]
    if max(totals) > settings.max_steps_per_run:
        raise _limit_error(("training",), f"{max(totals)} steps per run exceed the limit of "
                           f"{settings.max_steps_per_run}; set OPTIBENCH_MAX_STEPS_PER_RUN", max(totals))
    _check_memory(spec, settings.worker_memory_bytes)
    # every run the comparison will have: its sweeps' settings × seeds, a tuning job's final runs too
    run_steps = [steps for steps, n in zip(totals, runs_per_entry(body)) for _ in range(n)]
    try:
        comparison = comparisons.create_comparison(session, body, totals, team_id=principal.team_id,
                                               submitted_by=principal.name, reuse=spec.reuse,
                                               idempotency_key=idempotency_key, request_hash=request_hash,
                                               publishing=True)
        # the limits lock the team's submits until the commit: taken last, the lock is held the shortest
        teams.check_submit_limits(session, principal.team_id, settings, run_steps, submitted=comparison.id)
        session.commit()
    except teams.LimitExceeded as exc:
        session.rollback()
        raise _over_limit(exc, run_steps) from None
    except IntegrityError:
        # a concurrent request with the same Idempotency-Key committed first
        session.rollback()
        if idempotency_key and (earlier := _earlier_submit(session, principal, idempotency_key, request_hash)):
            return model_body(ComparisonOut.full(earlier))
        raise
    _enqueue_or_fail(session, spec, comparison)
    return model_body(ComparisonOut.full(comparison), 202)


@router.get("", response_model=ComparisonPage, responses={400: {"model": HTTPError, "description": "bad cursor"}})
def list_comparisons(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
    where: Annotated[HistoryQuery, Query()] = HistoryQuery(),
) -> Response:
    """The team's history, newest first; deleted comparisons are left out. Every filter given must
    hold; a cursor is only valid with the filters of the page it came from."""
    try:
        rows, next_cursor = history.history_page(session, principal.team_id, limit, cursor, where.filter())
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc
    return page_body(rows, next_cursor)


@router.get("/{comparison_id}", response_model=ComparisonOut, responses=NOT_FOUND)
def get_comparison(comparison_id: str, session: SessionDep, principal: PrincipalDep) -> ComparisonOut:
    return ComparisonOut.full(access.comparison(session, comparison_id, principal.team_id))


@router.patch("/{comparison_id}", response_model=ComparisonOut, responses=NOT_FOUND)
def edit_comparison(comparison_id: str, edit: ComparisonPatch, session: SessionDep,
                    principal: PrincipalDep) -> ComparisonOut:
    """Edit the tags and the note; the submitted spec stays as it was."""
    comparison = access.comparison(session, comparison_id, principal.team_id)
    for field in edit.model_fields_set:
        setattr(comparison, field, getattr(edit, field))
    session.commit()
    return ComparisonOut.full(comparison)


@router.delete("/{comparison_id}", status_code=204, responses=NOT_FOUND)
def delete_comparison(comparison_id: str, session: SessionDep, principal: AdminDep) -> Response:
    """Admins: remove it from the history and every read, cancelling its unfinished runs. Its rows
    are kept until an operator runs `optibench admin purge`."""
    teams.soft_delete(session, access.comparison(session, comparison_id, principal.team_id))
    session.commit()
    return Response(status_code=204)


@router.post("/{comparison_id}/cancel", response_model=ComparisonOut, responses=NOT_FOUND)
def cancel_comparison(comparison_id: str, session: SessionDep, principal: PrincipalDep) -> ComparisonOut:
    """Cancel every unfinished run. Queued runs stop at once, running ones at their next flush
    (within OPTIBENCH_FLUSH_INTERVAL_S); the rows already recorded are kept."""
    return ComparisonOut.full(access.cancel(session, principal.team_id, comparison_id=comparison_id))
