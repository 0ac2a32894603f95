"""Bulk step writes and loss rollups, on SQLite and PostgreSQL: what is written reads back exactly,
NaN stays NaN, retries never duplicate, and the rollups always describe the rows that exist."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sqlalchemy import delete, select, text

from db import bulk, comparisons, leases, rollups
from db.bulk import ingest_steps, x_json
from db.models import FloatList, Step, StepRollup
from db.session import transaction
from engine.recorder import StepBatch
from engine.spec import ComparisonSpec


@pytest.fixture
def run_id(use_database):
    spec = ComparisonSpec.model_validate(
        {
            "name": "bulk",
            "problem": {"function": {"name": "rosenbrock"}},
            "training": {"steps": 100_000},
            "optimizers": [{"name": "sgd"}],
        }
    )
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec.model_dump(mode="json"), 100_000)
    yield comparison.runs[0].id
    with transaction() as session:  # an unfinished comparison counts against the team's limit in later tests
        leases.cancel(session, comparison_id=comparison.id)


def _columns(steps: range, rng: np.random.Generator, **overrides) -> dict:
    n = len(steps)
    loss = rng.lognormal(size=n)
    loss[rng.integers(0, n, size=max(1, n // 50))] = np.nan
    loss[rng.integers(0, n)] = np.inf
    columns = {
        "step": list(steps),
        "epoch": [s // 100 for s in steps],
        "loss": loss.tolist(),
        "time_s": (np.arange(steps.start, steps.stop) * 1e-3).tolist(),
        "step_time_ms": [1.0] * n,
        "lr": [0.1] * n,
        "x": None,
        "grad_norm": None,
        "update_norm": None,
    }
    return columns | overrides


def _stored(run_id: str) -> list[Step]:
    with transaction() as session:
        return list(session.scalars(select(Step).where(Step.run_id == run_id).order_by(Step.step)))


def _assert_rollups_describe_the_rows(run_id: str) -> None:
    rows = _stored(run_id)
    unknown = [r.epoch is None for r in rows]
    epoch = None if all(unknown) else np.ma.array([r.epoch or 0 for r in rows], mask=unknown)
    blocks = rollups.aggregate(
        np.array([r.step for r in rows]), np.array([r.loss for r in rows]), np.array([r.time_s for r in rows]), epoch
    )
    expected = sorted(zip(*([None] * len(blocks["block"]) if v is None else v.tolist() for v in blocks.values())))
    with transaction() as session:
        stored = session.execute(
            select(*(getattr(StepRollup, c) for c in rollups.KINDS))
            .where(StepRollup.run_id == run_id)
            .order_by(StepRollup.level, StepRollup.block)
        ).all()
    assert len(stored) == len(expected)
    for got, want in zip(stored, expected):
        assert tuple(got) == pytest.approx(want, nan_ok=True), (got, want)


def test_rows_read_back_exactly_with_nan_and_infinity(run_id):
    rng = np.random.default_rng(0)
    columns = _columns(range(0, 10_000), rng)  # on SQLite, more rows than one INSERT takes
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
        ingest_steps(
            session,
            run_id,
            {
                "step": list(range(n)),
                "loss": loss,
                "time_s": [float(i) for i in range(n)],
                "step_time_ms": [1.0] * n,
                "lr": [0.1] * n,
            },
        )
    with transaction() as session:
        first, second = session.scalars(
            select(StepRollup).where(StepRollup.run_id == run_id, StepRollup.level == 6).order_by(StepRollup.block)
        ).all()
    assert (first.count, first.nan_count, first.pos_inf_count, first.neg_inf_count) == (64, 1, 0, 1)
    assert (first.min, first.max, first.finite_sum, first.first, first.last) == (-math.inf, 3.0, 124.0, 3.0, 2.0)
    assert (second.first_step, second.last_step, second.first, second.last, second.min, second.max) == (
        64,
        65,
        5.0,
        4.0,
        4.0,
        5.0,
    )


def test_function_problem_coordinates_and_extras(run_id):
    n = 10
    columns = {
        "step": list(range(n)),
        "loss": [1.0] * n,
        "time_s": [0.1] * n,
        "step_time_ms": [1.0] * n,
        "lr": [0.1] * n,
        "x": [[float(i), -float(i)] for i in range(n)],
        "grad_norm": [2.0] * n,
        "update_norm": [float("nan")] * n,
    }
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


def test_a_flush_that_ends_mid_block_then_one_that_completes_it(run_id):
    loss = np.arange(1.0, 201.0)
    loss[[10, 70]] = np.nan
    loss[100] = -np.inf
    time_s = np.arange(200) * 0.5
    for cut in (slice(0, 100), slice(100, 200)):  # block 1 of level 6 (steps 64..127) is split between them
        with transaction() as session:
            ingest_steps(
                session,
                run_id,
                {
                    "step": np.arange(200)[cut],
                    "loss": loss[cut],
                    "time_s": time_s[cut],
                    "step_time_ms": np.ones(100),
                    "lr": np.full(100, 0.1),
                },
            )
    with transaction() as session:
        block = session.scalars(
            select(StepRollup).where(StepRollup.run_id == run_id, StepRollup.level == 6, StepRollup.block == 1)
        ).one()
    part = loss[64:128]
    assert (block.count, block.nan_count, block.neg_inf_count, block.pos_inf_count) == (64, 1, 1, 0)
    assert (block.min, block.max) == (-np.inf, 128.0)
    assert block.finite_sum == part[np.isfinite(part)].sum()
    assert (block.first, block.last, block.first_step, block.last_step) == (65.0, 128.0, 64, 127)
    assert (block.first_time_s, block.last_time_s) == (32.0, 63.5)
    _assert_rollups_describe_the_rows(run_id)


def test_a_block_of_nan_only_has_no_min_or_max(run_id):
    loss = np.r_[np.full(64, np.nan), np.ones(10)]
    with transaction() as session:
        ingest_steps(
            session,
            run_id,
            {
                "step": np.arange(74),
                "loss": loss,
                "time_s": np.arange(74.0),
                "step_time_ms": np.ones(74),
                "lr": np.ones(74),
                "epoch": np.arange(74) // 10,
            },
        )
    with transaction() as session:
        first, second = session.scalars(
            select(StepRollup).where(StepRollup.run_id == run_id, StepRollup.level == 6).order_by(StepRollup.block)
        ).all()
    assert (first.nan_count, first.min, first.max, first.finite_sum) == (64, None, None, 0.0)
    assert math.isnan(first.first) and math.isnan(first.last)
    assert (first.first_epoch, first.last_epoch, second.first_epoch, second.last_epoch) == (0, 6, 6, 7)
    assert (second.min, second.max) == (1.0, 1.0)
    _assert_rollups_describe_the_rows(run_id)


def test_a_retried_flush_that_goes_further_adds_only_the_new_rows(run_id):
    rng = np.random.default_rng(3)
    with transaction() as session:
        ingest_steps(session, run_id, _columns(range(0, 1000), rng))
    kept = [r.loss for r in _stored(run_id)]
    with transaction() as session:  # its first 300 rows are stored already, with other losses
        ingest_steps(session, run_id, _columns(range(700, 1500), rng))
    rows = _stored(run_id)
    assert [r.step for r in rows] == list(range(1500))
    np.testing.assert_array_equal([r.loss for r in rows[:1000]], kept)
    _assert_rollups_describe_the_rows(run_id)


def test_a_flush_before_rows_stored_out_of_order_rebuilds_what_it_touches(run_id):
    rng = np.random.default_rng(4)
    for steps in (range(0, 1000), range(2000, 3000), range(1000, 2000)):
        with transaction() as session:
            ingest_steps(session, run_id, _columns(steps, rng))
    assert [r.step for r in _stored(run_id)] == list(range(3000))
    _assert_rollups_describe_the_rows(run_id)


def test_a_rebuild_over_flushes_with_and_without_epochs_keeps_both(run_id):
    rng = np.random.default_rng(7)
    for steps, epoch in ((range(0, 100), None), (range(100, 200), np.arange(100, 200) // 30), (range(150, 200), None)):
        with transaction() as session:  # the last one is a retry: its rows are there, with epochs
            ingest_steps(session, run_id, _columns(steps, rng, epoch=epoch))
    rows = _stored(run_id)
    assert [r.epoch for r in rows] == [None] * 100 + list(np.arange(100, 200) // 30)
    with transaction() as session:
        block = session.scalars(select(StepRollup).where(StepRollup.run_id == run_id, StepRollup.level == 8)).one()
    assert (block.first_epoch, block.last_epoch) == (None, 6)
    _assert_rollups_describe_the_rows(run_id)


def test_arrays_and_lists_write_the_same_rows(run_id):
    rng = np.random.default_rng(5)
    arrays = {
        "step": np.arange(0, 500),
        "epoch": np.arange(500) // 7,
        "loss": rng.lognormal(size=500),
        "time_s": np.arange(500) * 1e-3,
        "step_time_ms": rng.random(500),
        "lr": np.full(500, 0.1),
        "x": rng.normal(size=(500, 3)),
        "grad_norm": rng.random(500),
        "update_norm": None,
    }
    lists = {k: None if v is None else v.tolist() for k, v in arrays.items()} | {"step": list(range(500, 1000))}
    with transaction() as session:
        ingest_steps(session, run_id, arrays)
        ingest_steps(session, run_id, lists)
    rows = _stored(run_id)
    columns = [c for c in arrays if c != "step"]
    values = [[getattr(r, c) for c in columns] for r in rows]
    assert values[:500] == values[500:]
    assert rows[0].x == arrays["x"][0].tolist() and rows[0].update_norm is None and rows[0].epoch == 0
    _assert_rollups_describe_the_rows(run_id)


def test_coordinates_are_stored_as_the_text_float_list_writes(run_id):
    tricky = [0.1, -0.0, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, 123456789.125, -2.5, 1 / 3]
    points = np.array([tricky, [math.nan, math.inf, -math.inf, *tricky[3:]], tricky[::-1]])
    with transaction() as session:
        ingest_steps(
            session,
            run_id,
            {
                "step": np.arange(3),
                "loss": np.ones(3),
                "time_s": np.ones(3),
                "step_time_ms": np.ones(3),
                "lr": np.ones(3),
                "x": points,
            },
        )
    with transaction() as session:
        stored = (
            session.execute(text("SELECT x FROM steps WHERE run_id = :run_id ORDER BY step"), {"run_id": run_id})
            .scalars()
            .all()
        )
    encode = FloatList().process_bind_param
    assert stored == [encode(p, None) for p in points.tolist()]
    read = [r.x for r in _stored(run_id)]
    assert read[0] == tricky and read[2] == tricky[::-1]
    assert math.isnan(read[1][0]) and read[1][1:3] == [math.inf, -math.inf]


def test_x_json_matches_float_list_row_by_row():
    rng = np.random.default_rng(6)
    points = rng.normal(scale=10.0 ** rng.integers(-30, 30, size=(200, 1)), size=(200, 4))
    points[rng.integers(0, 200, 30), rng.integers(0, 4, 30)] = rng.choice([np.nan, np.inf, -np.inf], 30)
    encode = FloatList().process_bind_param
    for dim in (4, 1):
        assert x_json(points[:, :dim]).strings() == [encode(p, None) for p in points[:, :dim].tolist()]
    assert x_json(points[:1]).strings() == [encode(points[0].tolist(), None)]
    assert x_json(np.zeros((2, 0))).strings() == ["[]", "[]"]


@pytest.mark.parametrize(
    "column, values, problem",
    [
        ("loss", [1.0, None, 2.0], "mixes values and None"),
        ("epoch", [1, None, 2], "mixes values and None"),
        ("lr", [0.1, 0.1], "has shape (2,)"),
        ("x", [1.0, 2.0, 3.0], "has shape (3,)"),
    ],
)
def test_malformed_columns_are_refused_naming_the_column(run_id, column, values, problem):
    columns = {"step": [0, 1, 2], "loss": [1.0] * 3, "time_s": [0.0] * 3, "step_time_ms": [1.0] * 3, "lr": [0.1] * 3}
    with pytest.raises(ValueError, match=f"'{column}'.*{re.escape(problem)}"), transaction() as session:
        ingest_steps(session, run_id, columns | {column: values})
    assert _stored(run_id) == []


def test_a_recorder_batch_reads_back_as_its_rows(run_id):
    rng = np.random.default_rng(8)
    steps = np.arange(300, 1300)
    batch = StepBatch(
        step=steps,
        epoch=None,
        loss=rng.lognormal(size=1000),
        time_s=steps * 0.01,
        step_time_ms=rng.random(1000),
        lr=np.full(1000, 0.1),
        x=rng.normal(size=(1000, 2)),
        extras={"grad_norm": rng.random(1000)},
    )
    with transaction() as session:
        ingest_steps(session, run_id, batch.columns())
    stored = [{c: getattr(r, c) for c in bulk.COLUMNS} for r in _stored(run_id)]
    assert stored == batch.rows()
    _assert_rollups_describe_the_rows(run_id)
