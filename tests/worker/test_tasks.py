"""The Celery task itself, executed in-process with ``.apply`` on both databases: a run trains to
completion, is idempotent on redelivery, stops at divergence, and respects another worker's lease."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from db import comparisons, history, leases
from db.models import Comparison, Run, Step, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec
from worker.tasks import train_run


def _create(spec: dict) -> list[str]:
    spec = ComparisonSpec.model_validate(spec).model_dump(mode="json")
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, spec["training"]["steps"])
        return [run.id for run in comparison.runs]


def _quadratic(steps: int = 60, **overrides) -> dict:
    spec = {
        "name": "worker quadratic",
        "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "training": {"steps": steps},
        "optimizers": [{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.1}}],
        "seeds": [0, 1],
        "device": "cpu",
        "dtype": "float64",
    }
    return spec | overrides


def _execute(run_id: str) -> str:
    result = train_run.apply(args=[run_id])
    assert result.successful(), result.traceback
    return result.get()


def _run(run_id: str) -> Run:
    with transaction() as session:
        return session.get(Run, run_id)


def _comparison_of(run_id: str) -> Comparison:
    with transaction() as session:
        return session.get(Comparison, session.get(Run, run_id).comparison_id)


def _step_rows(run_id: str) -> list[tuple]:
    """Every stored column of every step row, in step order, as the database has it."""
    with transaction() as session:
        columns = [c.name for c in Step.__table__.columns]
        rows = session.execute(
            text(f"SELECT {', '.join(columns)} FROM steps WHERE run_id = :r ORDER BY step"), {"r": run_id}
        ).all()
        return [tuple(row) for row in rows]


def _run_row(run_id: str) -> tuple:
    with transaction() as session:
        columns = [c.name for c in Run.__table__.columns]
        return tuple(session.execute(text(f"SELECT {', '.join(columns)} FROM runs WHERE id = :r"), {"r": run_id}).one())


def _steps(run_id: str) -> list:
    with transaction() as session:
        return list(history.iter_steps(session, run_id))


def test_train_run_succeeds_stores_every_step_and_is_idempotent(use_database):
    run_ids = _create(_quadratic(steps=60))
    run_id = run_ids[0]  # adam, seed 0

    assert _execute(run_id) == "succeeded"

    run = _run(run_id)
    assert run.status == "succeeded" and run.attempt == 1 and run.error is None
    assert run.steps_done == run.steps_total == 60
    assert run.final_loss is not None and math.isfinite(run.final_loss)
    assert run.best_loss is not None and run.best_loss <= run.final_loss
    assert run.wall_time_s is not None and run.wall_time_s > 0
    assert run.device == "cpu"
    assert run.diverged_step is None
    assert run.started_at is not None and run.finished_at is not None and run.finished_at >= run.started_at

    steps = _steps(run_id)
    assert [s.step for s in steps] == list(range(60))
    losses = [s.loss for s in steps]
    assert all(math.isfinite(v) for v in losses)
    assert steps[0].x == [8.0] and losses[0] == 36.0  # the point and loss before the first update
    assert run.best_loss == min(losses + [run.final_loss])
    assert losses[-1] < losses[0]
    assert all(s.epoch is None and s.lr == 0.1 and s.step_time_ms > 0 for s in steps)
    times = [s.time_s for s in steps]
    assert times == sorted(times)
    assert run.wall_time_s == pytest.approx(times[-1])

    # a redelivery of a finished run does nothing at all
    before_steps, before_run = _step_rows(run_id), _run_row(run_id)
    assert _execute(run_id) == "skipped"
    assert _step_rows(run_id) == before_steps
    assert _run_row(run_id) == before_run

    # the comparison is running until the other runs are done
    assert _comparison_of(run_id).status == "running"
    assert [_execute(r) for r in run_ids[1:]] == ["succeeded"] * 3
    comparison = _comparison_of(run_id)
    assert comparison.status == "succeeded" and comparison.finished_at is not None


def test_paired_runs_start_from_the_same_point(use_database):
    adam0, _, sgd0, _ = _create(_quadratic(steps=10))
    assert _execute(adam0) == "succeeded" and _execute(sgd0) == "succeeded"
    first_adam, first_sgd = _steps(adam0)[0], _steps(sgd0)[0]
    assert (first_adam.loss, first_adam.x) == (first_sgd.loss, first_sgd.x)


def test_a_diverging_run_ends_diverged_with_the_non_finite_loss_kept(use_database):
    spec = _quadratic(steps=400, optimizers=[{"name": "sgd", "params": {"lr": 1.5}}], seeds=[0], dtype="float32")
    (run_id,) = _create(spec)

    assert _execute(run_id) == "diverged"

    run = _run(run_id)
    assert run.status == "diverged"
    assert run.diverged_step is not None and 0 < run.diverged_step < 399
    assert run.steps_done == run.diverged_step + 1
    assert run.final_loss is None
    assert run.best_loss is not None and math.isfinite(run.best_loss)
    steps = _steps(run_id)
    assert [s.step for s in steps] == list(range(run.diverged_step + 1))
    assert not math.isfinite(steps[-1].loss)
    assert all(math.isfinite(s.loss) for s in steps[:-1])
    assert run.best_loss == min(s.loss for s in steps[:-1])
    # a diverged run is a result: the comparison succeeded
    comparison = _comparison_of(run_id)
    assert comparison.status == "succeeded" and comparison.finished_at is not None


def test_a_run_held_by_a_live_worker_is_skipped(use_database):
    run_id = _create(_quadratic(steps=20))[0]
    started = utcnow() - timedelta(seconds=5)
    with transaction() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", attempt=1, heartbeat_at=utcnow(), started_at=started)
        )
    before = _run_row(run_id)

    assert _execute(run_id) == "skipped"

    assert _run_row(run_id) == before
    assert _step_rows(run_id) == []
    run = _run(run_id)
    assert (run.status, run.attempt, run.steps_done) == ("running", 1, 0)


def test_a_run_whose_holder_died_is_taken_over(use_database):
    run_id = _create(_quadratic(steps=20))[0]
    with transaction() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", attempt=1, heartbeat_at=utcnow() - timedelta(hours=1))
        )
        session.execute(
            text(
                "INSERT INTO steps (run_id, step, epoch, loss, time_s, step_time_ms, lr, x) "
                "VALUES (:r, 0, NULL, 99.0, 0.1, 0.1, 0.1, '[123.0]')"
            ),
            {"r": run_id},
        )

    assert _execute(run_id) == "succeeded"

    run = _run(run_id)
    assert (run.status, run.attempt, run.steps_done) == ("succeeded", 2, 20)
    steps = _steps(run_id)
    assert [s.step for s in steps] == list(range(20))
    assert steps[0].x == [8.0] and steps[0].loss == 36.0  # the dead attempt's row is gone


def test_many_small_flushes_store_every_step_without_gaps(use_database, monkeypatch):
    from optibench.settings import get_settings

    flushes: list[list[int]] = []
    real_append = leases.append_steps

    def spy(session, run_id, attempt, steps, *args, **kwargs):
        if steps:
            flushes.append(list(steps["step"]))
        return real_append(session, run_id, attempt, steps, *args, **kwargs)

    monkeypatch.setattr(leases, "append_steps", spy)
    monkeypatch.setenv("OPTIBENCH_FLUSH_EVERY_STEPS", "16")
    get_settings.cache_clear()
    try:
        assert get_settings().flush_every_steps == 16
        run_id = _create(_quadratic(steps=103))[2]  # sgd, seed 0: 6 full flushes and a partial one
        assert _execute(run_id) == "succeeded"
    finally:
        monkeypatch.delenv("OPTIBENCH_FLUSH_EVERY_STEPS")
        get_settings.cache_clear()

    # several flushes, each of at most 16 consecutive steps, together covering every step once
    assert len(flushes) >= 7
    assert all(0 < len(f) <= 16 and f == list(range(f[0], f[0] + len(f))) for f in flushes)
    assert [step for f in flushes for step in f] == list(range(103))
    run = _run(run_id)
    assert run.status == "succeeded" and run.steps_done == run.steps_total == 103
    with transaction() as session:
        count, low, high = session.execute(
            text("SELECT count(*), min(step), max(step) FROM steps WHERE run_id = :r"), {"r": run_id}
        ).one()
        distinct = session.scalar(
            select(text("count(DISTINCT step)")).select_from(Step.__table__).where(Step.run_id == run_id)
        )
    assert (count, low, high, distinct) == (103, 0, 102, 103)
    steps = _steps(run_id)
    assert [s.step for s in steps] == list(range(103))
    # the trajectory is continuous across flush boundaries: x_{k+1} = x_k - lr * 2 (x_k - 2)
    for before, after in zip(steps, steps[1:]):
        assert after.x[0] == pytest.approx(before.x[0] - 0.1 * 2 * (before.x[0] - 2.0), rel=1e-12, abs=1e-12)
    times = [s.time_s for s in steps]
    assert times == sorted(times)


def test_a_training_error_fails_the_run_and_the_comparison(use_database, monkeypatch):
    import worker.tasks

    def broken_train(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(worker.tasks, "train", broken_train)
    run_id = _create(_quadratic(steps=20, seeds=[0], optimizers=[{"name": "adam", "params": {"lr": 0.1}}]))[0]

    assert _execute(run_id) == "failed"

    run = _run(run_id)
    assert run.status == "failed" and run.error == "RuntimeError: boom" and run.finished_at is not None
    assert _step_rows(run_id) == []
    assert _comparison_of(run_id).status == "failed"
    assert _execute(run_id) == "skipped"


def test_a_worker_that_lost_its_lease_writes_nothing_more(use_database, monkeypatch):
    import numpy as np

    import worker.tasks
    from engine.recorder import StepBatch
    from engine.training import RunOutcome

    def batch(start: int, n: int) -> StepBatch:
        steps = np.arange(start, start + n, dtype=np.int64)
        return StepBatch(
            step=steps,
            epoch=None,
            loss=np.full(n, 1.0),
            time_s=(steps + 1) * 0.01,
            step_time_ms=np.full(n, 10.0),
            lr=np.full(n, 0.1),
            x=np.zeros((n, 1)),
        )

    def train_after_a_takeover(spec, entry_index, seed, sink, **kwargs):
        with transaction() as session:  # meanwhile another delivery takes the run over
            session.execute(update(Run).where(Run.id == sink.run_id).values(attempt=Run.attempt + 1))
        sink(batch(0, 5))
        return RunOutcome("succeeded", 10, 1.0, 1.0, 0.1)

    monkeypatch.setattr(worker.tasks, "train", train_after_a_takeover)
    run_id = _create(_quadratic(steps=10, seeds=[0], optimizers=[{"name": "adam", "params": {"lr": 0.1}}]))[0]

    assert _execute(run_id) == "lease lost"

    run = _run(run_id)
    assert (run.status, run.attempt, run.final_loss, run.finished_at) == ("running", 2, None, None)
    assert _step_rows(run_id) == []
