"""Curves for plotting, computed on the server: one run's metric in equal-width x buckets, and a
comparison's runs aggregated over seeds. The contract is docs/curves.md."""

import json
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from analysis.downsample import Band, Bucket, Grid, SeedPoint, aggregate_seeds
from api.deps import PrincipalDep, SessionDep
from api.schemas import NOT_FOUND, json_body, json_safe
from db import curves
from db.curves import Axis, Metric
from db.models import Comparison, Run
from services import access

router = APIRouter(prefix="/api/v1", tags=["analysis"])

Points = Annotated[int, Query(ge=2, le=10_000, description="buckets (at most this many points come back)")]
Bound = Annotated[float | None, Query(allow_inf_nan=False, description="in units of x; default: the run's range")]
#: seeds are aggregated at equal x: steps or wall time
SeedAxis = Literal["step", "time"]


def _invalid(field: str, message: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("query", field), "msg": message, "input": value}])


def _check_axis(metric: Metric, x: str) -> None:
    if not curves.has_axis(metric, x):
        raise _invalid("x", f"x={x} is not available for {metric}: evaluations record no wall time; "
                            "use x=step or x=epoch", x)


def _non_finite_counts(point: Bucket | SeedPoint) -> dict[str, int]:
    return {name: n for name, n in (("nan", point.nan), ("pos_inf", point.pos_inf), ("neg_inf", point.neg_inf)) if n}


def _bucket_json(bucket: Bucket) -> dict:
    return json_safe({"x_start": bucket.x_start, "x_end": bucket.x_end, "count": bucket.count,
                      "first": bucket.first, "last": bucket.last, "min": bucket.min, "max": bucket.max,
                      "mean": bucket.mean, **_non_finite_counts(bucket)})


def _seed_point_json(point: SeedPoint) -> dict:
    return json_safe({"x": point.x, "n": point.n, "mean": point.mean, "lo": point.lo, "hi": point.hi,
                      **_non_finite_counts(point)})


@router.get("/runs/{run_id}/curve", responses=NOT_FOUND)
def run_curve(run_id: str, session: SessionDep, principal: PrincipalDep, metric: Metric = "loss",
              x: Axis = "step", points: Points = 1000, start: Bound = None, end: Bound = None) -> dict:
    """One metric of a run in ``points`` equal-width buckets of x over [start, end], each with
    first, last, min, max and mean; the raw rows when there are no more than ``points``."""
    run = access.run(session, run_id, principal.team_id)
    return run_curve_of(session, run, metric, x, points, start, end)


def run_curve_of(session: Session, run: Run, metric: Metric, x: Axis, points: int, start: float | None,
                 end: float | None) -> dict:
    """The body of GET /runs/{id}/curve, for a run the caller may read."""
    _check_axis(metric, x)
    if start is not None and end is not None:
        if start >= end:
            raise _invalid("end", f"end ({end}) must be greater than start ({start})", end)
        if not math.isfinite(end - start):
            raise _invalid("end", f"end - start ({end} - {start}) must be a finite width", end)
    curve = curves.run_curve(session, run.reused_from_id or run.id, metric, x, points, start, end)
    return json_body({"run_id": run.id, "metric": metric, "x": x, "points": points, "start": curve.start,
                      "end": curve.end, "raw": curve.raw, "rows": curve.rows,
                      "buckets": [_bucket_json(b) for b in curve.buckets]})


def _seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs that differ only in seed: one optimizer entry, and one point of a sweep."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.label, json.dumps(run.sweep_values or {}, sort_keys=True)), []).append(run)
    return list(groups.values())


@router.get("/comparisons/{comparison_id}/curves", responses=NOT_FOUND)
def comparison_curves(comparison_id: str, session: SessionDep, principal: PrincipalDep, metric: Metric = "loss",
                      x: SeedAxis = "step", points: Points = 1000, band: Band = "ci") -> dict:
    """Per optimizer entry, its runs' curves aggregated over seeds on one grid of ``points``
    equal-width buckets over [0, the largest x of the comparison]: n, mean, and a band."""
    return comparison_curves_of(session, access.comparison(session, comparison_id, principal.team_id), metric, x, points, band)


def comparison_curves_of(session: Session, comparison: Comparison, metric: Metric, x: SeedAxis, points: int,
                         band: Band) -> dict:
    """The body of GET /comparisons/{id}/curves, for a comparison the caller may read."""
    _check_axis(metric, x)
    source = {run.id: run.reused_from_id or run.id for run in comparison.runs}
    sources = sorted(set(source.values()))
    ends = [found[1] for found in (curves.x_range(session, s, metric, x) for s in sources) if found]
    x_max = max(ends, default=None)
    by_source = curves.buckets(session, sources, metric, x, Grid(0.0, x_max, points)) if ends else {}
    groups = [{
        "label": group[0].label, "optimizer": group[0].optimizer_name, "params": group[0].optimizer_params,
        "sweep_values": group[0].sweep_values or {}, "run_ids": [run.id for run in group], "seeds": [run.seed for run in group],
        "points": [_seed_point_json(p) for p in aggregate_seeds([by_source.get(source[run.id], []) for run in group], band)],
    } for group in _seed_groups(comparison.runs)]
    return json_body({"comparison_id": comparison.id, "metric": metric, "x": x, "points": points, "band": band,
                      "x_max": x_max, "groups": groups})
