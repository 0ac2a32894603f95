"""Runs whose message the broker lost are published again within a lease, not OPTIBENCH_REPUBLISH_AFTER_S
later, and only those; every publish carries its team's priority; the workers table says who consumes
what. On the real Redis (and the embedded SQLAlchemy broker) and both databases."""

from __future__ import annotations

import json
import re
import time

import pytest
from sqlalchemy import select

from db import comparisons, leases, teams, workers
from db.models import Run
from db.session import transaction
from engine.spec import ComparisonSpec
from optibench.settings import get_settings
from tests.worker.conftest import priority_list
from worker import dispatch
from worker.sweeper import republish_lost, sweep

LEASE_S = 0.5
SPEC = ComparisonSpec.model_validate(
    {
        "name": "recovery",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [{"name": "sgd"}],
        "seeds": [0, 1],
        "device": "cpu",
        "reuse": False,
    }
).model_dump(mode="json")


@pytest.fixture
def short_lease(settings_env):
    settings_env("OPTIBENCH_LEASE_TIMEOUT_S", str(LEASE_S))


def _create(team_id: str | None = None, publishing: bool = True) -> list[Run]:
    with transaction() as session:
        extra = {"team_id": team_id} if team_id else {}
        comparison = comparisons.create_comparison(session, SPEC, 5, publishing=publishing, **extra)
        session.expunge_all()
        return comparison.runs


def _published(broker, runs: list[Run]) -> list[str]:
    """The ids of ``runs`` in the messages on the cpu queue (a run alone, or in an ensemble), once per
    message; the shared test database has other tests' queued runs, which a sweep may publish too."""
    ours = {r.id for r in runs}
    ids = [
        run_id
        for message in broker.messages("cpu")
        for run_id in re.findall(r"[0-9a-f]{32}", json.loads(message)["headers"]["argsrepr"])
    ]
    return sorted(i for i in ids if i in ours)


def _enqueued_at(run_ids: list[str]) -> dict:
    with transaction() as session:
        return dict(session.execute(select(Run.id, Run.enqueued_at).where(Run.id.in_(run_ids))).all())


def test_runs_stored_as_published_but_never_sent_go_out_after_a_lease(redis_dispatch, short_lease, monkeypatch):
    """The API died between its commit and its publish: the runs are marked published, nothing was sent.
    A worker's sweep (an API process's leaves the check to the workers) publishes them again."""
    from worker import sweeper

    monkeypatch.setattr(sweeper, "_worker", ("recovery-test@localhost", ["optibench.cpu"]))
    runs = _create()
    ids = [r.id for r in runs]
    before = _enqueued_at(ids)
    sweep(reap=False)
    assert _published(redis_dispatch, runs) == []  # younger than a lease: its publish may be under way
    time.sleep(LEASE_S + 0.1)
    sweep(reap=False)
    assert _published(redis_dispatch, runs) == sorted(ids)
    assert all(_enqueued_at(ids)[i] > before[i] for i in ids)
    time.sleep(LEASE_S + 0.1)
    republish_lost()  # sent now, and recorded as sent: not published a third time
    assert _published(redis_dispatch, runs) == sorted(ids)


def test_a_backlog_whose_messages_are_in_the_broker_is_left_alone(redis_dispatch, short_lease):
    runs = _create()
    spec = ComparisonSpec.model_validate(SPEC)
    assert dispatch.enqueue_new_runs(spec, runs, marked=True) == 2
    published = _enqueued_at([r.id for r in runs])
    time.sleep(LEASE_S + 0.1)
    republish_lost()
    assert _published(redis_dispatch, runs) == sorted(r.id for r in runs)
    assert _enqueued_at([r.id for r in runs]) == published


