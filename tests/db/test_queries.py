"""db.queries on both databases: float fidelity, idempotent flushes, the lease, status roll-up,
keyset pagination and orphan recovery."""

from __future__ import annotations

import base64
import math
import struct
import uuid
from dataclasses import astuple
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text, update

from db import comparisons, history, leases
from db.models import LOCAL_TEAM_ID, Comparison, Run, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec

LEASE_S = 60.0


def _spec(name: str = "quadratic 2x2") -> dict:
    return ComparisonSpec.model_validate(
        {
            "name": name,
            "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
            "training": {"steps": 20},
            "optimizers": [{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.1}}],
            "seeds": [0, 1],
        }
    ).model_dump(mode="json")


def _create(name: str = "quadratic 2x2", steps_total: int = 20) -> tuple[str, list[str]]:
    with transaction() as session:
        comparison = comparisons.create_comparison(session, _spec(name), steps_total)
        return comparison.id, [run.id for run in comparison.runs]


def _claim(run_id: str, lease_s: float = LEASE_S) -> leases.Claim | None:
    with transaction() as session:
        return leases.claim_run(session, run_id, lease_s)


def _append(run_id: str, attempt: int, rows: list[dict], best: float | None = None) -> str:
    columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else None
    with transaction() as session:
        return leases.append_steps(session, run_id, attempt, columns, best)


def _finish(run_id: str, attempt: int, status: str, **kwargs) -> bool:
    with transaction() as session:
        return leases.finish_run(session, run_id, attempt, status, **kwargs)


def _run(run_id: str) -> Run:
    with transaction() as session:
        return session.get(Run, run_id)


def _comparison(comparison_id: str) -> Comparison:
    with transaction() as session:
        return session.get(Comparison, comparison_id)


def _steps(run_id: str) -> list:
    with transaction() as session:
        return list(history.iter_steps(session, run_id))


def _count_steps(run_id: str) -> int:
    with transaction() as session:
        return session.execute(text("SELECT count(*) FROM steps WHERE run_id = :r"), {"r": run_id}).scalar_one()


def _set_run(run_id: str, **values) -> None:
    with transaction() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def _make_stale(run_id: str) -> None:
    _set_run(run_id, heartbeat_at=utcnow() - timedelta(hours=1))


def _row(step: int, loss: float = 1.0, x: list[float] | None = None, **overrides) -> dict:
    row = {
        "step": step,
        "epoch": None,
        "loss": loss,
        "time_s": 0.01 * (step + 1),
        "step_time_ms": 0.5,
        "lr": 0.1,
        "x": x if x is not None else [float(step)],
    }
    return row | overrides


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


# --- float fidelity ------------------------------------------------------------------------------


def test_non_finite_losses_and_coordinates_survive_a_round_trip(use_database):
    _, (run_id, *_) = _create()
    claim = _claim(run_id)
    rows = [
        _row(0, loss=math.nan, x=[math.nan, 1.0]),
        _row(1, loss=math.inf, x=[math.inf, -math.inf]),
        _row(2, loss=-math.inf, x=[-math.inf, math.nan]),
        _row(3, loss=0.25, x=[0.5, -0.5]),
    ]
    assert _append(run_id, claim.attempt, rows, best=0.25) == "running"

    steps = _steps(run_id)
    assert [s.step for s in steps] == [0, 1, 2, 3]
    assert math.isnan(steps[0].loss)
    assert steps[1].loss == math.inf
    assert steps[2].loss == -math.inf
    assert steps[3].loss == 0.25
    assert math.isnan(steps[0].x[0]) and steps[0].x[1] == 1.0
    assert steps[1].x == [math.inf, -math.inf]
    assert steps[2].x[0] == -math.inf and math.isnan(steps[2].x[1])
    assert steps[3].x == [0.5, -0.5]
    run = _run(run_id)
    assert run.steps_done == 4 and run.best_loss == 0.25


