"""Long loss curves are read from the rollups (db.rollups), not the rows. The buckets they give must
keep every promise of docs/curves.md (counts add up, first and last rows exact, min and max attained,
NaN and ±inf counted), on every axis and zoom, with bucket edges on block edges."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.downsample import Grid
from db import comparisons, curves, rollups
from db.bulk import ingest_steps
from db.session import transaction
from engine.spec import ComparisonSpec

STEPS = 30_000


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


def _ingest(database_url) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(7)
    loss = rng.lognormal(size=STEPS)
    loss[[11, 4_321, 29_999]] = np.nan
    loss[17_000], loss[23_456] = np.inf, -np.inf
    axes = {
        "step": np.arange(STEPS, dtype=float),
        "time": np.cumsum(rng.random(STEPS) * 1e-3),
        "epoch": (np.arange(STEPS) // 700).astype(float),
    }
    spec = ComparisonSpec.model_validate(
        {
            "name": "rollups",
            "problem": {"function": {"name": "rosenbrock"}},
            "training": {"steps": STEPS},
            "optimizers": [{"name": "sgd"}],
        }
    )
    with transaction() as session:
        run_id = comparisons.create_comparison(session, spec.model_dump(mode="json"), STEPS).runs[0].id
    for start in range(0, STEPS, 3_000):
        cut = slice(start, start + 3_000)
        with transaction() as session:
            ingest_steps(
                session,
                run_id,
                {
                    "step": list(range(start, start + 3_000)),
                    "loss": loss[cut].tolist(),
                    "time_s": axes["time"][cut].tolist(),
                    "epoch": axes["epoch"][cut].astype(int).tolist(),
                    "step_time_ms": [1.0] * 3_000,
                    "lr": [0.1] * 3_000,
                },
            )
    return run_id, axes, loss


@pytest.mark.parametrize("axis", ["step", "time", "epoch"])
def test_rollup_buckets_keep_every_promise(use_database, axis):
    run_id, axes, loss = _ingest(use_database)
    x = axes[axis]
    windows = [(None, None, 40), (None, None, 7), (float(x[1_234]), float(x[26_789]), 30)]
    for start, end, points in windows:
        with transaction() as session:
            lo, hi = (x[0] if start is None else start), (x[-1] if end is None else end)
            plan = curves._rollup_plan(session, run_id, axis, Grid(lo, hi, points))
            curve = curves.run_curve(session, run_id, "loss", axis, points, start, end)
        assert plan is not None and not curve.raw, "this size must be served from the rollups"
        inside = (x >= lo) & (x <= hi)
        xs, values = x[inside], loss[inside]
        assert curve.rows == len(values)
        assert _same(curve.buckets[0].first, values[0]) and _same(curve.buckets[-1].last, values[-1])
        block = 1 << plan.level
        nominal = (hi - lo) / points
        row = 0
        for bucket in curve.buckets:
            rows = values[row : row + bucket.count]
            assert (bucket.x_start, bucket.x_end) == (xs[row], xs[row + bucket.count - 1])
            not_nan = rows[~np.isnan(rows)]
            assert (bucket.min, bucket.max) == (not_nan.min(), not_nan.max())
            assert bucket.nan == np.isnan(rows).sum()
            assert (bucket.pos_inf, bucket.neg_inf) == ((rows == np.inf).sum(), (rows == -np.inf).sum())
            assert _same(bucket.first, rows[0]) and _same(bucket.last, rows[-1])
            finite = rows[np.isfinite(rows)]
            assert bucket.mean == pytest.approx(finite.mean(), rel=1e-12)
            if axis == "step":  # edges move by less than one block from the nominal ones
                assert bucket.x_end - bucket.x_start + 1 <= nominal + 2 * block
            row += bucket.count
        assert row == len(values)


def test_a_resumed_run_truncated_and_rewritten_reads_back_exactly(use_database):
    run_id, axes, loss = _ingest(use_database)
    from sqlalchemy import delete

    from db.models import Step

    with transaction() as session:
        session.execute(delete(Step).where(Step.run_id == run_id, Step.step >= 20_001))
        rollups.rebuild(session, run_id, 20_001)
    with transaction() as session:
        curve = curves.run_curve(session, run_id, "loss", "step", 20)
    assert curve.rows == 20_001 and _same(curve.buckets[-1].last, loss[20_000])
