"""Suites (docs/suites.md): submit optimizers against a suite, read its scores over the team's history, and
its page. Thin: the work is services.suites'."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from api import auth
from api.deps import PageDep, PrincipalDep, SessionDep, SettingsDep
from api.schemas import ComparisonOut
from engine.suites import Suite
from services import submit as submitting
from services import suites

router = APIRouter(prefix="/api/v1/suites", tags=["suites"])
page_router = APIRouter(include_in_schema=False)

BudgetQuery = Annotated[suites.Budget, Query(description="'reduced' reads the reduced-budget runs, scored apart")]


def _suite(name: str, version: str) -> Suite:
    try:
        return suites.find(name, version)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


@router.get("")
def list_suites() -> list[dict[str, Any]]:
    """Every suite in this deployment, by name and version."""
    return suites.listing()


@router.get("/{name}/{version}")
def get_suite(
    name: str, version: str, session: SessionDep, principal: PrincipalDep, budget: BudgetQuery = "full"
) -> dict[str, Any]:
    """The suite's content, each workload's target, and every optimizer setting the team ever ran on it, ranked
    by score (seconds; ``score_steps`` by steps), with its profile and time-to-target per workload and seeds."""
    return suites.scores(session, _suite(name, version), budget, team_id=principal.team_id)


@router.get("/{name}/{version}/leaderboard")
def suite_leaderboard(
    name: str, version: str, session: SessionDep, principal: PrincipalDep, budget: BudgetQuery = "full"
) -> list[dict[str, Any]]:
    """Every optimizer setting the team ever ran on the suite, ranked by score, with the seeds behind each figure."""
    board = suites.scores(session, _suite(name, version), budget, team_id=principal.team_id)["optimizers"]
    return [
        {"rank": i + 1} | {k: v for k, v in row.items() if not k.startswith("profile")} for i, row in enumerate(board)
    ]


@router.post("/{name}/{version}/submissions", status_code=202)
def submit_to_suite(
    name: str,
    version: str,
    submission: suites.SuiteSubmission,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """One paired comparison per workload: the suite's baselines and the submitted optimizers on the suite's
    seeds. Every workload is validated before anything is stored."""
    suite = _suite(name, version)
    try:
        done = suites.submit(
            session, suite, submission, settings, team_id=principal.team_id, submitted_by=principal.name
        )
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    except submitting.Refused as exc:
        raise RequestValidationError(
            [{"type": exc.kind, "loc": ("body", *exc.loc), "msg": str(exc), "input": exc.value}]
        ) from None
    except submitting.TooManyRunning as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "60"}) from None
    return {
        "suite": suite.id,
        "budget": submission.budget,
        "comparisons": [
            {"workload": workload, "comparison": ComparisonOut.full(c.comparison).model_dump(mode="json")}
            for workload, c in done
        ],
    }


@page_router.get("/suites/{name}/{version}", response_class=HTMLResponse)
def suite_page(
    name: str, version: str, request: Request, principal: PageDep, session: SessionDep, budget: BudgetQuery = "full"
) -> HTMLResponse:
    try:
        suite = suites.find(name, version)
    except ValidationError as exc:
        context = {"title": "Not found", "message": exc.errors()[0]["msg"], "principal": principal}
        return auth.templates.TemplateResponse(request, "message.html", context, status_code=404)
    data = suites.scores(session, suite, budget, team_id=principal.team_id)
    return auth.templates.TemplateResponse(request, "suite.html", {"data": data, "principal": principal})