def test_ordinary_floats_are_bit_exact_float64(use_database):
    _, (run_id, *_) = _create()
    claim = _claim(run_id)
    values = [
        0.1,
        1 / 3,
        math.pi * 1e-300,
        1.7976931348623157e308,
        2.2250738585072014e-308,
        5e-324,
        123456789.12345678,
        1.0000000000000002,
        2.0**-1074 * 3,
        6.02214076e23,
    ]
    rows = [_row(i, loss=v, x=[v, -v, v / 7], time_s=v * 2, step_time_ms=v / 3, lr=v) for i, v in enumerate(values)]
    _append(run_id, claim.attempt, rows, best=min(values))

    steps = _steps(run_id)
    assert len(steps) == len(values)
    for step, row in zip(steps, rows):
        for column in ("loss", "time_s", "step_time_ms", "lr"):
            assert _bits(getattr(step, column)) == _bits(row[column]), (column, row[column], getattr(step, column))
        assert [_bits(v) for v in step.x] == [_bits(v) for v in row["x"]]
    assert _bits(_run(run_id).best_loss) == _bits(min(values))


# --- idempotent flushes --------------------------------------------------------------------------


def test_a_redelivered_flush_leaves_one_row_per_step(use_database):
    _, (run_id, other_id, *_) = _create()
    claim = _claim(run_id)
    other = _claim(other_id)
    first = [_row(i, loss=float(10 - i)) for i in range(5)]
    _append(run_id, claim.attempt, first)
    _append(run_id, claim.attempt, first)
    assert _count_steps(run_id) == 5
    # an overlapping flush adds only the new steps and keeps the rows already written
    _append(run_id, claim.attempt, [_row(i, loss=-1.0) for i in range(3, 8)])
    _append(other_id, other.attempt, first)
    with transaction() as session:
        counts = dict(
            session.execute(
                text("SELECT step, count(*) FROM steps WHERE run_id = :r GROUP BY step"), {"r": run_id}
            ).all()
        )
        assert (
            session.execute(
                text("SELECT count(*) FROM steps WHERE run_id IN (:a, :b)"), {"a": run_id, "b": other_id}
            ).scalar_one()
            == 13
        )
    assert counts == {step: 1 for step in range(8)}
    assert [s.loss for s in _steps(run_id)] == [10.0, 9.0, 8.0, 7.0, 6.0, -1.0, -1.0, -1.0]
    assert _run(run_id).steps_done == 8


# --- the lease -----------------------------------------------------------------------------------


def test_lease_claim_steal_and_fencing(use_database):
    comparison_id, (run_id, *_) = _create()

    first = _claim(run_id)
    assert isinstance(first, leases.Claim)
    assert (first.run_id, first.attempt, first.comparison_id) == (run_id, 1, comparison_id)
    assert (first.entry_index, first.seed, first.steps_total) == (0, 0, 20)
    assert first.spec == _spec()
    run = _run(run_id)
    assert run.status == "running" and run.attempt == 1 and run.started_at is not None
    started_at = run.started_at
    assert _comparison(comparison_id).status == "running"
    _append(run_id, 1, [_row(i) for i in range(6)])
    assert _count_steps(run_id) == 6

    # the holder is alive: nobody else gets it
    assert _claim(run_id) is None
    assert _run(run_id).attempt == 1 and _count_steps(run_id) == 6

    # the holder went silent: the next claim takes over and restarts from step 0
    _make_stale(run_id)
    second = _claim(run_id)
    assert second is not None and second.attempt == 2
    assert _count_steps(run_id) == 0
    run = _run(run_id)
    assert run.attempt == 2 and run.steps_done == 0 and run.started_at == started_at

    # the old attempt is fenced off: it can neither write steps nor finish the run
    with pytest.raises(leases.LeaseLost):
        _append(run_id, 1, [_row(i) for i in range(6, 10)])
    assert _count_steps(run_id) == 0
    assert _finish(run_id, 1, "succeeded", steps_done=20, final_loss=0.5) is False
    run = _run(run_id)
    assert (run.status, run.final_loss, run.steps_done, run.finished_at) == ("running", None, 0, None)

    # the new attempt owns it
    assert _append(run_id, 2, [_row(i) for i in range(20)], best=1.0) == "running"
    assert _finish(run_id, 2, "succeeded", steps_done=20, final_loss=0.5, best_loss=0.5) is True
    run = _run(run_id)
    assert (run.status, run.final_loss, run.steps_done) == ("succeeded", 0.5, 20)
    assert run.finished_at is not None

    # finished is final, however old its heartbeat
    assert _claim(run_id) is None
    _make_stale(run_id)
    assert _claim(run_id) is None
    run = _run(run_id)
    assert (run.status, run.attempt) == ("succeeded", 2)
    assert _count_steps(run_id) == 20


