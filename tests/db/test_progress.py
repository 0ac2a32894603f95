"""A comparison's progress (db.comparisons.refresh_comparison) stays exact when its runs end at once:
concurrent finishers, a redelivered finish, cancel, reaping and a tuning job's final phase, on both
databases."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update

from db import comparisons, leases
from db.models import Comparison, Run, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec
from engine.sweeps import FINAL

WORKERS = 4


def _spec(seeds: int, sweep: list[float] | None = None, tuning: list[int] | None = None) -> dict:
    entry = {"name": "sgd", "params": {"lr": 0.1}} if sweep is None else {"name": "sgd", "sweep": {"lr": sweep}}
    spec = {
        "name": "progress",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [entry],
        "reuse": False,
    }
    spec |= {"tuning": {"seeds": tuning}} if tuning else {"seeds": list(range(seeds))}
    return ComparisonSpec.model_validate(spec).model_dump(mode="json")


def _create(spec: dict) -> tuple[str, list[str]]:
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, 5)
        return comparison.id, [run.id for run in comparison.runs]


def _claim_all(run_ids: list[str]) -> dict[str, int]:
    attempts = {}
    for run_id in run_ids:
        with transaction() as session:
            attempts[run_id] = leases.claim_run(session, run_id, 60.0).attempt
    return attempts


def _finish_concurrently(attempts: dict[str, int], outcome=lambda run_id, index: ("succeeded", 1.0)) -> None:
    """WORKERS threads finish the runs, each its share, all released at once."""
    run_ids = list(attempts)
    start, errors = threading.Barrier(WORKERS), []

    def work(share: list[tuple[int, str]]) -> None:
        start.wait()
        try:
            for index, run_id in share:
                status, loss = outcome(run_id, index)
                with transaction() as session:
                    assert leases.finish_run(
                        session, run_id, attempts[run_id], status, steps_done=5, final_loss=loss, best_loss=loss
                    )
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(list(enumerate(run_ids))[i::WORKERS],)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _comparison(comparison_id: str) -> Comparison:
    with transaction() as session:
        return session.get(Comparison, comparison_id)


def test_concurrent_finishers_end_the_comparison_exactly_once(use_database):
    comparison_id, run_ids = _create(_spec(seeds=24))
    attempts = _claim_all(run_ids)
    assert _comparison(comparison_id).status == "running"
    _finish_concurrently(attempts)
    comparison = _comparison(comparison_id)
    assert (comparison.status, comparison.winners) == ("succeeded", ["sgd"])
    finished_at = comparison.finished_at
    assert finished_at is not None
    # a redelivered finish holds no lease: it changes nothing, and the comparison keeps its end
    with transaction() as session:
        assert not leases.finish_run(session, run_ids[0], attempts[run_ids[0]], "failed", error="again")
        comparisons.refresh_comparison(session, comparison_id)
    assert (_comparison(comparison_id).status, _comparison(comparison_id).finished_at) == ("succeeded", finished_at)


def test_a_failure_among_concurrent_finishers_fails_the_comparison(use_database):
    comparison_id, run_ids = _create(_spec(seeds=12))
    attempts = _claim_all(run_ids)
    _finish_concurrently(attempts, lambda run_id, index: ("failed", None) if index == 7 else ("succeeded", 1.0))
    assert _comparison(comparison_id).status == "failed"


def test_cancel_and_reaping_beside_finishers(use_database):
    comparison_id, run_ids = _create(_spec(seeds=8))
    attempts = _claim_all(run_ids[:6])
    with transaction() as session:  # two runs lose their worker: one is reaped back to the queue
        session.execute(update(Run).where(Run.id.in_(run_ids[4:6])).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        requeued, failed = leases.reap_stale_runs(session, 60.0, max_attempts=3)
    # the database is the session's: earlier tests' lost runs may be reaped beside these
    assert set(requeued) & set(run_ids) == set(run_ids[4:6]) and not set(failed) & set(run_ids)
    assert _comparison(comparison_id).status == "running"
    _finish_concurrently({run_id: attempts[run_id] for run_id in run_ids[:4]})
    assert _comparison(comparison_id).status == "running"
    with transaction() as session:
        assert set(leases.cancel(session, comparison_id=comparison_id)) == set(run_ids[4:])
    comparison = _comparison(comparison_id)
    assert comparison.status == "cancelled" and comparison.finished_at is not None


def test_concurrent_finishers_of_a_search_phase_start_one_final_phase(use_database):
    comparison_id, search = _create(_spec(seeds=0, sweep=[0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5], tuning=[0, 1, 2]))
    _finish_concurrently(_claim_all(search), lambda run_id, index: ("succeeded", float(index)))
    with transaction() as session:
        finals = session.execute(
            select(Run.sweep_values, Run.seed).where(Run.comparison_id == comparison_id, Run.phase == FINAL)
        ).all()
    # the best search run (lr 0.01, loss 0) on the two remaining seeds, created once
    assert sorted(finals, key=lambda row: row.seed) == [({"lr": 0.01}, 1), ({"lr": 0.01}, 2)]
    assert _comparison(comparison_id).status == "running"
