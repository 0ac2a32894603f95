"""The best loss so far is the engine's: it travels on every flush (``StepBatch.best_loss``), comes back
from the checkpoint when a run resumes, and the writer stores it as it is, on both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from db.models import Run, utcnow
from db.session import transaction
from tests.worker.test_reliability import settings  # noqa: F401  (the fixture)
from tests.worker.test_tasks import _create, _quadratic, _run
from worker.tasks import train_run
from worker.writer import StepWriter


def _stored_best(run_id: str) -> float | None:
    with transaction() as session:
        return session.scalar(select(Run.best_loss).where(Run.id == run_id))


def test_a_resumed_run_never_stores_a_best_loss_above_the_one_it_had(settings, monkeypatch):  # noqa: F811
    """SGD past its stable rate on (x - 2)²: every loss is higher than the one before, so the best is the
    first (36, at x0 = 8). A writer that started its best afresh on resume would store the new rows' own
    minimum, far above it."""
    settings(flush_every_steps=10, flush_interval_s=60, checkpoint_interval_s=0.0001)
    spec = _quadratic(steps=60, seeds=[0], optimizers=[{"name": "sgd", "params": {"lr": 1.05}}])
    run_id = _create(spec)[0]
    stored: list[tuple[int, float | None]] = []  # (attempt, Run.best_loss) after every flush with step rows
    write = StepWriter._write

    def observed(writer: StepWriter, batch) -> None:
        flushed = batch is not None and len(batch) > 0
        if flushed and writer.attempt == 1 and len(stored) == 4:  # as if the worker died: another attempt takes over
            with transaction() as session:
                session.execute(update(Run).where(Run.id == run_id).values(attempt=Run.attempt + 1))
        write(writer, batch)
        if flushed:
            stored.append((writer.attempt, _stored_best(run_id)))

    monkeypatch.setattr(StepWriter, "_write", observed)
    assert train_run.apply(args=[run_id]).get() == "lease lost"
    with transaction() as session:
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    assert train_run.apply(args=[run_id]).get() == "succeeded"

    resumed = [best for attempt, best in stored if attempt == 3]
    assert len(resumed) == 2, stored  # steps 40 to 59, from the checkpoint the fourth flush carried
    assert [best for _, best in stored] == [36.0] * 6, f"Run.best_loss after each flush: {stored}"
    assert _run(run_id).best_loss == 36.0
