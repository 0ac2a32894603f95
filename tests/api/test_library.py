"""pytorch-optimizer's classes against the runs the service stores: one comparison over HTTP holds the whole
sample of tests/engine/test_library.py (31 library optimizers across every family, including schedule-free,
Hessian-based and Muon), the worker's tasks train it in-process, and every stored step's loss and rate, and
each run's final loss, equal the library's class driven by a plain torch loop, on both databases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.optimizers.library import PREFIX
from tests.api.test_reuse import published  # noqa: F401  (the fixture)
from tests.engine.test_library import PROBLEM, SAMPLE, STEPS, _plain_run
from worker.celery_app import ENSEMBLE_TASK
from worker.tasks import train_ensemble_runs, train_run

BASE = "/api/v1/comparisons"
#: the seed the plain loops use (tests.engine.test_library._plain_run's default)
SEED = 0
#: the global generator's state before each run, which the worker's run must not depend on (it seeds the
#: generator with the run's seed: the Hutchinson probes of AdaHessian and Sophia-H draw from it)
OTHER_STATE = 1234


def test_the_stored_runs_of_library_optimizers_equal_their_classes_in_a_plain_loop(client, published) -> None:
    spec = {
        "name": "pytorch-optimizer against its own classes",
        "problem": PROBLEM,
        "training": {"steps": STEPS, "batch_size": "full"},
        "optimizers": [{"name": PREFIX + name, "params": params} for name, params in SAMPLE],
        "seeds": [SEED],
        "device": "cpu",
        "dtype": "float64",
    }
    response = client.post(BASE, json=spec)
    assert response.status_code == 202, response.text
    runs = {run["id"]: run for run in response.json()["runs"]}
    assert len(runs) == len(SAMPLE)
    for name, run_ids in published.tasks:
        torch.manual_seed(OTHER_STATE)
        if name == ENSEMBLE_TASK:
            assert set(train_ensemble_runs.apply(args=[run_ids]).get().values()) == {"succeeded"}
        else:
            [run_id] = run_ids
            assert train_run.apply(args=[run_id]).get() == "succeeded"
    assert sorted(run_id for _, ids in published.tasks for run_id in ids) == sorted(runs)

    by_name = {run["optimizer"]["name"]: run for run in runs.values()}
    for name, params in SAMPLE:
        run = by_name[PREFIX + name]
        steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
        torch.manual_seed(SEED)
        losses, rates, final, _, _ = _plain_run(name, params, SEED)
        assert len(steps) == STEPS, name
        np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-12, atol=0, err_msg=name)
        np.testing.assert_allclose([s["lr"] for s in steps], rates, rtol=1e-12, atol=0, err_msg=name)
        stored = client.get(f"/api/v1/runs/{run['id']}").json()
        assert stored["status"] == "succeeded", name
        assert stored["final_loss"] == pytest.approx(final, rel=1e-12, abs=0), name


def test_ranger21s_num_iterations_is_the_runs_steps_and_a_given_one_is_422_at_it(client, published) -> None:
    """The engine passes the run's total steps as Ranger21's num_iterations, so the catalogue lists it as fixed and
    a comparison that sets it is refused at that parameter, with nothing queued."""
    catalog = {entry["name"]: entry for entry in client.get("/api/v1/catalog").json()["optimizers"]}
    ranger21 = catalog[PREFIX + "ranger21"]
    assert "num_iterations" in ranger21["fixed"] and "num_iterations" not in [p["name"] for p in ranger21["params"]]
    spec = {
        "name": "ranger21 told its length",
        "problem": PROBLEM,
        "training": {"steps": STEPS, "batch_size": "full"},
        "optimizers": [{"name": PREFIX + "ranger21", "params": {"num_iterations": 1000}}],
        "device": "cpu",
    }
    response = client.post(BASE, json=spec)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "optimizers", 0, "params", "num_iterations"]
    assert published == []


def test_a2grads_stored_steps_have_no_rate(client, published) -> None:
    """A2Grad has no rate: its stored steps' lr is null (not NaN), like the rows of any column a run lacks."""
    spec = {
        "name": "a2grad's rate",
        "problem": PROBLEM,
        "training": {"steps": STEPS, "batch_size": "full"},
        "optimizers": [{"name": PREFIX + "a2grad", "params": {"lips": 100.0}}],
        "seeds": [SEED],
        "device": "cpu",
        "dtype": "float64",
    }
    response = client.post(BASE, json=spec)
    assert response.status_code == 202, response.text
    [run] = response.json()["runs"]
    assert train_run.apply(args=[run["id"]]).get() == "succeeded"
    steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    assert len(steps) == STEPS and [step["lr"] for step in steps] == [None] * STEPS
