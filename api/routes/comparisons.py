from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError

from api.deps import AdminDep, PrincipalDep, SessionDep, SettingsDep
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
from db import history, teams
from engine.spec import ComparisonSpec
from services import access
from services import submit as submitting

router = APIRouter(prefix="/api/v1/comparisons", tags=["comparisons"])

#: seconds a client over its team's concurrency limit should wait before trying again
RETRY_AFTER_S = 60


def _refused(exc: submitting.Refused) -> RequestValidationError:
    return RequestValidationError([{"type": exc.kind, "loc": ("body", *exc.loc), "msg": str(exc), "input": exc.value}])


@router.post(
    "",
    status_code=202,
    response_model=ComparisonOut,
    responses={
        200: {
            "model": ComparisonOut,
            "description": "a retry: the Idempotency-Key and the body were seen before; the comparison they created",
        },
        409: {"model": HTTPError, "description": "the Idempotency-Key was used before with a different body"},
        413: {"model": HTTPError, "description": "body larger than OPTIBENCH_MAX_BODY_BYTES"},
        429: {
            "model": HTTPError,
            "description": "the team already has OPTIBENCH_MAX_RUNNING_COMPARISONS "
            "comparisons queued or running; see Retry-After",
        },
    },
)
def submit_comparison(
    spec: ComparisonSpec,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description=(
                "makes the submit safe to retry: the same key and body answer the same comparison (200), "
                "the same key with another body 409"
            ),
        ),
    ] = None,
) -> Response:
    """Validate a comparison completely, store it with one queued run per optimizer × seed, then enqueue."""
    try:
        done = submitting.submit(
            session,
            spec,
            settings,
            team_id=principal.team_id,
            submitted_by=principal.name,
            idempotency_key=idempotency_key,
        )
    except submitting.Refused as exc:
        raise _refused(exc) from None
    except submitting.TooManyRunning as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except submitting.IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except submitting.NotQueued as exc:
        raise HTTPException(500, str(exc)) from exc
    return model_body(ComparisonOut.full(done.comparison, done.served), 202 if done.created else 200)


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
def edit_comparison(
    comparison_id: str, edit: ComparisonPatch, session: SessionDep, principal: PrincipalDep
) -> ComparisonOut:
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
    return ComparisonOut.full(access.cancel_comparison(session, principal.team_id, comparison_id))
