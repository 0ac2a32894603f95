from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.exceptions import RequestValidationError

from api.deps import PrincipalDep, SessionDep, SettingsDep
from api.schemas import NOT_FOUND, ComparisonOut, ComparisonPage, ComparisonSummary, HTTPError
from db import queries
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from worker.dispatch import enqueue_runs

router = APIRouter(prefix="/api/v1/comparisons", tags=["comparisons"])


def _limit_error(loc: tuple, message: str, value) -> RequestValidationError:
    return RequestValidationError([{"type": "limit_exceeded", "loc": ("body", *loc), "msg": message, "input": value}])


@router.post("", status_code=202, response_model=ComparisonOut,
             responses={413: {"model": HTTPError, "description": "body larger than OPTIBENCH_MAX_BODY_BYTES"}})
def submit_comparison(spec: ComparisonSpec, session: SessionDep, settings: SettingsDep,
                      principal: PrincipalDep) -> ComparisonOut:
    """Validate a comparison completely, store it with one queued run per optimizer × seed, then enqueue."""
    n_runs = len(spec.optimizers) * len(spec.seeds)
    if n_runs > settings.max_runs_per_comparison:
        raise _limit_error(("seeds",), f"{n_runs} runs (optimizers × seeds) exceed the limit of "
                           f"{settings.max_runs_per_comparison}; set OPTIBENCH_MAX_RUNS_PER_COMPARISON", n_runs)
    totals = [steps_total(spec, i) for i in range(len(spec.optimizers))]
    if max(totals) > settings.max_steps_per_run:
        raise _limit_error(("training",), f"{max(totals)} steps per run exceed the limit of "
                           f"{settings.max_steps_per_run}; set OPTIBENCH_MAX_STEPS_PER_RUN", max(totals))
    comparison = queries.create_comparison(session, spec.model_dump(mode="json"), totals,
                                           team_id=principal.team_id, submitted_by=principal.name)
    session.commit()
    enqueue_runs({run.id: run.steps_total for run in comparison.runs})
    return ComparisonOut.full(comparison)


@router.get("", response_model=ComparisonPage, responses={400: {"model": HTTPError, "description": "bad cursor"}})
def list_comparisons(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> ComparisonPage:
    """Newest first."""
    try:
        page, next_cursor = queries.list_comparisons(session, principal.team_id, limit, cursor)
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc
    progress = queries.progress_of(session, [c.id for c in page])
    items = [ComparisonSummary.of(c, progress.get(c.id, queries.Progress())) for c in page]
    return ComparisonPage(items=items, next_cursor=next_cursor)


@router.get("/{comparison_id}", response_model=ComparisonOut, responses=NOT_FOUND)
def get_comparison(comparison_id: str, session: SessionDep, principal: PrincipalDep) -> ComparisonOut:
    comparison = queries.get_comparison(session, comparison_id, principal.team_id)
    if comparison is None:
        raise HTTPException(404, f"comparison {comparison_id!r} not found")
    return ComparisonOut.full(comparison)


@router.post("/{comparison_id}/cancel", response_model=ComparisonOut, responses=NOT_FOUND)
def cancel_comparison(comparison_id: str, session: SessionDep, principal: PrincipalDep) -> ComparisonOut:
    """Cancel every unfinished run. Queued runs stop at once, running ones at their next flush
    (within OPTIBENCH_FLUSH_INTERVAL_S); the rows already recorded are kept."""
    if queries.get_comparison(session, comparison_id, principal.team_id) is None:
        raise HTTPException(404, f"comparison {comparison_id!r} not found")
    queries.cancel(session, comparison_id=comparison_id)
    session.commit()
    session.expire_all()
    return ComparisonOut.full(queries.get_comparison(session, comparison_id, principal.team_id))
