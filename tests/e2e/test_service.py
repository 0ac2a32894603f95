"""The service end to end, on both deployments: submit over HTTP, train on a real Celery worker,
read every step back."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time

import pytest

from tests.e2e.conftest import EXAMPLES, stop_service

pytestmark = pytest.mark.e2e


def _example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def _losses(client, run_id: str) -> list[float]:
    body = client.get(f"/api/v1/runs/{run_id}/steps").json()
    return [float(row["loss"]) for row in body["steps"]]


@pytest.fixture(scope="module")
def mlp_comparison(service):
    with service.client as client:
        response = client.post("/api/v1/comparisons", json=_example("mlp_adam_amsgrad.json"))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["progress"] == {"runs_total": 6, "runs_done": 0, "steps_total": 3000, "steps_done": 0}
    return service.wait_for(accepted["id"])


def test_reference_example_finishes_with_every_step_stored(service, mlp_comparison):
    assert mlp_comparison["status"] == "succeeded"
    assert mlp_comparison["progress"] == {"runs_total": 6, "runs_done": 6, "steps_total": 3000, "steps_done": 3000}
    assert mlp_comparison["finished_at"] is not None
    with service.client as client:
        for run in mlp_comparison["runs"]:
            assert run["status"] == "succeeded" and run["steps_done"] == run["steps_total"] == 500
            assert run["final_loss"] is not None and run["wall_time_s"] > 0
            steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
            # 500 epochs x 1 batch of 64: one row per update, in order, counted from 0
            assert [row["step"] for row in steps] == list(range(500))
            assert [row["epoch"] for row in steps] == list(range(500))
            times = [row["time_s"] for row in steps]
            assert all(b >= a for a, b in zip(times, times[1:])) and all(row["step_time_ms"] > 0 for row in steps)
            assert all(row["lr"] == run["optimizer"]["params"]["lr"] for row in steps)


def test_runs_are_paired_step_zero_equal_across_optimizers(service, mlp_comparison):
    with service.client as client:
        first = {(r["label"], r["seed"]): _losses(client, r["id"])[0] for r in mlp_comparison["runs"]}
    for seed in (0, 1, 2):
        assert first[("adam", seed)] == first[("plain sgd", seed)]
    assert len({first[("adam", seed)] for seed in (0, 1, 2)}) == 3


def test_adam_loss_falls(service, mlp_comparison):
    with service.client as client:
        for run in mlp_comparison["runs"]:
            if run["label"] == "adam":
                losses = _losses(client, run["id"])
                assert losses[-1] < 0.01 * losses[0]
                assert run["best_loss"] <= min(losses)


def test_steps_as_csv(service, mlp_comparison):
    run = mlp_comparison["runs"][0]
    with service.client as client:
        response = client.get(f"/api/v1/runs/{run['id']}/steps", params={"format": "csv"})
        as_json = _losses(client, run["id"])
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 500
    assert [float(r["loss"]) for r in rows] == as_json


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        (("optimizers", 0, "name"), "adamm", ["body", "optimizers", 0, "name"]),
        (("optimizers", 0, "params", "lr"), -1, ["body", "optimizers", 0, "params", "lr"]),
    ],
)
def test_invalid_spec_is_rejected_before_queueing(service, path, value, loc):
    spec = _example("mlp_adam_amsgrad.json")
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with service.client as client:
        before = client.get("/api/v1/comparisons").json()["items"]
        response = client.post("/api/v1/comparisons", json=spec)
        after = client.get("/api/v1/comparisons").json()["items"]
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]]
    assert len(after) == len(before)


def test_divergence_stops_only_that_run_and_keeps_the_infinite_loss(service):
    spec = {
        "name": "diverging sgd",
        "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "training": {"steps": 400},
        "optimizers": [{"name": "sgd", "params": {"lr": 1.5}}, {"name": "adam", "params": {"lr": 0.1}}],
        "seeds": [0],
    }
    with service.client as client:
        comparison = service.wait_for(client.post("/api/v1/comparisons", json=spec).json()["id"])
        runs = {r["label"]: r for r in comparison["runs"]}
        assert runs["adam"]["status"] == "succeeded" and runs["adam"]["steps_done"] == 400
        sgd = runs["sgd"]
        assert sgd["status"] == "diverged"
        steps = client.get(f"/api/v1/runs/{sgd['id']}/steps").json()["steps"]
        csv_rows = list(
            csv.DictReader(io.StringIO(client.get(f"/api/v1/runs/{sgd['id']}/steps", params={"format": "csv"}).text))
        )
    # x doubles in size every step with lr 1.5, so float32 overflows; the run stops at that step
    assert len(steps) == sgd["diverged_step"] + 1 == sgd["steps_done"] < 400
    assert steps[-1]["loss"] in ("Infinity", "NaN")
    assert all(isinstance(row["loss"], float) for row in steps[:-1])
    assert not math.isfinite(float(csv_rows[-1]["loss"]))
    assert steps[0]["x"] == [8.0] and float(csv_rows[0]["x0"]) == 8.0
    assert comparison["status"] == "succeeded"  # a diverged run is a result, not a failure


def test_same_spec_same_seed_gives_bitwise_identical_losses(service):
    spec = _example("adam_vs_sgd_quadratic.json") | {"seeds": [0, 7], "reuse": False}  # both must train
    with service.client as client:
        ids = [client.post("/api/v1/comparisons", json=spec).json()["id"] for _ in range(2)]
        first, second = (service.wait_for(i) for i in ids)
        for a, b in zip(first["runs"], second["runs"]):
            assert (a["label"], a["seed"]) == (b["label"], b["seed"])
            assert _losses(client, a["id"]) == _losses(client, b["id"])


def test_list_is_newest_first_and_readyz_reports_each_dependency(service):
    spec = _example("adam_vs_sgd_quadratic.json") | {"seeds": [0]}
    with service.client as client:
        posted = [client.post("/api/v1/comparisons", json=spec | {"name": f"listed {i}"}) for i in range(3)]
        submitted = [response.json()["id"] for response in posted]
        items = client.get("/api/v1/comparisons").json()["items"]
        service.wait_for(submitted[-1])  # a worker has trained it: readyz counts live workers
        ready = client.get("/readyz").json()
    created = [item["created_at"] for item in items]
    assert created == sorted(created, reverse=True)
    assert [item["id"] for item in items[:3]] == submitted[::-1]
    assert (ready["status"], ready["checks"]) == ("ok", {"database": "ok", "broker": "ok"})
    assert any(name.endswith(".cpu") and queue["workers"] >= 1 for name, queue in ready["queues"].items()), ready


def test_evaluations_and_extras_are_served(service):
    spec = {
        "name": "iris with evaluations",
        "problem": {
            "model": {"name": "linear"},
            "dataset": {"name": "iris"},
            "loss": "cross_entropy",
            "validation_fraction": 0.2,
        },
        "training": {"epochs": 10, "batch_size": 30, "eval_every": 8, "extras": ["grad_norm", "update_norm"]},
        "optimizers": [{"name": "adam", "params": {"lr": 0.05}, "schedule": {"name": "cosine"}}],
        "seeds": [0],
    }
    with service.client as client:
        comparison = service.wait_for(client.post("/api/v1/comparisons", json=spec).json()["id"])
        run = comparison["runs"][0]
        evals = client.get(f"/api/v1/runs/{run['id']}/evals").json()["evals"]
        steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
        header = client.get(f"/api/v1/runs/{run['id']}/steps", params={"format": "csv"}).text.splitlines()[0]
    assert run["status"] == "succeeded" and run["steps_total"] == 40  # 120 training rows / 30 per batch x 10 epochs
    assert [e["step"] for e in evals] == [0, 8, 16, 24, 32, 40]
    assert all(0 <= e["val_accuracy"] <= 1 and e["val_loss"] > 0 for e in evals)
    assert evals[-1]["train_loss"] == pytest.approx(run["final_loss"], rel=1e-12)
    assert all(row["grad_norm"] > 0 for row in steps)
    assert all(row["update_norm"] > 0 for row in steps[:-1]) and steps[-1]["update_norm"] == 0  # lr 0 at the end
    assert steps[0]["lr"] == 0.05 and steps[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0
    assert header == "step,epoch,loss,time_s,step_time_ms,lr,grad_norm,update_norm"


def test_a_transformer_learns_modular_arithmetic_on_a_real_worker(service):
    spec = {
        "name": "grokking, briefly",
        "problem": {
            "model": {"name": "transformer", "params": {"layers": 1, "heads": 2, "width": 16}},
            "dataset": {"name": "modular_arithmetic", "params": {"p": 7}},
            "loss": "token_cross_entropy",
            "validation_fraction": 0.3,
        },
        "training": {"steps": 20, "batch_size": "full", "eval_every": 10},
        "optimizers": [{"name": "adamw", "params": {"lr": 0.01}}, {"name": "sgd", "params": {"lr": 0.1}}],
        "seeds": [0],
    }
    with service.client as client:
        comparison = service.wait_for(client.post("/api/v1/comparisons", json=spec).json()["id"])
        evals = {r["id"]: client.get(f"/api/v1/runs/{r['id']}/evals").json()["evals"] for r in comparison["runs"]}
        datasets = client.get("/api/v1/catalog").json()["datasets"]
    dataset = next(d for d in datasets if d["name"] == "modular_arithmetic")
    assert comparison["status"] == "succeeded", comparison
    assert (dataset["validation_metric"], dataset["higher_is_better"]) == ("accuracy", True)
    for run in comparison["runs"]:
        assert run["status"] == "succeeded" and run["steps_done"] == 20 and run["wall_time_s"] > 0
        assert [e["step"] for e in evals[run["id"]]] == [0, 10, 20]
        assert all(0 <= e["val_accuracy"] <= 1 for e in evals[run["id"]])
    [adamw] = [evals[r["id"]] for r in comparison["runs"] if r["optimizer"]["name"] == "adamw"]
    assert adamw[-1]["train_loss"] < adamw[0]["train_loss"]  # 49 equations, vocabulary 9: it learns within 20 steps


def test_ctrl_c_stops_api_and_worker(service):
    code, workers = stop_service(service)
    assert code == 0, service.log.read_text()[-2000:]
    assert workers, "serve should have started a worker process"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in workers):
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
