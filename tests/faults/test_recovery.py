"""Recovery within a lease and fairness between teams, with real processes: the test's own Redis
(restarted empty) and PostgreSQL, the real API and a Celery worker. Each prints what it injected and
what it verified."""

from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest

from tests.faults.harness import REPO, injected, step_problems, verified, wait_until

LEASE_S = 5
WORKER_SETTINGS = {"torch_threads": 1, "flush_interval_s": 0.2, "checkpoint_interval_s": 0.5}


def _live_workers(api, queue: str) -> int:
    return api.readyz().json()["queues"][queue]["workers"]


@pytest.mark.fault_env(lease_timeout_s=LEASE_S, sweep_interval_s=0.5, **WORKER_SETTINGS)
def test_runs_lost_with_redis_are_published_again_within_two_leases(fault_env, quadratic_spec):
    """OPTIBENCH_REPUBLISH_AFTER_S stays at its 900 s default: only the broker check can bring them back."""
    quadratic_spec["training"]["steps"] = 4_000
    quadratic_spec["optimizers"] += [{"name": "rmsprop", "params": {"lr": 0.01}}]
    quadratic_spec["reuse"] = False
    api = fault_env.start_api()
    queue = f"{fault_env.queue}.cpu"
    assert _live_workers(api, queue) == 0
    worker = fault_env.start_worker()
    wait_until(lambda: _live_workers(api, queue) == 1, 10, "/readyz to count the worker")
    verified(f"/readyz counts the worker on {queue}: {api.readyz().json()['queues']}")

    comparison_id = fault_env.submit(quadratic_spec)
    wait_until(lambda: any(r["steps_done"] > 1000 for r in fault_env.run_rows(comparison_id)), 120, "a run under way")
    queued = [r["id"] for r in fault_env.run_rows(comparison_id) if r["status"] == "queued"]
    assert queued, "every run started before the restart; the test needs queued ones"
    injected(f"redis-server restarted empty (no persistence) with {len(queued)} runs queued")
    fault_env.redis.restart(downtime_s=1)
    restarted = time.monotonic()

    # at most a lease for the runs to count as published a while ago, then a sweep sees them lost
    republished = wait_until(
        lambda: "whose message the broker had lost" in api.log() + worker.log() and time.monotonic(),
        2 * LEASE_S + 5,
        "the lost runs published again",
    )
    body = fault_env.wait_for_comparison(comparison_id, timeout=120)
    assert body["status"] == "succeeded", body
    for run in body["runs"]:
        assert step_problems(fault_env.step_rows(run["id"]), expected=run["steps_total"]) == []
    verified(
        f"the lost runs were published again {republished - restarted:.1f} s after the restart (lease "
        f"{LEASE_S} s, OPTIBENCH_REPUBLISH_AFTER_S 900 s); the job succeeded with every step once"
    )

    worker.terminate()
    assert _live_workers(api, queue) == 0
    verified("a worker's clean shutdown removes it from /readyz at once")


def _team_key(fault_env, name: str) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "optibench.cli", "admin", "create-team", name],
        env=fault_env.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


@pytest.mark.fault_env(auth="required", secret_key="Zq8vR2mX4kLp9wT7nB3cY6hJ1sD5fG0aE8uI2oP4", **WORKER_SETTINGS)
def test_a_teams_backlog_does_not_starve_another_team(fault_env, quadratic_spec):
    api = fault_env.start_api()
    keys = {team: _team_key(fault_env, f"team-{team}") for team in "AB"}
    backlog = copy.deepcopy(quadratic_spec) | {
        "optimizers": [{"name": "adam", "params": {"lr": 0.01}}],
        "seeds": [0],
        "reuse": False,
    }
    backlog["training"] = {"steps": 3_000}
    small = copy.deepcopy(backlog) | {"name": "team A's small job", "training": {"steps": 50}}
    with api.client() as client:

        def submit(team: str, spec: dict) -> str:
            response = client.post("/api/v1/comparisons", json=spec, headers={"Authorization": f"Bearer {keys[team]}"})
            assert response.status_code == 202, response.text
            return response.json()["id"]

        b_ids = [submit("B", backlog | {"name": f"team B's job {i}"}) for i in range(30)]
        fault_env.start_worker()
        wait_until(lambda: any(r["status"] != "queued" for r in fault_env.run_rows(b_ids[0])), 60, "team B's first job")
        injected("team B has 30 comparisons queued or running on the one worker; team A submits one small job")
        submitted = time.monotonic()
        a_id = submit("A", small)
        wait_until(lambda: fault_env.run_rows(a_id)[0]["status"] == "succeeded", 30, "team A's job", interval=0.1)
        waited = time.monotonic() - submitted
    b_done = sum(fault_env.run_rows(b)[0]["status"] == "succeeded" for b in b_ids)
    assert b_done <= 3, f"team A's job waited for {b_done} of team B's jobs"
    assert waited < 15, waited
    verified(f"team A's job finished {waited:.1f} s after its submit, after {b_done} of team B's 30 jobs")
