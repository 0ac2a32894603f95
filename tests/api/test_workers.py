"""/readyz counts the live workers of each queue, and a queued run on a queue no live worker consumes
(a 'cuda' run without a GPU worker) says it waits for one, through HTTP on both databases."""

from __future__ import annotations

import uuid

import pytest

from db import workers
from db.session import transaction
from optibench.settings import get_settings


def _spec(device: str) -> dict:
    return {
        "name": f"waits on {device}",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [{"name": "sgd"}],
        "seeds": [0],
        "device": device,
    }


@pytest.fixture
def cpu_worker(use_database):
    """A live worker row consuming only the cpu queue, as a CPU-only deployment's worker writes it."""
    hostname = f"cpu-{uuid.uuid4().hex[:8]}@test"
    with transaction() as session:
        workers.beat(session, hostname, [get_settings().queue_for("cpu")], 1)
    yield hostname
    with transaction() as session:
        workers.forget(session, hostname)


def test_readyz_counts_the_workers_of_each_queue(client, cpu_worker):
    settings = get_settings()
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    queues = response.json()["queues"]
    assert queues[settings.queue_for("cpu")]["workers"] >= 1
    assert queues[settings.queue_for("cuda")] == {"workers": 0}  # reported, not a 503
    with transaction() as session:
        workers.forget(session, cpu_worker)
    assert (
        client.get("/readyz").json()["queues"][settings.queue_for("cpu")]["workers"]
        == queues[settings.queue_for("cpu")]["workers"] - 1
    )


def test_a_cuda_run_without_a_gpu_worker_says_it_waits(client, cpu_worker):
    gpu_queue = get_settings().queue_for("cuda")
    submitted = client.post("/api/v1/comparisons", json=_spec("cuda"))
    assert submitted.status_code == 202, submitted.text
    for body in (submitted.json(), client.get(f"/api/v1/comparisons/{submitted.json()['id']}").json()):
        assert gpu_queue in body["waiting"] and "optibench worker --gpus all" in body["waiting"]
        assert all(gpu_queue in run["waiting"] for run in body["runs"])
    run = client.get(f"/api/v1/runs/{submitted.json()['runs'][0]['id']}").json()
    assert gpu_queue in run["waiting"]

    on_cpu = client.post("/api/v1/comparisons", json=_spec("cpu")).json()
    assert on_cpu["waiting"] is None and on_cpu["runs"][0]["waiting"] is None


def test_a_run_that_is_not_queued_waits_for_nothing(client):
    submitted = client.post("/api/v1/comparisons", json=_spec("cuda")).json()
    cancelled = client.post(f"/api/v1/comparisons/{submitted['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    body = client.get(f"/api/v1/comparisons/{submitted['id']}").json()
    assert body["status"] == "cancelled" and body["waiting"] is None
    assert body["runs"][0]["waiting"] is None


def test_a_submit_counts_every_live_worker_with_its_limit_check(client, cpu_worker):
    """The live workers come with the team's count in one statement: one row per worker, every one counted."""
    from db import teams
    from db.models import LOCAL_TEAM_ID

    settings = get_settings()
    cpu, cuda = settings.queue_for("cpu"), settings.queue_for("cuda")
    gpu_worker = f"gpu-{uuid.uuid4().hex[:8]}@test"
    with transaction() as session:
        workers.beat(session, gpu_worker, [cpu, cuda], 2)
    try:
        submitted = client.post("/api/v1/comparisons", json=_spec("cuda"))
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["waiting"] is None and submitted.json()["runs"][0]["waiting"] is None
        with transaction() as session:
            backlog, served = teams.check_submit_limits(session, LOCAL_TEAM_ID, settings, [5])
            assert served == workers.live_queues(session, settings)
            assert served[cpu] >= 2 and served[cuda] >= 1
            assert backlog >= 1  # the comparison just submitted is queued
    finally:
        with transaction() as session:
            workers.forget(session, gpu_worker)