def test_a_takeover_forgets_the_dead_attempts_progress(use_database):
    """The run restarts from step 0: nothing reported about it may come from the dropped steps."""
    _, (run_id, *_) = _create()
    first = _claim(run_id)
    _append(run_id, first.attempt, [_row(i, loss=0.5) for i in range(6)], best=0.5)
    assert (_run(run_id).steps_done, _run(run_id).best_loss) == (6, 0.5)
    _make_stale(run_id)
    second = _claim(run_id)
    assert second.attempt == 2 and _count_steps(run_id) == 0
    run = _run(run_id)
    assert run.steps_done == 0
    assert run.best_loss is None, "best_loss still describes the dead attempt's dropped steps"


@pytest.mark.parametrize("status", ["succeeded", "failed", "diverged", "cancelled"])
def test_a_terminal_run_is_never_claimed(use_database, status):
    _, (run_id, *_) = _create()
    _set_run(run_id, status=status, heartbeat_at=utcnow() - timedelta(days=1), attempt=1)
    assert _claim(run_id, lease_s=0.001) is None
    run = _run(run_id)
    assert (run.status, run.attempt) == (status, 1)


def test_append_steps_on_a_cancelled_run_reports_cancelled_and_writes_nothing(use_database):
    _, (run_id, *_) = _create()
    claim = _claim(run_id)
    _set_run(run_id, status="cancelled")
    assert _append(run_id, claim.attempt, [_row(0), _row(1)]) == "cancelled"
    assert _count_steps(run_id) == 0
    assert _run(run_id).status == "cancelled"


# --- comparison status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["queued"], "queued"),
        (["queued", "queued", "queued"], "queued"),
        (["running", "queued"], "running"),
        (["succeeded", "queued"], "running"),
        (["succeeded", "running"], "running"),
        (["failed", "running"], "running"),
        (["cancelled", "queued"], "running"),
        (["succeeded"], "succeeded"),
        (["succeeded", "succeeded"], "succeeded"),
        (["diverged"], "succeeded"),
        (["succeeded", "diverged"], "succeeded"),
        (["succeeded", "failed"], "failed"),
        (["diverged", "failed", "succeeded"], "failed"),
        (["succeeded", "cancelled"], "cancelled"),
        (["diverged", "cancelled"], "cancelled"),
    ],
)
def test_comparison_status(statuses, expected):
    assert comparisons.comparison_status(statuses) == expected


def _drive(outcomes: list[str]) -> list[tuple[str, bool]]:
    """Claim and finish each run of a fresh 4-run comparison in turn; the comparison's
    (status, finished) after the first claim and after each finish."""
    comparison_id, run_ids = _create()
    assert len(run_ids) == len(outcomes) == 4
    comparison = _comparison(comparison_id)
    seen = [(comparison.status, comparison.finished_at is not None)]
    claims = [_claim(run_id) for run_id in run_ids]
    comparison = _comparison(comparison_id)
    seen.append((comparison.status, comparison.finished_at is not None))
    for run_id, claim, outcome in zip(run_ids, claims, outcomes):
        if outcome == "cancelled":
            _set_run(run_id, status="cancelled")
            with transaction() as session:
                comparisons.refresh_comparison(session, comparison_id)
        else:
            assert _finish(run_id, claim.attempt, outcome, steps_done=20) is True
        comparison = _comparison(comparison_id)
        seen.append((comparison.status, comparison.finished_at is not None))
    return seen


