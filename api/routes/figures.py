"""The figures of the comparison page that no other endpoint gives: a function problem's loss surface
with each run's path on it, and the distribution of step times. And every read a share link's page
makes, answered for anyone holding the token: its comparison's own data, nothing else of the team."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from analysis import surface
from analysis.downsample import Band, Scale
from api.deps import PrincipalDep, SessionDep, SharedComparisonDep
from api.reads import (
    BaselineQuery,
    Bound,
    GroupBy,
    ParamQuery,
    PhaseQuery,
    Points,
    SeedAxis,
    SensitivityOut,
    SummaryOut,
)
from api.schemas import NOT_FOUND, json_body, json_safe
from db import curves, figures
from db.curves import Axis, Metric
from db.models import Comparison
from engine.functions import Function
from services import access, summaries
from services import curves as curve_bodies

router = APIRouter(prefix="/api/v1", tags=["analysis"])
#: no API key: the token is the permission, for one comparison
shared_router = APIRouter(prefix="/api/v1/shared/{token}", tags=["share links"], responses=NOT_FOUND)

GridPoints = Annotated[int, Query(ge=10, le=300, description="grid points per coordinate")]
PathPoints = Annotated[int, Query(ge=2, le=5000, description="at most this many points per run's path")]
Bins = Annotated[int, Query(ge=1, le=200, description="histogram bins")]
#: the paths of all runs together stay this small, however many runs a sweep has
MAX_PATH_POINTS_TOTAL = 20_000


def surface_of(session: Session, comparison: Comparison, grid_points: int, path_points: int) -> dict[str, Any]:
    problem = comparison.spec["problem"]
    dim = len(problem.get("x0") or [])
    if problem.get("function") is None or dim not in (1, 2):
        what = "a dataset problem" if problem.get("function") is None else f"a {dim}-D function problem"
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("path", "comparison_id"),
                    "input": comparison.id,
                    "msg": f"comparison {comparison.id} is {what}: a loss surface is drawn "
                    "for 1-D and 2-D function problems only",
                }
            ]
        )
    function = problem["function"]
    per_run = max(2, min(path_points, MAX_PATH_POINTS_TOTAL // max(1, len(comparison.runs))))
    paths: list[dict[str, Any]] = []
    for run in comparison.runs:
        data_id = run.reused_from_id or run.id
        found = curves.x_range(session, data_id, "loss", "step")
        points = figures.path_points(session, data_id, surface.path_steps(int(found[1]), per_run)) if found else []
        paths.append(
            {
                "run_id": run.id,
                "label": run.label,
                "seed": run.seed,
                "status": run.status,
                "steps": [p.step for p in points],
                "x": [p.x for p in points],
                "loss": [p.loss for p in points],
            }
        )
    minimizers = _minimizers(function)
    box = surface.box_around([problem["x0"], *minimizers, *(x for path in paths for x in path["x"])], dim)
    return json_safe(
        {
            "comparison_id": comparison.id,
            "function": function["name"],
            "params": function["params"],
            "dim": dim,
            "x0": problem["x0"],
            "minimizers": minimizers,
            "box": {"lo": box.lo, "hi": box.hi},
            "grid": surface.grid(function["name"], function["params"], box, grid_points),
            "paths": paths,
        }
    )


def _minimizers(function: dict[str, Any]) -> list[list[float]]:
    """The function's known global minimizers, marked on the plot; none where it does not say."""
    component: type[Function[Any]] = Function.registered(function["name"])
    try:
        return component.minimizers(component.Params.model_validate(function["params"]))
    except NotImplementedError:
        return []


def step_times_of(session: Session, comparison: Comparison, bins: int) -> dict[str, Any]:
    """Per optimizer setting, how many of its runs' steps took how long (bins shared by all)."""
    source = {run.id: run.reused_from_id or run.id for run in comparison.runs}
    histogram = figures.step_time_histogram(session, sorted(set(source.values())), bins)
    groups: dict[str, list[int]] = {}
    for run in comparison.runs:
        counts = histogram.counts.get(source[run.id], [])
        total = groups.setdefault(run.label, [0] * len(counts))
        groups[run.label] = [a + b for a, b in zip(total, counts)]
    return {
        "comparison_id": comparison.id,
        "unit": "ms",
        "edges": histogram.edges,
        "groups": [{"label": label, "counts": counts} for label, counts in groups.items()],
    }