def test_a_publish_sends_its_messages_and_their_sent_keys_in_one_round_trip(redis_dispatch, monkeypatch):
    """The record of which runs were sent rides in the publish batch's pipeline, after the messages."""
    import redis

    executed: list[list[str]] = []
    execute = redis.client.Pipeline.execute

    def counted(self, *args, **kwargs):
        executed.append([str(command[0][0]) for command in self.command_stack])
        return execute(self, *args, **kwargs)

    runs = _create()
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    assert dispatch.enqueue_new_runs(ComparisonSpec.model_validate(SPEC), runs, marked=True) == 2
    # before it, a fresh producer's first publish declares its queue and bindings
    [commands] = [commands for commands in executed if "LPUSH" in commands or "ZADD" in commands]
    assert commands[-1] == "ZADD" and "ZADD" not in commands[:-1], executed
    assert dispatch.missing_from_broker([r.id for r in runs]) == set()


def test_messages_lost_with_redis_are_published_again(redis_dispatch, short_lease):
    """A Redis restarted without persistence loses the messages and the keys that record them alike."""
    runs = _create()
    assert dispatch.enqueue_new_runs(ComparisonSpec.model_validate(SPEC), runs, marked=True) == 2
    broker = redis_dispatch.client
    broker.delete(*redis_dispatch.lists("cpu"), f"{redis_dispatch.prefix}.sent")
    time.sleep(LEASE_S + 0.1)
    assert republish_lost() >= 2
    assert _published(redis_dispatch, runs) == sorted(r.id for r in runs)


def test_the_embedded_broker_is_asked_too(use_database, short_lease):
    """On the SQLAlchemy broker the runs no stored message names are the lost ones."""
    runs = _create()
    ids = [r.id for r in runs]
    time.sleep(LEASE_S + 0.1)
    assert republish_lost() >= 2
    assert all(dispatch.missing_from_broker(ids) == set() for _ in range(2))
    published = _enqueued_at(ids)
    time.sleep(LEASE_S + 0.1)
    republish_lost()
    assert _enqueued_at(ids) == published  # in the broker now: not published again


def test_a_teams_backlog_lowers_its_priority_not_another_teams(redis_dispatch):
    """Each comparison's messages carry the number of its team's earlier unfinished comparisons."""
    with transaction() as session:
        busy, idle = (teams.create_team(session, f"{name}-{time.monotonic_ns()}").id for name in ("busy", "idle"))
    spec = ComparisonSpec.model_validate(SPEC)
    for _ in range(3):
        _create(busy)
    backlog = _create(busy, publishing=False)
    assert dispatch.enqueue_new_runs(spec, backlog) == 2
    fresh = _create(idle, publishing=False)
    assert dispatch.enqueue_new_runs(spec, fresh) == 2
    queue, broker = f"{redis_dispatch.prefix}.cpu", redis_dispatch.client

    def run_ids(priority: int) -> list[str]:
        return sorted(
            re.findall(
                r"[0-9a-f]{32}",
                " ".join(
                    json.loads(m)["headers"]["argsrepr"] for m in broker.lrange(priority_list(queue, priority), 0, -1)
                ),
            )
        )

    assert run_ids(3) == sorted(r.id for r in backlog) and run_ids(0) == sorted(r.id for r in fresh)
    # a republish takes the same path: the busy team's runs go out behind the idle team's again
    assert dispatch.enqueue_runs({r.id: leases.Publish.of(r) for r in backlog}) == 2
    assert run_ids(3) == sorted(2 * [r.id for r in backlog])


def test_live_workers_and_their_queues(use_database, settings_env):
    settings_env("OPTIBENCH_LEASE_TIMEOUT_S", "60")
    settings = get_settings()
    names = [f"w{time.monotonic_ns()}@a", f"w{time.monotonic_ns()}@b"]
    with transaction() as session:
        workers.beat(session, names[0], ["q.cpu"], 1)
        workers.beat(session, names[1], ["q.cpu", "q.gpu"], 2)
        workers.beat(session, names[1], ["q.cpu", "q.gpu"], 2)  # a refresh, not a second row
    with transaction() as session:
        served = workers.live_queues(session, settings)
        assert (served["q.cpu"], served["q.gpu"]) == (2, 1)
        for name in names:
            workers.forget(session, name)
    with transaction() as session:
        assert workers.live_queues(session, settings)["q.cpu"] == 0