def test_refresh_comparison_succeeds_when_every_run_has_a_result(use_database):
    seen = _drive(["succeeded", "diverged", "succeeded", "succeeded"])
    assert seen == [
        ("queued", False),
        ("running", False),
        ("running", False),
        ("running", False),
        ("running", False),
        ("succeeded", True),
    ]


def test_refresh_comparison_one_failed_run_fails_it(use_database):
    seen = _drive(["succeeded", "failed", "succeeded", "diverged"])
    assert seen[-1] == ("failed", True)
    assert all(not finished for _, finished in seen[:-1])
    assert [status for status, _ in seen[2:-1]] == ["running"] * 3


def test_refresh_comparison_one_cancelled_run_cancels_it(use_database):
    seen = _drive(["succeeded", "succeeded", "cancelled", "succeeded"])
    assert seen[-1] == ("cancelled", True)
    assert all(not finished for _, finished in seen[:-1])


def test_refresh_comparison_moves_from_queued_to_running_on_the_first_claim(use_database):
    comparison_id, run_ids = _create()
    assert _comparison(comparison_id).status == "queued"
    _claim(run_ids[2])
    comparison = _comparison(comparison_id)
    assert comparison.status == "running" and comparison.finished_at is None


# --- listing and progress ------------------------------------------------------------------------


def test_list_comparisons_keyset_pagination(use_database):
    created = [_create(f"page test {i}")[0] for i in range(7)]
    # ties on created_at must be broken by id, across page boundaries too
    base = utcnow() + timedelta(days=3650)
    offsets = [0, 1, 1, 1, 2, 3, 3]
    with transaction() as session:
        for comparison_id, offset in zip(created, offsets):
            session.execute(
                update(Comparison)
                .where(Comparison.id == comparison_id)
                .values(created_at=base + timedelta(seconds=offset))
            )

    seen: list[Comparison] = []
    pages = 0
    cursor = None
    while True:
        with transaction() as session:
            page, cursor = history.list_comparisons(session, LOCAL_TEAM_ID, 3, cursor)
        pages += 1
        assert len(page) <= 3
        seen.extend(page)
        if cursor is None:
            break
        assert len(page) == 3
    ids = [c.id for c in seen]
    assert len(ids) == len(set(ids)), "a comparison appeared on two pages"
    with transaction() as session:
        assert set(ids) == set(
            session.scalars(
                select(Comparison.id).where(Comparison.team_id == LOCAL_TEAM_ID, Comparison.deleted_at.is_(None))
            )
        )
    assert pages == math.ceil(len(ids) / 3)
    keys = [(c.created_at, c.id) for c in seen]
    assert keys == sorted(keys, reverse=True)
    expected = [cid for _, cid in sorted(zip(offsets, created), reverse=True)]
    # these are the newest comparisons in the database: they come first, in order
    assert ids[:7] == expected


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        base64.urlsafe_b64encode(b"garbage").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b'["yesterday", "x"]').decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
    ],
)
def test_a_malformed_cursor_raises_value_error(use_database, cursor):
    with transaction() as session, pytest.raises(ValueError):
        history.list_comparisons(session, LOCAL_TEAM_ID, 3, cursor)


def test_progress_of_sums_runs_and_steps(use_database):
    comparison_id, run_ids = _create(steps_total=20)
    other_id, _ = _create(steps_total=20)
    a, b = _claim(run_ids[0]), _claim(run_ids[1])
    _append(run_ids[0], a.attempt, [_row(i) for i in range(7)])
    _append(run_ids[1], b.attempt, [_row(i) for i in range(20)])
    _finish(run_ids[1], b.attempt, "succeeded", steps_done=20)
    with transaction() as session:
        progress = history.progress_of(session, [comparison_id, other_id])
        assert history.progress_of(session, []) == {}
    assert progress[comparison_id] == history.Progress(runs_total=4, runs_done=1, steps_total=80, steps_done=27)
    assert progress[other_id] == history.Progress(runs_total=4, runs_done=0, steps_total=80, steps_done=0)