# --- the team's routes -------------------------------------------------------------------------


@router.get("/comparisons/{comparison_id}/surface", responses=NOT_FOUND)
def comparison_surface(
    comparison_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    points: GridPoints = 80,
    path_points: PathPoints = 500,
) -> dict:
    """A 1-D or 2-D function problem: f on a grid of ``points`` per coordinate over a box around
    the start, the known minimizers and every run's path, and each path (the point before each
    update, and f there), evenly sampled down to ``path_points``. z[i][j] = f(x[j], y[i]) in 2-D."""
    return surface_of(session, access.comparison(session, comparison_id, principal.team_id), points, path_points)


@router.get("/comparisons/{comparison_id}/step-times", responses=NOT_FOUND)
def comparison_step_times(comparison_id: str, session: SessionDep, principal: PrincipalDep, bins: Bins = 40) -> dict:
    """A histogram of step_time_ms per optimizer setting over log-spaced bins from the fastest step
    to the slowest: ``edges`` (bins + 1, in ms) and each setting's ``counts``."""
    return step_times_of(session, access.comparison(session, comparison_id, principal.team_id), bins)


# --- a share link's reads ----------------------------------------------------------------------


@shared_router.get("/curves", response_model=dict)
def shared_curves(
    comparison: SharedComparisonDep,
    session: SessionDep,
    metric: Metric = "loss",
    x: SeedAxis = "step",
    points: Points = 1000,
    band: Band = "ci",
    scale: Scale = "linear",
    group_by: GroupBy = "setting",
) -> Response:
    """GET /api/v1/comparisons/{id}/curves of the shared comparison."""
    return json_body(
        json_safe(curve_bodies.comparison_curves(session, comparison, metric, x, points, band, scale, group_by))
    )


@shared_router.get("/runs/{run_id}/curve", response_model=dict)
def shared_run_curve(
    comparison: SharedComparisonDep,
    run_id: str,
    session: SessionDep,
    metric: Metric = "loss",
    x: Axis = "step",
    points: Points = 1000,
    start: Bound = None,
    end: Bound = None,
) -> Response:
    """GET /api/v1/runs/{id}/curve, for the runs of the shared comparison only."""
    run = next((run for run in comparison.runs if run.id == run_id), None)
    if run is None:
        raise HTTPException(404, f"run {run_id!r} not found in this comparison")
    return json_body(json_safe(curve_bodies.run_curve(session, run, metric, x, points, start, end)))


@shared_router.get("/summary", response_model=SummaryOut)
def shared_summary(
    comparison: SharedComparisonDep, session: SessionDep, phase: PhaseQuery = "chosen", baseline: BaselineQuery = None
) -> Any:
    """GET /api/v1/comparisons/{id}/summary of the shared comparison."""
    return json_safe(summaries.summarize(session, comparison, phase, baseline))


@shared_router.get("/sensitivity", response_model=SensitivityOut)
def shared_sensitivity(comparison: SharedComparisonDep, param: ParamQuery = "lr") -> Any:
    """GET /api/v1/comparisons/{id}/sensitivity of the shared comparison."""
    return json_safe(summaries.sensitivity(comparison, param))


@shared_router.get("/surface")
def shared_surface(
    comparison: SharedComparisonDep, session: SessionDep, points: GridPoints = 80, path_points: PathPoints = 500
) -> dict:
    """GET /api/v1/comparisons/{id}/surface of the shared comparison."""
    return surface_of(session, comparison, points, path_points)


@shared_router.get("/step-times")
def shared_step_times(comparison: SharedComparisonDep, session: SessionDep, bins: Bins = 40) -> dict:
    """GET /api/v1/comparisons/{id}/step-times of the shared comparison."""
    return step_times_of(session, comparison, bins)
