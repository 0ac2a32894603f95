"""Bulk step writes and loss rollups, on SQLite and PostgreSQL: what is written reads back exactly,
NaN stays NaN, retries never duplicate, and the rollups always describe the rows that exist."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import delete, select

from db import queries, rollups
from db.bulk import ingest_steps
from db.models import Step, StepRollup
from db.session import transaction
from engine.spec import ComparisonSpec


@pytest.fixture
def run_id(use_database):
    spec = ComparisonSpec.model_validate({"name": "bulk", "problem": {"function": {"name": "rosenbrock"}},
                                          "training": {"steps": 100_000}, "optimizers": [{"name": "sgd"}]})
    with transaction() as session:
        return queries.create_comparison(session, spec.model_dump(mode="json"), 100_000).runs[0].id


def _columns(steps: range, rng: np.random.Generator, **overrides) -> dict:
    n = len(steps)
    loss = rng.lognormal(size=n)
    loss[rng.integers(0, n, size=max(1, n // 50))] = np.nan
    loss[rng.integers(0, n)] = np.inf
    columns = {"step": list(steps), "epoch": [s // 100 for s in steps], "loss": loss.tolist(),
               "time_s": (np.arange(steps.start, steps.stop) * 1e-3).tolist(), "step_time_ms": [1.0] * n,
               "lr": [0.1] * n, "x": None, "grad_norm": None, "update_norm": None}
    return columns | overrides


def _stored(run_id: str) -> list[Step]:
    with transaction() as session:
        return list(session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.step)))


def _assert_rollups_describe_the_rows(run_id: str) -> None:
    rows = _stored(run_id)
    expected = rollups.aggregate(run_id, np.array([r.step for r in rows]), np.array([r.loss for r in rows]),
                                 np.array([r.time_s for r in rows]), [r.epoch for r in rows])
    with transaction() as session:
        stored = session.scalars(select(StepRollup).where(StepRollup.run_id == run_id)
                                 .order_by(StepRollup.level, StepRollup.block)).all()
        stored = [{c: getattr(r, c) for c in expected[0]} for r in stored]
    expected.sort(key=lambda r: (r["level"], r["block"]))
    assert len(stored) == len(expected)
    for got, want in zip(stored, expected):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, nan_ok=True), (key, got, want)


def test_rows_read_back_exactly_with_nan_and_infinity(run_id):
    rng = np.random.default_rng(0)
    columns = _columns(range(0, 3000), rng)
    with transaction() as session:
        ingest_steps(session, run_id, columns)
    rows = _stored(run_id)
    assert [r.step for r in rows] == columns["step"]
    for row, loss, epoch in zip(rows, columns["loss"], columns["epoch"]):
        assert row.epoch == epoch
        assert (math.isnan(row.loss) and math.isnan(loss)) or row.loss == loss
        assert row.grad_norm is None and row.x is None
    _assert_rollups_describe_the_rows(run_id)


def test_block_aggregates_by_hand(run_id):
    loss = [3.0, float("nan"), 1.0, float("-inf")] + [2.0] * 60 + [5.0, 4.0]
    n = len(loss)
    with transaction() as session:
        ingest_steps(session, run_id, {"step": list(range(n)), "loss": loss, "time_s": [float(i) for i in range(n)],
                                       "step_time_ms": [1.0] * n, "lr": [0.1] * n})
    with transaction() as session:
        first, second = session.scalars(select(StepRollup).where(StepRollup.run_id == run_id, StepRollup.level == 6)
                                        .order_by(StepRollup.block)).all()
    assert (first.count, first.nan_count, first.pos_inf_count, first.neg_inf_count) == (64, 1, 0, 1)
    assert (first.min, first.max, first.finite_sum, first.first, first.last) == (-math.inf, 3.0, 124.0, 3.0, 2.0)
    assert (second.first_step, second.last_step, second.first, second.last, second.min, second.max) == (
        64, 65, 5.0, 4.0, 4.0, 5.0)


def test_function_problem_coordinates_and_extras(run_id):
    n = 10
    columns = {"step": list(range(n)), "loss": [1.0] * n, "time_s": [0.1] * n, "step_time_ms": [1.0] * n,
               "lr": [0.1] * n, "x": [[float(i), -float(i)] for i in range(n)], "grad_norm": [2.0] * n,
               "update_norm": [float("nan")] * n}
    with transaction() as session:
        ingest_steps(session, run_id, columns)
    rows = _stored(run_id)
    assert [r.x for r in rows] == columns["x"]
    assert all(r.grad_norm == 2.0 and math.isnan(r.update_norm) for r in rows)


def test_flushes_merge_and_a_retried_flush_neither_fails_nor_duplicates(run_id):
    rng = np.random.default_rng(1)
    for start in range(0, 5000, 700):
        with transaction() as session:
            ingest_steps(session, run_id, _columns(range(start, min(start + 700, 5000)), rng))
    _assert_rollups_describe_the_rows(run_id)
    before = [(r.step, r.loss) for r in _stored(run_id)]
    retried = _columns(range(4200, 5000), rng)  # its commit was lost to the client; same steps again
    with transaction() as session:
        ingest_steps(session, run_id, retried)
    after = [(r.step, r.loss) for r in _stored(run_id)]
    assert len(after) == 5000
    assert [s for s, _ in after] == [s for s, _ in before]
    _assert_rollups_describe_the_rows(run_id)


def test_rebuild_after_the_tail_is_truncated(run_id):
    rng = np.random.default_rng(2)
    with transaction() as session:
        ingest_steps(session, run_id, _columns(range(0, 40_000), rng))
    with transaction() as session:  # what a resumed run does: drop rows after its checkpoint
        session.execute(delete(Step).where(Step.run_id == run_id, Step.step >= 33_001))
        rollups.rebuild(session, run_id, 33_001)
    _assert_rollups_describe_the_rows(run_id)
    with transaction() as session:
        ingest_steps(session, run_id, _columns(range(33_001, 36_000), rng))
    _assert_rollups_describe_the_rows(run_id)
