"""Downsampling invariants, property-based: on random series with NaN and ±inf spikes, random point
counts and zoom windows, every bucket bounds its rows, counts add up, first and last rows are exact
and a NaN spike stays visible. The same properties hold for the array reference
(analysis.downsample) and for the SQL path (db.curves) on SQLite and PostgreSQL, which must also
agree with each other bucket for bucket."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from sqlalchemy import delete, insert

from analysis.downsample import Bucket, Curve, aggregate_seeds, downsample
from db import comparisons, curves
from db.models import Step
from db.session import new_session, transaction
from engine.spec import ComparisonSpec

SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])
FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
#: how x advances from row to row: a step axis with gaps, wall time, epochs (repeated values)
AXES = {
    "step": st.integers(1, 5),
    "time": st.floats(1e-3, 10.0),
    "epoch": st.integers(0, 1),
}


@st.composite
def series(draw, axis: str, min_rows: int = 1, max_rows: int = 150) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(min_rows, max_rows))
    values = draw(st.lists(FINITE, min_size=n, max_size=n))
    for _ in range(draw(st.integers(0, 4))):
        values[draw(st.integers(0, n - 1))] = draw(SPECIAL)
    first = draw(st.integers(0, 20)) if axis != "time" else draw(st.floats(0.0, 5.0))
    x = first + np.cumsum([0] + draw(st.lists(AXES[axis], min_size=n - 1, max_size=n - 1)))
    return x.astype(np.float64), np.array(values)


@st.composite
def windows(draw, x: np.ndarray) -> tuple[float | None, float | None]:
    """No window, or one inside, around or partly outside the data."""
    if draw(st.booleans()):
        return None, None
    lo, hi = float(x[0]) - 2, float(x[-1]) + 2
    start, end = sorted(draw(st.lists(st.floats(lo, hi), min_size=2, max_size=2, unique=True)))
    return draw(st.sampled_from([(start, end), (start, None), (None, end)]))


def _same(a: float | None, b: float | None) -> bool:
    """Equal, NaN included (not the sign of zero: SQLite stores -0.0 as 0)."""
    return (a is None) == (b is None) and (a is None or a == b or (math.isnan(a) and math.isnan(b)))


def check_invariants(
    curve: Curve, x: np.ndarray, values: np.ndarray, points: int, start: float | None, end: float | None
) -> None:
    start = x[0] if start is None else start
    end = x[-1] if end is None else end
    inside = (x >= start) & (x <= end)
    xs, vs = x[inside], values[inside]
    assert curve.raw == (len(xs) <= points)
    assert len(curve.buckets) <= points
    assert curve.rows == sum(b.count for b in curve.buckets) == len(xs)
    if len(xs):
        assert curve.buckets[0].x_start == xs[0] and _same(curve.buckets[0].first, vs[0])
        assert curve.buckets[-1].x_end == xs[-1] and _same(curve.buckets[-1].last, vs[-1])
    width = (end - start) / points
    row = 0
    for i, bucket in enumerate(curve.buckets):
        bx, bv = xs[row : row + bucket.count], vs[row : row + bucket.count]
        row += bucket.count
        assert bucket.count >= 1
        assert (bucket.x_start, bucket.x_end) == (bx[0], bx[-1])
        assert _same(bucket.first, bv[0]) and _same(bucket.last, bv[-1])
        not_nan, finite = bv[~np.isnan(bv)], bv[np.isfinite(bv)]
        assert (bucket.nan, bucket.pos_inf, bucket.neg_inf) == (
            np.isnan(bv).sum(),
            (bv == np.inf).sum(),
            (bv == -np.inf).sum(),
        )
        if len(not_nan):
            # every raw value lies within the bucket's min and max, which are attained
            assert bucket.min == not_nan.min() and bucket.max == not_nan.max()
            assert np.all((bucket.min <= not_nan) & (not_nan <= bucket.max))
        else:
            assert bucket.min is None and bucket.max is None
        if len(finite):
            assert bucket.mean == pytest.approx(math.fsum(finite) / len(finite), rel=1e-9, abs=1e-6)
        else:
            assert bucket.mean is None
        if curve.raw:
            assert bucket.count == 1
        else:
            # equal-width buckets in x, in order, none sharing an x value
            assert start + bucket.index * width - 1e-9 * (1 + abs(end)) <= bx[0]
            assert bx[-1] <= start + (bucket.index + 1) * width + 1e-9 * (1 + abs(end))
            if i:
                assert curve.buckets[i - 1].index < bucket.index and curve.buckets[i - 1].x_end < bucket.x_start


def check_nan_spike_visible(curve: Curve, x: np.ndarray, spike: int) -> None:
    """One NaN among finite values: exactly the bucket holding it counts it, and its min/max stay the
    finite values' (none when the NaN is alone in its bucket)."""
    assert not curve.raw
    (holding,) = [b for b in curve.buckets if b.x_start <= x[spike] <= b.x_end]
    assert holding.nan == 1 and sum(b.nan for b in curve.buckets) == 1
    if holding.count == 1:
        assert (holding.min, holding.max, holding.mean) == (None, None, None) and math.isnan(holding.first)
    else:
        assert math.isfinite(holding.min) and math.isfinite(holding.max) and math.isfinite(holding.mean)


