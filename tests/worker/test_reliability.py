"""Cancellation, the watchdog, the outbox and resume-from-checkpoint, through the real task and
queries on both databases (process-level faults are in tests/faults)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from db import comparisons, leases
from db.models import Checkpoint, Run, Step, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec
from optibench.settings import get_settings
from tests.worker.test_tasks import _create, _quadratic, _run, _step_rows
from worker.tasks import train_run


@pytest.fixture
def settings(use_database, monkeypatch):
    def apply(**values):
        for key, value in values.items():
            monkeypatch.setenv(f"OPTIBENCH_{key.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    return apply


def _mlp(epochs: int) -> dict:
    return {
        "name": "resumable mlp",
        "problem": {
            "model": {"name": "mlp", "params": {"hidden": [8]}},
            "dataset": {"name": "wine"},
            "loss": "cross_entropy",
        },
        "training": {"epochs": epochs, "batch_size": 16},
        "optimizers": [{"name": "adam", "params": {"lr": 0.01, "amsgrad": True}}],
        "seeds": [0],
        "device": "cpu",
    }


def _create_with_totals(spec: dict) -> list[str]:
    from engine.problem import steps_total

    parsed = ComparisonSpec.model_validate(spec)
    with transaction() as session:
        comparison = comparisons.create_comparison(
            session, parsed.model_dump(mode="json"), [steps_total(parsed, i) for i in range(len(parsed.optimizers))]
        )
        return [run.id for run in comparison.runs]


def test_cancelling_a_running_run_stops_it_at_the_next_flush_and_keeps_its_rows(settings):
    settings(flush_every_steps=50, flush_interval_s=0.05)
    run_id = _create(_quadratic(steps=2_000_000))[0]
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("status", train_run.apply(args=[run_id]).get()))
    worker.start()
    deadline = time.monotonic() + 60
    while _run(run_id).steps_done < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    with transaction() as session:
        assert leases.cancel(session, run_id=run_id) == [run_id]
    cancelled_at = time.monotonic()
    worker.join(60)
    print(f"VERIFIED: trainer stopped {time.monotonic() - cancelled_at:.2f}s after the cancel")
    assert not worker.is_alive() and result["status"] == "cancelled"
    run = _run(run_id)
    assert run.status == "cancelled" and run.finished_at is not None
    rows = _step_rows(run_id)
    assert 100 <= len(rows) < 2_000_000
    assert [r[1] for r in rows] == list(range(len(rows)))  # no gaps in what was kept


def test_cancelling_a_comparison_ends_queued_runs_at_once(settings):
    run_ids = _create(_quadratic())
    with transaction() as session:
        comparison_id = session.get(Run, run_ids[0]).comparison_id
        assert sorted(leases.cancel(session, comparison_id=comparison_id)) == sorted(run_ids)
    assert all(_run(r).status == "cancelled" for r in run_ids)
    assert train_run.apply(args=[run_ids[0]]).get() == "skipped"  # a late delivery trains nothing
    with transaction() as session:
        assert leases.cancel(session, comparison_id=comparison_id) == []  # idempotent


def test_watchdog_requeues_a_lost_run_then_fails_it_when_attempts_run_out(settings):
    settings(max_attempts=2)
    run_id = _create(_quadratic())[0]
    stale = utcnow() - timedelta(hours=1)
    with transaction() as session:
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", attempt=1, heartbeat_at=stale, enqueued_at=stale)
        )
        requeued, failed = leases.reap_stale_runs(session, 60, 2)
        assert run_id in requeued and run_id not in failed
    run = _run(run_id)
    assert run.status == "queued" and run.enqueued_at is None  # back in the outbox
    with transaction() as session:
        assert run_id in leases.unpublished_runs(session)
        session.execute(update(Run).where(Run.id == run_id).values(status="running", attempt=2, heartbeat_at=stale))
        requeued, failed = leases.reap_stale_runs(session, 60, 2)
        assert run_id in failed and run_id not in requeued
    run = _run(run_id)
    assert run.status == "failed" and "2 times" in run.error


def test_watchdog_leaves_a_live_run_alone(settings):
    run_id = _create(_quadratic())[0]
    with transaction() as session:
        session.execute(update(Run).where(Run.id == run_id).values(status="running", attempt=1, heartbeat_at=utcnow()))
        requeued, failed = leases.reap_stale_runs(session, 60, 3)
        assert run_id not in requeued + failed
    assert _run(run_id).status == "running"


def test_a_redelivered_run_resumes_from_its_checkpoint_with_identical_losses(settings):
    """Kill a run mid-way by revoking its lease at a flush, then deliver it again: the second attempt
    starts from the checkpoint (not step 0) and the stored losses equal an uninterrupted run's."""
    settings(flush_every_steps=20, flush_interval_s=60, checkpoint_interval_s=0.0001)
    reference_id, victim_id = (_create_with_totals(_mlp(epochs=12))[0] for _ in range(2))
    assert train_run.apply(args=[reference_id]).get() == "succeeded"

    import worker.writer as writer_module

    original = writer_module.leases.append_steps
    calls = {"n": 0}

    def crash_after_four_flushes(session, run_id, attempt, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # as if the worker died: another attempt takes the lease, nothing more is written
            with transaction() as other:
                other.execute(update(Run).where(Run.id == run_id).values(attempt=Run.attempt + 1))
        return original(session, run_id, attempt, *args, **kwargs)

    writer_module.leases.append_steps = crash_after_four_flushes
    try:
        assert train_run.apply(args=[victim_id]).get() == "lease lost"
    finally:
        writer_module.leases.append_steps = original
    with transaction() as session:
        checkpoint_step = session.scalar(select(Checkpoint.step).where(Checkpoint.run_id == victim_id))
        stored = session.scalar(select(func.count()).select_from(Step).where(Step.run_id == victim_id))
        session.execute(update(Run).where(Run.id == victim_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert checkpoint_step == 80 and stored == 80
    print(f"INJECTED: lease lost after 4 flushes; checkpoint at step {checkpoint_step}")

    assert train_run.apply(args=[victim_id]).get() == "succeeded"
    reference, resumed = _step_rows(reference_id), _step_rows(victim_id)
    assert [r[1] for r in resumed] == list(range(len(reference)))
    assert [r[3] for r in resumed] == [r[3] for r in reference]  # the losses, bit for bit
    assert _run(victim_id).final_loss == _run(reference_id).final_loss
    assert _run(victim_id).attempt == 3
    with transaction() as session:  # cleaned up when the run ends
        assert session.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.run_id == victim_id)) == 0
    print("VERIFIED: resumed run's 108 losses equal the uninterrupted run's; checkpoint deleted")
