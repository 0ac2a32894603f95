"""The history's filters and its winner column, on both databases: each filter against the set it
must select, keyset pages under filters, winners recorded at the end equal to the summary's rank 1,
and 10,000 comparisons paged on the index without a sort."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from db import comparisons, history, leases
from db.migrate import upgrade
from db.models import CANCELLED, FAILED, SUCCEEDED, Comparison, Team, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec
from services.summaries import summarize

pytestmark = pytest.mark.usefixtures("use_database")


def _team() -> str:
    with transaction() as session:
        team = Team(name=f"history-{uuid.uuid4().hex[:8]}")
        session.add(team)
        session.flush()
        return team.id


def _spec(name: str, optimizers: tuple[str, ...], problem: str = "function", tags: tuple[str, ...] = ()) -> dict:
    problems = {
        "function": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "dataset": {"model": {"name": "mlp"}, "dataset": {"name": "iris"}, "loss": "cross_entropy"},
    }
    return ComparisonSpec.model_validate(
        {
            "name": name,
            "problem": problems[problem],
            "training": {"steps": 5},
            "seeds": [0],
            "tags": list(tags),
            "optimizers": [{"name": o, "label": f"{o} {i}"} for i, o in enumerate(optimizers)],
        }
    ).model_dump(mode="json")


def _create(team_id: str, spec: dict, status: str | None = None) -> str:
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, 5, team_id=team_id)
        if status:
            comparison.status = status
        return comparison.id


def _listed(team_id: str, limit: int = 500, **where) -> list[str]:
    with transaction() as session:
        page, _ = history.list_comparisons(session, team_id, limit, where=history.HistoryFilter(**where))
        return [c.id for c in page]


def test_each_filter_selects_exactly_its_comparisons():
    team = _team()
    adam_fn = _create(team, _spec("Adam vs SGD, 100% of it", ("adam", "sgd"), tags=("nightly", "a b")))
    rms_mlp = _create(team, _spec("RMSProp on iris", ("rmsprop",), "dataset", tags=("nightly",)), status=FAILED)
    adam_twice = _create(team, _spec("adam_twice", ("adam", "adam"), "dataset"), status=SUCCEEDED)
    deleted = _create(team, _spec("Adam deleted", ("adam",)))
    with transaction() as session:
        session.get(Comparison, deleted).deleted_at = utcnow()
    _create(_team(), _spec("another team's adam", ("adam",)))
    newest_first = [adam_twice, rms_mlp, adam_fn]

    assert _listed(team) == newest_first
    assert _listed(team, optimizer="adam") == [adam_twice, adam_fn]
    assert _listed(team, optimizer="sgd") == [adam_fn]
    assert _listed(team, optimizer="ada") == []  # a name, not a substring
    assert _listed(team, status="failed") == [rms_mlp]
    assert _listed(team, model="mlp") == [adam_twice, rms_mlp]
    assert _listed(team, dataset="iris", optimizer="rmsprop") == [rms_mlp]
    assert _listed(team, function="quadratic") == [adam_fn]
    assert _listed(team, tag="nightly") == [rms_mlp, adam_fn]
    assert _listed(team, tag="a b") == [adam_fn]
    assert _listed(team, tag="nightl") == []
    assert _listed(team, q="ADAM") == [adam_twice, adam_fn]
    # LIKE's wildcards are searched as themselves
    assert _listed(team, q="100%") == [adam_fn]
    assert _listed(team, q="_twice") == [adam_twice]
    assert _listed(team, q="%") == [adam_fn]


def test_keyset_pages_under_a_filter_cover_each_match_once_in_order():
    team = _team()
    made = [_create(team, _spec(f"c{i}", ("adam",) if i % 3 else ("sgd",))) for i in range(11)]
    matching = [cid for i, cid in reversed(list(enumerate(made))) if i % 3]
    seen, cursor = [], None
    with transaction() as session:
        while True:
            page, cursor = history.list_comparisons(session, team, 3, cursor, history.HistoryFilter(optimizer="adam"))
            seen += [c.id for c in page]
            if cursor is None:
                break
    assert seen == matching


def _finish_all(comparison_id: str, finals: dict[tuple[str, int], float | None]) -> None:
    """Every run through the worker's own calls: claim, then finish (None: diverged)."""
    with transaction() as session:
        runs = session.scalars(select(Comparison).where(Comparison.id == comparison_id)).one().runs
        keys = {run.id: (run.label, run.seed) for run in runs}
    for run_id, key in keys.items():
        with transaction() as session:
            claim = leases.claim_run(session, run_id, 60.0)
            final = finals[key]
            leases.finish_run(
                session,
                run_id,
                claim.attempt,
                SUCCEEDED if final is not None else "diverged",
                final_loss=final,
                best_loss=final,
                wall_time_s=1.0,
                steps_done=5,
            )


@pytest.mark.parametrize(
    ("finals", "expected"),
    [
        # the lowest mean final loss wins, not the single best run
        ({("adam 0", 0): 0.1, ("adam 0", 1): 0.9, ("sgd 1", 0): 0.4, ("sgd 1", 1): 0.4}, ["sgd 1"]),
        # a setting with a diverged run ranks behind every setting without one
        ({("adam 0", 0): 0.01, ("adam 0", 1): None, ("sgd 1", 0): 0.5, ("sgd 1", 1): 0.6}, ["sgd 1"]),
        # a tie: both are first
        ({("adam 0", 0): 0.5, ("adam 0", 1): 0.5, ("sgd 1", 0): 0.5, ("sgd 1", 1): 0.5}, ["adam 0", "sgd 1"]),
    ],
)
def test_winners_are_recorded_at_the_end_as_the_summarys_rank_one(finals, expected):
    spec = _spec("winners", ("adam", "sgd")) | {"seeds": [0, 1]}
    comparison_id = _create(_team(), spec)
    _finish_all(comparison_id, finals)
    with transaction() as session:
        comparison = session.get(Comparison, comparison_id)
        assert comparison.status == SUCCEEDED
        ranked_first = [row["label"] for row in summarize(session, comparison)["rows"] if row["rank"] == 1]
        assert comparison.winners == ranked_first == expected