@st.composite
def cases(draw, axis: str):
    x, values = draw(series(axis))
    points = draw(st.integers(2, 40))
    start, end = draw(windows(x))
    return x, values, points, start, end


@st.composite
def spikes(draw, axis: str):
    x, values = draw(series(axis, min_rows=3))
    values = np.where(np.isfinite(values), values, 0.0)
    spike = draw(st.integers(0, len(x) - 1))
    values[spike] = math.nan
    return x, values, spike, draw(st.integers(2, len(x) - 1))


# --- the array reference ------------------------------------------------------------------------


@pytest.mark.parametrize("axis", AXES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_reference_invariants(axis, data):
    x, values, points, start, end = data.draw(cases(axis))
    check_invariants(downsample(x, values, points, start, end), x, values, points, start, end)


@pytest.mark.parametrize("axis", AXES)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_reference_keeps_a_single_nan_spike_visible(axis, data):
    x, values, spike, points = data.draw(spikes(axis))
    check_nan_spike_visible(downsample(x, values, points), x, spike)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_raw_rows_come_back_unchanged_when_points_cover_them(data):
    x, values = data.draw(series("time"))
    curve = downsample(x, values, data.draw(st.integers(max(2, len(x)), 10_000)))
    assert curve.raw
    assert [b.x_start for b in curve.buckets] == x.tolist()
    assert all(_same(b.first, v) and _same(b.last, v) for b, v in zip(curve.buckets, values.tolist()))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_merging_the_buckets_of_two_halves_gives_the_bucket_of_the_whole(data):
    """What a rollup relies on: a bucket assembled from blocks equals the bucket of their rows."""
    x, values = data.draw(series("step", min_rows=4))
    cut = data.draw(st.integers(2, len(x) - 2))

    def one_bucket(part: slice) -> Bucket:
        (bucket,) = downsample(x[part], values[part], points=1, start=float(x[0]), end=float(x[-1])).buckets
        return bucket

    merged, whole = one_bucket(slice(0, cut)).merge(one_bucket(slice(cut, None))), one_bucket(slice(None))
    assert _equal_but_total(merged, whole)
    assert merged.total == (None if whole.total is None else pytest.approx(whole.total, rel=1e-9, abs=1e-6))


def _equal_but_total(a: Bucket, b: Bucket) -> bool:
    """Field by field; the finite sum may differ in rounding with the order of addition."""
    return all(_same(getattr(a, f), getattr(b, f)) for f in Bucket.__dataclass_fields__ if f != "total")


# --- seed aggregation ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(runs=st.lists(st.lists(FINITE, min_size=1, max_size=8), min_size=1, max_size=6))
def test_seed_band_is_the_t_interval_over_the_runs_present_at_each_point(runs):
    curves_ = [
        [
            Bucket(index=i, x_start=i, x_end=i, count=1, first=v, last=v, min=v, max=v, total=v)
            for i, v in enumerate(run)
        ]
        for run in runs
    ]
    for point, index in zip(aggregate_seeds(curves_, "ci"), range(max(map(len, runs))), strict=True):
        here = np.array([run[index] for run in runs if index < len(run)])
        assert point.x == index and point.n == len(here)
        assert point.mean == pytest.approx(here.mean(), rel=1e-9, abs=1e-6)
        if len(here) < 2:
            assert point.lo is None and point.hi is None
        else:
            sem = stats.sem(here)
            low, high = stats.t.interval(0.95, len(here) - 1, loc=here.mean(), scale=sem) if sem else (point.mean,) * 2
            assert point.lo == pytest.approx(low, rel=1e-6, abs=1e-6)
            assert point.hi == pytest.approx(high, rel=1e-6, abs=1e-6)
    for point, index in zip(aggregate_seeds(curves_, "minmax"), range(max(map(len, runs))), strict=True):
        here = [run[index] for run in runs if index < len(run)]
        assert (point.lo, point.hi) == (min(here), max(here))


def test_a_nan_seed_makes_the_mean_nan_and_is_counted():
    def run(*values):
        return [
            Bucket(index=i, x_start=i, x_end=i, count=1, first=v, last=v, min=v, max=v, total=v)
            for i, v in enumerate(values)
        ]

    first, second = aggregate_seeds([run(1.0, math.nan), run(3.0, 2.0), run(5.0, math.inf)], "minmax")
    assert (first.n, first.mean, first.lo, first.hi, first.nan) == (3, 3.0, 1.0, 5.0, 0)
    assert math.isnan(second.mean) and (second.nan, second.pos_inf) == (1, 1)
    assert (second.lo, second.hi) == (2.0, math.inf)
    assert aggregate_seeds([run(1.0, math.nan), run(3.0, 2.0)], "ci")[1].lo is None


# --- the SQL path, on both databases ------------------------------------------------------------


@pytest.fixture
def run_id(use_database):
    spec = ComparisonSpec.model_validate(
        {
            "name": "curves",
            "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
            "training": {"steps": 1},
            "optimizers": [{"name": "sgd", "params": {"lr": 0.1}}],
            "seeds": [0],
        }
    ).model_dump(mode="json")
    with transaction() as session:
        return comparisons.create_comparison(session, spec, 1).runs[0].id


def _store(run_id: str, axis: str, x: np.ndarray, values: np.ndarray) -> None:
    rows = [
        {"run_id": run_id, "step": i, "epoch": None, "loss": v, "time_s": float(i), "step_time_ms": 1.0}
        for i, v in enumerate(values.tolist())
    ]
    for row, xi in zip(rows, x.tolist()):
        row[{"step": "step", "time": "time_s", "epoch": "epoch"}[axis]] = int(xi) if axis != "time" else xi
    with transaction() as session:
        session.execute(delete(Step).where(Step.run_id == run_id))
        session.execute(insert(Step), rows)


def _sql_curve(run_id, axis, points, start, end) -> Curve:
    with new_session() as session:
        return curves.run_curve(session, run_id, "loss", axis, points, start, end)


SQL_SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("axis", AXES)
@SQL_SETTINGS
@given(data=st.data())
def test_sql_invariants_and_agreement_with_the_reference(run_id, axis, data):
    x, values, points, start, end = data.draw(cases(axis))
    _store(run_id, axis, x, values)
    curve = _sql_curve(run_id, axis, points, start, end)
    check_invariants(curve, x, values, points, start, end)
    reference = downsample(x, values, points, start, end)
    assert (curve.raw, curve.start, curve.end, len(curve.buckets)) == (
        reference.raw,
        reference.start,
        reference.end,
        len(reference.buckets),
    )
    for ours, theirs in zip(curve.buckets, reference.buckets):
        # raw buckets are keyed by step in SQL, by position in the reference
        assert _equal_but_total(ours, replace(theirs, index=ours.index) if curve.raw else theirs)


def test_a_window_too_narrow_to_divide_is_one_bucket(run_id):
    """points / (end - start) overflows: one bucket, never NaN or infinite bucket numbers in SQL."""
    x, values = np.zeros(10), np.arange(10.0)
    _store(run_id, "epoch", x, values)
    for curve in (downsample(x, values, 2, start=-5e-324), _sql_curve(run_id, "epoch", 2, -5e-324, None)):
        assert [(b.count, b.first, b.last) for b in curve.buckets] == [(10, 0.0, 9.0)]


@pytest.mark.parametrize("axis", ["step", "time"])
@SQL_SETTINGS
@given(data=st.data())
def test_sql_keeps_a_single_nan_spike_visible(run_id, axis, data):
    x, values, spike, points = data.draw(spikes(axis))
    _store(run_id, axis, x, values)
    check_nan_spike_visible(_sql_curve(run_id, axis, points, None, None), x, spike)
