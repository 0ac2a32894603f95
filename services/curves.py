"""Curves for plotting, computed on the server: one run's metric in equal-width x buckets, and a
comparison's runs aggregated over seeds (the contract is docs/curves.md). The bodies hold plain floats;
the API writes the non-finite ones as strings."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from analysis.downsample import Band, Bucket, Grid, Scale, SeedPoint, aggregate_seeds
from db import curves
from db.curves import Axis, Metric
from db.models import Comparison, Run
from services.access import InvalidQuery


def _check_axis(metric: Metric, x: Axis) -> None:
    if not curves.has_axis(metric, x):
        raise InvalidQuery(
            "x", f"x={x} is not available for {metric}: evaluations record no wall time; use x=step or x=epoch", x
        )


def _non_finite_counts(point: Bucket | SeedPoint) -> dict[str, int]:
    return {name: n for name, n in (("nan", point.nan), ("pos_inf", point.pos_inf), ("neg_inf", point.neg_inf)) if n}


def _bucket(bucket: Bucket) -> dict[str, Any]:
    return {
        "x_start": bucket.x_start,
        "x_end": bucket.x_end,
        "count": bucket.count,
        "first": bucket.first,
        "last": bucket.last,
        "min": bucket.min,
        "max": bucket.max,
        "mean": bucket.mean,
        **_non_finite_counts(bucket),
    }


def _seed_point(point: SeedPoint) -> dict[str, Any]:
    below = {"nonpositive": point.nonpositive} if point.nonpositive else {}
    return {
        "x": point.x,
        "n": point.n,
        "mean": point.mean,
        "lo": point.lo,
        "hi": point.hi,
        **_non_finite_counts(point),
        **below,
    }


def run_curve(
    session: Session, run: Run, metric: Metric, x: Axis, points: int, start: float | None, end: float | None
) -> dict[str, Any]:
    """The body of GET /runs/{id}/curve, for a run the caller may read."""
    _check_axis(metric, x)
    if start is not None and end is not None:
        if start >= end:
            raise InvalidQuery("end", f"end ({end}) must be greater than start ({start})", end)
        if not math.isfinite(end - start):
            raise InvalidQuery("end", f"end - start ({end} - {start}) must be a finite width", end)
    curve = curves.run_curve(session, run.reused_from_id or run.id, metric, x, points, start, end)
    return {
        "run_id": run.id,
        "metric": metric,
        "x": x,
        "points": points,
        "start": curve.start,
        "end": curve.end,
        "raw": curve.raw,
        "rows": curve.rows,
        "buckets": [_bucket(b) for b in curve.buckets],
    }


def _seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs that differ only in seed: one optimizer entry, and one point of a sweep."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.label, json.dumps(run.sweep_values or {}, sort_keys=True)), []).append(run)
    return list(groups.values())


#: group_by's keys besides ``setting`` (the default: runs that differ only in seed) and ``params.<name>``
_RUN_KEYS = ("optimizer", "label", "batch_size")


def _key_of(comparison: Comparison, group_by: str) -> Callable[[Run], Any]:
    if group_by == "optimizer":
        return lambda run: run.optimizer_name
    if group_by == "label":
        return lambda run: run.label
    entries = comparison.spec["optimizers"]
    if group_by == "batch_size":
        return lambda run: entries[run.entry_index].get("batch_size") or comparison.spec["training"]["batch_size"]
    name = group_by.removeprefix("params.")
    known = sorted({key for run in comparison.runs for key in run.optimizer_params})
    if name not in known:
        raise InvalidQuery(
            "group_by",
            f"no run of this comparison has the parameter {name!r}; group_by takes setting, "
            f"{', '.join(_RUN_KEYS)} or params.<name> with a name among: {', '.join(known)}",
            group_by,
        )
    return lambda run: run.optimizer_params.get(name)


def _grouped(comparison: Comparison, group_by: str) -> list[tuple[Any, str, list[Run]]]:
    """(value, display name, runs) per value of the key, in the order runs first show it."""
    key = _key_of(comparison, group_by)
    name = group_by.removeprefix("params.")
    groups: dict[str, tuple[Any, str, list[Run]]] = {}
    for run in comparison.runs:
        value = key(run)
        if group_by in ("optimizer", "label"):
            shown = str(value)
        else:
            shown = (
                f"{name} unset" if value is None else f"{name}={value if isinstance(value, str) else json.dumps(value)}"
            )
        groups.setdefault(json.dumps(value, sort_keys=True), (value, shown, []))[2].append(run)
    return list(groups.values())


def comparison_curves(
    session: Session,
    comparison: Comparison,
    metric: Metric,
    x: Axis,
    points: int,
    band: Band,
    scale: Scale = "linear",
    group_by: str = "setting",
) -> dict[str, Any]:
    """The body of GET /comparisons/{id}/curves, for a comparison the caller may read."""
    _check_axis(metric, x)
    grouped = None if group_by == "setting" else _grouped(comparison, group_by)
    source = {run.id: run.reused_from_id or run.id for run in comparison.runs}
    sources = sorted(set(source.values()))
    x_max = curves.last_x(session, sources, metric, x)
    by_source = curves.buckets(session, sources, metric, x, Grid(0.0, x_max, points)) if x_max is not None else {}

    def aggregated(runs: list[Run]) -> list[dict[str, Any]]:
        return [_seed_point(p) for p in aggregate_seeds([by_source.get(source[r.id], []) for r in runs], band, scale)]

    if grouped is None:
        groups = [
            {
                "label": group[0].label,
                "optimizer": group[0].optimizer_name,
                "params": group[0].optimizer_params,
                "sweep_values": group[0].sweep_values or {},
                "run_ids": [run.id for run in group],
                "seeds": [run.seed for run in group],
                "points": aggregated(group),
            }
            for group in _seed_groups(comparison.runs)
        ]
    else:
        groups = [
            {
                "label": shown,
                "value": value,
                "settings": list(dict.fromkeys(run.label for run in runs)),
                "run_ids": [run.id for run in runs],
                "seeds": [run.seed for run in runs],
                "points": aggregated(runs),
            }
            for value, shown, runs in grouped
        ]
    return {
        "comparison_id": comparison.id,
        "metric": metric,
        "x": x,
        "points": points,
        "band": band,
        "scale": scale,
        "group_by": group_by,
        "x_max": x_max,
        "groups": groups,
    }
