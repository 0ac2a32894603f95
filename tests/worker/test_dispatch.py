"""Publishing a comparison's tasks on the real Redis broker: one round trip for all of them, and a
broker that refuses leaves every run in the outbox for the sweeper."""

from __future__ import annotations

import base64
import json
import socket

import pytest
import redis
from sqlalchemy import select

from db import comparisons, leases
from db.models import Run
from db.session import transaction
from engine.spec import ComparisonSpec
from worker import dispatch

SPEC = {
    "name": "dispatch",
    "problem": {"function": {"name": "rosenbrock"}},
    "training": {"steps": 50},
    "optimizers": [
        {"name": "adam", "sweep": {"lr": [0.001, 0.01]}},
        {"name": "sgd", "params": {"lr": 0.001}},
        {"name": "lbfgs", "params": {"lr": 0.5}},
    ],
    "seeds": [0, 1],
    "device": "cpu",
    "reuse": False,
}


def _create(publishing: bool = False) -> tuple[ComparisonSpec, list[Run]]:
    spec = ComparisonSpec.model_validate(SPEC)
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec.model_dump(mode="json"), 50, publishing=publishing)
        session.expunge_all()
        return spec, comparison.runs


def _enqueued_at(runs: list[Run]) -> list:
    with transaction() as session:
        return list(session.scalars(select(Run.enqueued_at).where(Run.id.in_([r.id for r in runs]))))


def test_a_comparisons_tasks_go_out_in_one_round_trip(redis_dispatch, monkeypatch):
    pushes: list[int] = []  # the messages each round trip delivers (declaring the queue takes others)
    execute = redis.client.Pipeline.execute

    def counted(pipeline, *args, **kwargs):
        if messages := sum(command[0][0] == "LPUSH" for command in pipeline.command_stack):
            pushes.append(messages)
        return execute(pipeline, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    spec, runs = _create()
    assert dispatch.enqueue_new_runs(spec, runs) == len(runs) == 8
    messages = [json.loads(m) for m in redis_dispatch.messages("cpu")]
    published = [json.loads(base64.b64decode(m["body"]))[0] for m in messages]
    assert sorted(
        run_id for args in published for run_id in (args[0] if isinstance(args[0], list) else args)
    ) == sorted(r.id for r in runs)
    assert len(messages) > 1 and pushes == [len(messages)]
    assert all(_enqueued_at(runs))


def test_runs_stored_as_published_are_not_written_again(redis_dispatch, monkeypatch):
    """The submit's way: the INSERT marks the runs published, and a publish that succeeds writes nothing."""
    spec, runs = _create(publishing=True)
    marked = _enqueued_at(runs)
    assert all(marked)
    monkeypatch.setattr(leases, "mark_enqueued", lambda *args: pytest.fail("a successful publish wrote"))
    assert dispatch.enqueue_new_runs(spec, runs, marked=True) == len(runs)
    assert redis_dispatch.length("cpu") > 0
    assert _enqueued_at(runs) == marked


@pytest.fixture
def refusing_broker(use_database, monkeypatch):
    """Dispatch publishes to a Redis URL on a port nothing listens on; yields that port."""
    from optibench.settings import get_settings
    from worker.celery_app import create_celery

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("OPTIBENCH_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    monkeypatch.setattr(dispatch, "celery_app", create_celery(get_settings()))
    yield port
    get_settings.cache_clear()


@pytest.mark.parametrize("stored_as_published", [False, True])
def test_a_broker_that_refuses_leaves_every_run_in_the_outbox(refusing_broker, stored_as_published):
    spec, runs = _create(publishing=stored_as_published)
    assert dispatch.enqueue_new_runs(spec, runs, marked=stored_as_published) == 0
    assert _enqueued_at(runs) == [None] * len(runs)
    with transaction() as session:
        assert {r.id for r in runs} <= set(leases.unpublished_runs(session, limit=10_000))


def test_a_refused_publish_with_the_database_gone_too_still_answers(refusing_broker, monkeypatch, caplog):
    """The submit is committed when its publish fails: if putting the runs back in the outbox fails as
    well, the runs wait for the republish instead of the submit failing."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    spec, runs = _create(publishing=True)
    gone = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{refusing_broker}/gone")
    monkeypatch.setattr(dispatch, "new_session", lambda autocommit: Session(gone))
    assert dispatch.enqueue_new_runs(spec, runs, marked=True) == 0
    assert "wait OPTIBENCH_REPUBLISH_AFTER_S" in caplog.text
    assert all(_enqueued_at(runs))  # still marked: the sweeper republishes them after the interval