def test_history_page_rows_are_the_listed_comparisons_with_their_progress(use_database):
    name = f"history page {uuid.uuid4().hex}"
    created = [_create(name)[0] for _ in range(3)]
    _, run_ids = _create(name)
    claim = _claim(run_ids[1])
    _append(run_ids[1], claim.attempt, [_row(i) for i in range(20)])
    _finish(run_ids[1], claim.attempt, "succeeded", steps_done=20)
    where, cursor, pages = history.HistoryFilter(q=name), None, []
    with transaction() as session:
        while True:
            rows, next_cursor = history.history_page(session, LOCAL_TEAM_ID, 3, cursor, where)
            objects, expected_cursor = history.list_comparisons(session, LOCAL_TEAM_ID, 3, cursor, where)
            progress = history.progress_of(session, [c.id for c in objects])
            assert next_cursor == expected_cursor
            assert [tuple(row) for row in rows] == [
                (*(getattr(c, column) for column in history.SUMMARY_COLUMNS), *astuple(progress[c.id])) for c in objects
            ]
            pages.append(rows)
            if next_cursor is None:
                break
            cursor = next_cursor
    assert [len(rows) for rows in pages] == [3, 1]
    assert {row.id for row in pages[1]} == {created[0]}
    assert tuple(pages[0][0])[len(history.SUMMARY_COLUMNS) :] == (4, 1, 80, 20)


def test_created_objects_are_what_a_read_gives_and_need_no_query(use_database):
    with transaction() as session:
        comparison = comparisons.create_comparison(
            session, _spec(), 20, idempotency_key="retry-1", request_hash="ab" * 32
        )
        statements = []

        def record(_connection, _cursor, statement, *_) -> None:
            statements.append(statement)

        event.listen(session.get_bind(), "before_cursor_execute", record)
        try:
            created = _columns(comparison), [_columns(run) for run in comparison.runs]
        finally:
            event.remove(session.get_bind(), "before_cursor_execute", record)
    assert statements == []
    with transaction() as session:
        stored = session.get(Comparison, comparison.id)
        assert (_columns(stored), [_columns(run) for run in stored.runs]) == created
        assert stored.idempotency_key == "retry-1" and stored.request_hash == "ab" * 32
        # what was not set is SQL NULL, not JSON's null
        assert (
            session.execute(
                text("SELECT count(*) FROM runs WHERE comparison_id = :c AND hardware IS NULL"), {"c": comparison.id}
            ).scalar_one()
            == 4
        )
        assert (
            session.execute(
                text("SELECT count(*) FROM comparisons WHERE id = :c AND winners IS NULL"), {"c": comparison.id}
            ).scalar_one()
            == 1
        )
    # and they stay usable objects of the session: an edit is written at the commit
    with transaction() as session:
        comparison = comparisons.create_comparison(session, _spec(), 20)
        comparison.runs[0].status = "cancelled"
    assert _run(comparison.runs[0].id).status == "cancelled"


def _columns(instance) -> dict:
    return {column: getattr(instance, column) for column in type(instance).__table__.columns.keys()}


# --- orphans -------------------------------------------------------------------------------------


def test_requeue_orphans_moves_only_stale_running_runs(use_database):
    _, (stale, fresh, silent, queued) = _create()
    _claim(stale)
    _make_stale(stale)
    _claim(fresh)
    _set_run(silent, status="running", heartbeat_at=None)

    with transaction() as session:
        orphans = leases.requeue_orphans(session, utcnow() - timedelta(seconds=LEASE_S))
    mine = {stale, fresh, silent, queued}
    assert set(orphans) & mine == {stale, silent}
    assert [_run(r).status for r in (stale, fresh, silent, queued)] == ["queued", "running", "queued", "queued"]
    # a requeued run is claimed again by its next delivery
    assert _claim(stale).attempt == 2
