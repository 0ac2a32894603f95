"""Fault tests with real processes: the test's own Redis and PostgreSQL, the real API and Celery
workers, killed and restarted mid-job. Each prints what it injected and what it verified."""

from __future__ import annotations

import copy

import pytest
import torch

from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.training import train
from tests.faults.harness import GiveUp, injected, step_problems, verified, wait_until

# Long enough to be killed mid-run five times; deterministic on the CPU.
MLP_SPEC = {
    "name": "faults: mlp on digits",
    "problem": {
        "model": {"name": "mlp", "params": {"hidden": [128, 128]}},
        "dataset": {"name": "digits"},
        "loss": "cross_entropy",
        "validation_fraction": 0.2,
    },
    "training": {"epochs": 40, "batch_size": 32},
    "optimizers": [
        {"name": "adam", "params": {"lr": 0.001, "amsgrad": True}},
        {"name": "sgd", "params": {"lr": 0.05, "momentum": 0.9}},
    ],
    "seeds": [0],
    "device": "cpu",
}
WORKER_SETTINGS = {"torch_threads": 1, "flush_interval_s": 0.2, "checkpoint_interval_s": 0.5}


def _uninterrupted_losses(spec: dict) -> dict[str, list[float]]:
    """Each run's losses from the engine alone, with the workers' thread count."""
    parsed = ComparisonSpec.model_validate(spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_SETTINGS["torch_threads"])
    try:
        losses = {}
        for i, entry in enumerate(parsed.optimizers):
            batches = []
            train(parsed, i, parsed.seeds[0], lambda b: batches.append(b) or True, total_steps=steps_total(parsed, i))
            losses[entry.label] = [float(x) for b in batches for x in b.loss]
        return losses
    finally:
        torch.set_num_threads(threads)


def _check_rows(fault_env, body: dict, reference: dict[str, list[float]] | None = None) -> None:
    for run in body["runs"]:
        rows = fault_env.step_rows(run["id"])
        assert step_problems(rows, expected=run["steps_total"]) == [], (
            run["label"],
            step_problems(rows, run["steps_total"]),
        )
        if reference is not None:
            assert [loss for _, loss in rows] == reference[run["label"]], f"{run['label']}: losses differ"


@pytest.mark.fault_env(lease_timeout_s=3, sweep_interval_s=0.5, max_attempts=20, **WORKER_SETTINGS)
def test_worker_sigkill_five_times(fault_env):
    spec = copy.deepcopy(MLP_SPEC)
    # A worker trains on for a flush and a poll after it has made the progress awaited: up to ~1,000
    # steps a kill on a fast machine. Three times 40 epochs keeps the five kills well inside the job.
    spec["training"]["epochs"] = 120
    reference = _uninterrupted_losses(spec)
    fault_env.start_api()
    comparison_id = fault_env.submit(spec)
    total = sum(r["steps_total"] for r in fault_env.comparison(comparison_id)["runs"])

    def steps_done() -> int:
        return sum(r["steps_done"] for r in fault_env.run_rows(comparison_id))

    def progressed(since: int) -> bool:
        done = steps_done()
        if done > total - 150:
            raise GiveUp(f"{done}/{total} steps done: too few left to kill the worker mid-run; make the job longer")
        return done >= since + 150

    for kill in range(1, 6):
        worker = fault_env.start_worker()
        before = steps_done()
        wait_until(lambda: progressed(before), 120, f"progress before kill {kill}", interval=0.05)
        done = steps_done()
        worker.sigkill()
        injected(f"kill {kill}/5: SIGKILL to the worker mid-run at {done}/{total} steps")
        assert done < total, "the job finished before the kill; make it longer"

    fault_env.start_worker()
    body = fault_env.wait_for_comparison(comparison_id, timeout=240)
    assert body["status"] == "succeeded", body
    _check_rows(fault_env, body, reference)
    attempts = {r["label"]: r["attempt"] for r in body["runs"]}
    assert sum(attempts.values()) >= 2 + 5, attempts  # every kill cost its run one attempt
    verified(
        f"comparison succeeded after 5 SIGKILLs (attempts {attempts}); every run has steps "
        "0..n-1 exactly once, and its losses equal an uninterrupted run's bit for bit"
    )


@pytest.mark.fault_env(sweep_interval_s=0.5, republish_after_s=5, **WORKER_SETTINGS)
def test_redis_restart_mid_job(fault_env, quadratic_spec):
    quadratic_spec["training"]["steps"] = 20_000
    fault_env.start_api()
    fault_env.start_worker()
    comparison_id = fault_env.submit(quadratic_spec)
    wait_until(lambda: any(r["steps_done"] > 1000 for r in fault_env.run_rows(comparison_id)), 120, "a run under way")
    injected(f"redis-server :{fault_env.redis.port} stopped for 2 s and started empty (no persistence) mid-job")
    fault_env.redis.restart(downtime_s=2)
    body = fault_env.wait_for_comparison(comparison_id, timeout=240)
    assert body["status"] == "succeeded", body
    _check_rows(fault_env, body)
    verified(f"the job finished: {len(body['runs'])} runs succeeded, steps complete, no duplicates")


@pytest.mark.fault_env(sweep_interval_s=0.5, **WORKER_SETTINGS)
def test_submit_while_the_broker_is_down(fault_env, quadratic_spec):
    api = fault_env.start_api()
    fault_env.redis.stop()
    injected("redis-server stopped before the submit")
    response = api.client().post("/api/v1/comparisons", json=quadratic_spec)
    assert response.status_code == 202, response.text
    comparison_id = response.json()["id"]
    assert all(r["status"] == "queued" for r in fault_env.run_rows(comparison_id))
    verified("the submit committed: 202 with every run queued, in the outbox")
    fault_env.redis.start()
    fault_env.start_worker()
    body = fault_env.wait_for_comparison(comparison_id, timeout=120)
    assert body["status"] == "succeeded", body
    _check_rows(fault_env, body)
    verified("once Redis was back the outbox published every run and the job finished")


@pytest.mark.fault_env(sweep_interval_s=0.5, **WORKER_SETTINGS)
def test_postgres_restart_mid_job(fault_env):
    spec = copy.deepcopy(MLP_SPEC)
    reference = _uninterrupted_losses(spec)
    api = fault_env.start_api()
    fault_env.start_worker()
    comparison_id = fault_env.submit(spec)
    wait_until(lambda: any(r["steps_done"] > 200 for r in fault_env.run_rows(comparison_id)), 120, "a run under way")

    injected(f"PostgreSQL :{fault_env.postgres.port} stopped (fast) mid-job for ~4 s")
    fault_env.postgres.stop("fast")
    during = wait_until(
        lambda: (r := api.get(f"/api/v1/comparisons/{comparison_id}")).status_code == 503 and r,
        20,
        "503 while the database is down",
    )
    assert during.headers["Retry-After"].isdigit()
    assert api.get("/api/v1/comparisons").status_code == 503
    assert api.client().post("/api/v1/comparisons", json=spec).status_code == 503
    verified(f"meanwhile the API answers 503 with Retry-After {during.headers['Retry-After']}: {during.json()}")
    fault_env.postgres.start()

    body = fault_env.wait_for_comparison(comparison_id, timeout=240)
    assert body["status"] == "succeeded", body
    _check_rows(fault_env, body, reference)
    verified("the job finished with every step row, none duplicated, losses equal an uninterrupted run's")
