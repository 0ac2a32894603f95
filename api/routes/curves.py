"""Curves for plotting, computed on the server: one run's metric in equal-width x buckets, and a
comparison's runs aggregated over seeds. The contract is docs/curves.md."""

from fastapi import APIRouter, Response

from analysis.downsample import Band, Scale
from api.deps import PrincipalDep, SessionDep
from api.reads import Bound, GroupBy, Points, SeedAxis
from api.schemas import NOT_FOUND, json_body, json_safe
from db.curves import Axis, Metric
from services import access
from services import curves as curve_bodies

router = APIRouter(prefix="/api/v1", tags=["analysis"])


@router.get("/runs/{run_id}/curve", response_model=dict, responses=NOT_FOUND)
def run_curve(
    run_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    metric: Metric = "loss",
    x: Axis = "step",
    points: Points = 1000,
    start: Bound = None,
    end: Bound = None,
) -> Response:
    """One metric of a run in ``points`` equal-width buckets of x over [start, end], each with
    first, last, min, max and mean; the raw rows when there are no more than ``points``."""
    run = access.run(session, run_id, principal.team_id)
    return json_body(json_safe(curve_bodies.run_curve(session, run, metric, x, points, start, end)))


@router.get("/comparisons/{comparison_id}/curves", response_model=dict, responses=NOT_FOUND)
def comparison_curves(
    comparison_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    metric: Metric = "loss",
    x: SeedAxis = "step",
    points: Points = 1000,
    band: Band = "ci",
    scale: Scale = "linear",
    group_by: GroupBy = "setting",
) -> Response:
    """Per optimizer entry, its runs' curves aggregated over seeds on one grid of ``points``
    equal-width buckets over [0, the largest x of the comparison]: n, mean, and a band; ``scale=log``
    aggregates the logs of the positive values (geometric mean, a band that stays above 0);
    ``group_by`` aggregates other groups of runs than one setting's seeds."""
    comparison = access.comparison(session, comparison_id, principal.team_id)
    return json_body(
        json_safe(curve_bodies.comparison_curves(session, comparison, metric, x, points, band, scale, group_by))
    )