def test_a_cancelled_comparison_records_the_winners_of_its_finished_runs():
    comparison_id = _create(_team(), _spec("cut short", ("adam", "sgd")))
    with transaction() as session:
        first = session.get(Comparison, comparison_id).runs[0]
        claim = leases.claim_run(session, first.id, 60.0)
        leases.finish_run(session, first.id, claim.attempt, SUCCEEDED, final_loss=0.3, best_loss=0.3, steps_done=5)
    with transaction() as session:
        leases.cancel(session, comparison_id=comparison_id)
    with transaction() as session:
        comparison = session.get(Comparison, comparison_id)
        assert (comparison.status, comparison.winners) == (CANCELLED, ["adam 0"])


# --- 10,000 comparisons --------------------------------------------------------------------------

N = 10_000
PAGE = 50


def _many(team_id: str) -> None:
    """N comparisons straight into the table; every 1000th has the rare optimizer and tag."""
    now = utcnow()
    spec = _spec("bulk", ("adam", "sgd"))
    rows = [
        {
            "id": uuid.uuid4().hex,
            "team_id": team_id,
            "name": f"bulk {i}",
            "spec": spec,
            "status": "running" if i % 10 == 0 else "succeeded",
            "created_at": now - timedelta(seconds=N - i),
            "tags": ["rare"] if i % 1000 == 0 else ["common"],
            "function_name": "quadratic",
            "optimizer_names": ["lbfgs"] if i % 1000 == 0 else ["adam", "sgd"],
        }
        for i in range(N)
    ]
    with transaction() as session:
        session.execute(insert(Comparison), rows)
        session.execute(text("ANALYZE"))


class _Explain(Executable, ClauseElement):
    """The database's plan of a query, with its bound parameters processed as in a real execution."""

    inherit_cache = False

    def __init__(self, query) -> None:
        self.query = query


@compiles(_Explain)
def _compile_explain(element: _Explain, compiler, **kw) -> str:
    prefix = "EXPLAIN QUERY PLAN " if compiler.dialect.name == "sqlite" else "EXPLAIN "
    return prefix + compiler.process(element.query, **kw)


def _plan(session, query, params: dict) -> str:
    return "\n".join(str(row[-1]) for row in session.execute(_Explain(query), params))


def _timed(where: history.HistoryFilter, team: str, cursor: str | None = None) -> tuple[float, list, str | None]:
    """The median of three requests' time for a page, and the page; each in its own session, as requests are."""
    durations = []
    for _ in range(3):
        with transaction() as session:
            started = time.perf_counter()
            page, next_cursor = history.list_comparisons(session, team, PAGE, cursor, where)
            durations.append(time.perf_counter() - started)
    return statistics.median(durations), page, next_cursor


def test_ten_thousand_comparisons_page_fast_the_deepest_page_too():
    team = _team()
    _many(team)
    with transaction() as session:
        dialect = session.get_bind().dialect.name
        for where in (history.HistoryFilter(), history.HistoryFilter(status="running")):
            filters = where.params()
            query = history._history_statement(False, dialect, tuple(filters), False)  # list_comparisons' own
            plan = _plan(session, query, {"team_id": team, "limit": PAGE + 1, **filters})
            # walked in order on the index: no sort of the team's rows
            assert "ix_comparisons_team" in plan and "TEMP B-TREE" not in plan and "Sort" not in plan, (where, plan)

    cursor, pages, seen = None, 0, 0
    while True:
        with transaction() as session:
            page, next_cursor = history.list_comparisons(session, team, PAGE, cursor)
        pages, seen = pages + 1, seen + len(page)
        if next_cursor is None:
            break
        cursor = next_cursor
    assert (pages, seen) == (N // PAGE, N)
    # generous bounds for a busy machine: pages take a few ms, a filter matching 10 of 10,000 some 15 ms
    first, _, _ = _timed(history.HistoryFilter(), team)
    deepest, page, _ = _timed(history.HistoryFilter(), team, cursor)
    assert len(page) == PAGE and first < 0.05 and deepest < 0.05, (first, deepest)
    for where in (
        history.HistoryFilter(optimizer="lbfgs"),
        history.HistoryFilter(tag="rare"),
        history.HistoryFilter(q="bulk 10"),
        history.HistoryFilter(status="running", optimizer="sgd"),
    ):
        took, page, _ = _timed(where, team)
        assert page and took < 0.15, (where, took)


def test_migration_0004_fills_the_filter_columns_of_existing_comparisons(tmp_path):
    url = f"sqlite:///{tmp_path / 'before.db'}"
    upgrade(url, "0003")
    spec = _spec("old", ("adam", "sgd", "adam"), "dataset")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO comparisons (id, team_id, name, status, spec, tags, created_at) "
                "VALUES ('old', 'local', 'old', 'succeeded', :spec, '[]', CURRENT_TIMESTAMP)"
            ),
            {"spec": json.dumps(spec)},
        )
    upgrade(url)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT model_name, dataset_name, function_name, optimizer_names, winners FROM comparisons")
        ).one()
    engine.dispose()
    assert tuple(row) == ("mlp", "iris", None, '["adam", "sgd"]', None)
