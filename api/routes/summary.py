"""The leaderboard of a comparison with paired tests against a baseline, and the sensitivity of the
final loss to a swept hyperparameter. Definitions: docs/statistics.md. Non-finite values are the
strings "NaN", "Infinity" and "-Infinity", as everywhere in the API."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.orm import Session

from analysis.summary import AnalysisInputError, Phase
from services.summaries import sensitivity, summarize
from api.deps import PrincipalDep, SessionDep
from api.schemas import NOT_FOUND, ComparisonStatus, json_safe
from db.models import Comparison
from services import access

router = APIRouter(prefix="/api/v1", tags=["analysis"])

Number = float | Literal["NaN", "Infinity", "-Infinity"] | None


class LossStats(BaseModel):
    """Over the runs with a finite final loss: the mean, its 95% t-interval (null below two runs),
    the median, the best (lowest) and the worst."""

    mean: Number
    ci_low: Number
    ci_high: Number
    median: Number
    best: Number
    worst: Number


class WallTime(BaseModel):
    total: Number
    mean: Number


class TimeToTarget(BaseModel):
    """The first step whose loss is ≤ target_loss, and its time_s: means over the ``reached`` runs,
    of the ``of`` finished ones."""

    steps: Number
    seconds: Number
    reached: int
    of: int


class LeaderboardRow(BaseModel):
    label: str
    optimizer: str
    params: dict[str, Any]
    n_seeds: int
    n_finished: int
    n_diverged: int
    final_loss: LossStats
    best_so_far: Number
    val_loss: Number
    val_accuracy: Number
    steps_per_s: Number
    wall_time_s: WallTime
    time_to_target: TimeToTarget
    auc_log_loss: Number
    rank: int | None


class PairedComparison(BaseModel):
    """``label`` minus ``baseline`` in final loss, matched on seed."""

    label: str
    baseline: str
    n_pairs: int
    mean_diff: Number
    ci_low: Number
    ci_high: Number
    t_pvalue: Number
    wilcoxon_pvalue: Number


class SummaryOut(BaseModel):
    comparison_id: str
    status: ComparisonStatus
    phase: Phase
    target_loss: Number
    target_loss_source: Literal["spec", "default"]
    baseline: str
    metric: Literal["final_loss"]
    rows: list[LeaderboardRow]
    paired: list[PairedComparison]


class SensitivityPoint(BaseModel):
    value: Any
    #: runs with a finite final loss, which the statistics cover
    n: int
    n_diverged: int
    final_loss: LossStats


class SensitivitySeries(BaseModel):
    label: str
    entry_index: int
    #: the entry's other swept values, held fixed along this series
    fixed: dict[str, Any]
    points: list[SensitivityPoint]


class SensitivityOut(BaseModel):
    comparison_id: str
    status: ComparisonStatus
    param: str
    swept: list[str]
    metric: Literal["final_loss"]
    series: list[SensitivitySeries]


def _query_error(exc: AnalysisInputError, value: str | None) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", exc.field), "msg": str(exc),
                                    "input": value}])


PhaseQuery = Annotated[Phase, Query(description="tuning jobs: 'chosen' shows the settings chosen for the "
                                                "final phase, 'all' every setting")]
BaselineQuery = Annotated[str | None, Query(max_length=200, description="a label, or an optimizer entry's label; "
                                                                        "default: the spec's baseline, else the first entry")]
ParamQuery = Annotated[str, Query(min_length=1, max_length=100, description="a swept hyperparameter")]


@router.get("/comparisons/{comparison_id}/summary", response_model=SummaryOut, responses=NOT_FOUND)
def get_summary(comparison_id: str, session: SessionDep, principal: PrincipalDep, phase: PhaseQuery = "chosen",
                baseline: BaselineQuery = None) -> Any:
    """One row per optimizer setting, by rank, and each setting against the baseline on matched seeds.
    Runs still running are left out; a running comparison is summarised as far as it got."""
    return summary_of(session, access.comparison(session, comparison_id, principal.team_id), phase, baseline)


def summary_of(session: Session, comparison: Comparison, phase: Phase, baseline: str | None) -> Any:
    try:
        return json_safe(summarize(session, comparison, phase, baseline))
    except AnalysisInputError as exc:
        raise _query_error(exc, baseline) from exc


@router.get("/comparisons/{comparison_id}/sensitivity", response_model=SensitivityOut, responses=NOT_FOUND)
def get_sensitivity(comparison_id: str, session: SessionDep, principal: PrincipalDep,
                    param: ParamQuery = "lr") -> Any:
    """The final loss against the value of a swept hyperparameter, per optimizer entry (the
    learning-rate sensitivity plot of DeepOBS)."""
    return sensitivity_of(access.comparison(session, comparison_id, principal.team_id), param)


def sensitivity_of(comparison: Comparison, param: str) -> Any:
    try:
        return json_safe(sensitivity(comparison, param))
    except AnalysisInputError as exc:
        raise _query_error(exc, param) from exc
