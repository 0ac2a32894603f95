"""The memory budget in the worker (OPTIBENCH_WORKER_MEMORY_BYTES), through the Celery task on both
databases: a run over it fails with 'out of memory budget' before anything is built, allocations past
it fail inside the cap, and the cap is lifted after the run; a run cancelled while it is built stops
before its first step."""

from __future__ import annotations

import resource

import pytest
import torch
from sqlalchemy import func, select

from db import comparisons, leases
from db.models import Run, Step
from db.session import transaction
from engine.spec import ComparisonSpec
from worker import memory, tasks

BUDGET = 64 * 1024**2  # the smallest the setting takes


def _create(spec: dict) -> list[str]:
    spec = ComparisonSpec.model_validate(spec).model_dump(mode="json")
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, spec["training"]["steps"])
        return [run.id for run in comparison.runs]


def _mlp(hidden: list[int], steps: int = 5) -> dict:
    return {
        "name": "worker memory",
        "problem": {
            "model": {"name": "mlp", "params": {"hidden": hidden}},
            "dataset": {"name": "synthetic_regression", "params": {"n_samples": 64, "n_features": 100}},
            "loss": "mse_mean",
        },
        "training": {"steps": steps},
        "optimizers": [{"name": "adam", "params": {"lr": 0.001}}],
        "device": "cpu",
    }


def _run(run_id: str) -> Run:
    with transaction() as session:
        return session.get(Run, run_id)


def _step_count(run_id: str) -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Step).where(Step.run_id == run_id))


def test_a_run_over_the_budget_fails_before_anything_is_built(use_database, settings_env):
    """Accepted under a larger budget (stored directly here), then trained by a worker with 64 MiB:
    16.8 M parameters with Adam need about 256 MiB."""
    [run_id] = _create(_mlp([4096, 4096]))
    settings_env("OPTIBENCH_WORKER_MEMORY_BYTES", str(BUDGET))
    result = tasks.train_run.apply(args=[run_id])
    assert result.get() == "failed"
    run = _run(run_id)
    assert run.status == "failed" and run.steps_done == 0 and _step_count(run_id) == 0
    assert run.error.startswith("out of memory budget: the run needs about")
    assert "over the worker's budget of 64.0 MiB (OPTIBENCH_WORKER_MEMORY_BYTES)" in run.error


def test_a_run_within_the_budget_trains_under_the_cap_which_is_lifted_after(use_database, settings_env):
    [run_id] = _create(_mlp([16], steps=20))
    settings_env("OPTIBENCH_WORKER_MEMORY_BYTES", str(BUDGET))
    before = resource.getrlimit(resource.RLIMIT_DATA)
    assert tasks.train_run.apply(args=[run_id]).get() == "succeeded"
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert _step_count(run_id) == 20


def test_the_cap_fails_an_allocation_past_the_budget_with_the_budget_in_the_error():
    before = resource.getrlimit(resource.RLIMIT_DATA)
    too_much = (BUDGET + memory.RUNTIME_HEADROOM_BYTES) * 2
    with memory.data_limit(BUDGET):
        assert resource.getrlimit(resource.RLIMIT_DATA) != before
        with pytest.raises(RuntimeError) as caught:
            torch.empty(too_much // 4, dtype=torch.float32).fill_(1.0)
        torch.ones(1024, 1024).sum()  # small allocations still work: the process is fine
    error = memory.allocation_failure(caught.value, BUDGET)
    assert error.startswith("out of memory budget: an allocation failed within the worker's budget of 64.0 MiB")
    assert memory.allocation_failure(ValueError("bad shape"), BUDGET) is None
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    torch.empty(too_much // 4, dtype=torch.float32)  # and after it, the same allocation is allowed


def test_a_run_cancelled_while_it_is_built_stops_before_its_first_step(use_database):
    """The cancel lands after the worker claimed the run, while it loads the data and builds the
    model: it stops before training, with no step written, and stays cancelled."""
    [run_id] = _create(_mlp([16], steps=50))
    with transaction() as session:
        claim = leases.claim_run(session, run_id, lease_timeout_s=60)
    with transaction() as session:
        assert leases.cancel(session, run_id=run_id) == [run_id]
    assert tasks._train_claimed(claim, tasks._writer(claim)) == "cancelled"
    run = _run(run_id)
    assert run.status == "cancelled" and _step_count(run_id) == 0 and run.steps_done == 0
