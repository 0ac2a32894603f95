"""The leaderboard of a comparison with paired tests against a baseline, and the sensitivity of the
final loss to a swept hyperparameter. Definitions: docs/statistics.md. Non-finite values are the
strings "NaN", "Infinity" and "-Infinity", as everywhere in the API."""

from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep, SessionDep
from api.reads import BaselineQuery, ParamQuery, PhaseQuery, SensitivityOut, SummaryOut
from api.schemas import NOT_FOUND, json_safe
from services import access
from services.summaries import sensitivity, summarize

router = APIRouter(prefix="/api/v1", tags=["analysis"])


@router.get("/comparisons/{comparison_id}/summary", response_model=SummaryOut, responses=NOT_FOUND)
def get_summary(
    comparison_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    phase: PhaseQuery = "chosen",
    baseline: BaselineQuery = None,
) -> Any:
    """One row per optimizer setting, by rank, and each setting against the baseline on matched seeds.
    Runs still running are left out; a running comparison is summarised as far as it got."""
    comparison = access.comparison(session, comparison_id, principal.team_id)
    return json_safe(summarize(session, comparison, phase, baseline))


@router.get("/comparisons/{comparison_id}/sensitivity", response_model=SensitivityOut, responses=NOT_FOUND)
def get_sensitivity(comparison_id: str, session: SessionDep, principal: PrincipalDep, param: ParamQuery = "lr") -> Any:
    """The final loss against the value of a swept hyperparameter, per optimizer entry (the
    learning-rate sensitivity plot of DeepOBS)."""
    return json_safe(sensitivity(access.comparison(session, comparison_id, principal.team_id), param))
