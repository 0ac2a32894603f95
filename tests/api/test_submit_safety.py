"""Submits are sized and all-or-nothing (issue 19, parts 2 and 3): a spec whose runs would not fit a
worker's memory budget is refused from arithmetic alone, fast and without allocating; lax JSON types,
unbounded work and a model that cannot take the data are refused at their field; nothing is stored
for any of them; a submit that breaks after storing fails its comparison instead of leaving it queued."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

BASE = "/api/v1/comparisons"
REPO = Path(__file__).resolve().parents[2]


def dataset_spec(model: dict, dataset: dict, loss: str = "mse_sum", **overrides) -> dict:
    spec = {
        "name": "sizing",
        "problem": {"model": model, "dataset": dataset, "loss": loss},
        "training": {"epochs": 1, "batch_size": 64},
        "optimizers": [{"name": "adam", "params": {"lr": 0.001}}],
        "seeds": [0],
    }
    return spec | overrides


def regression(n_samples: int = 64, n_features: int = 1000) -> dict:
    return {"name": "synthetic_regression", "params": {"n_samples": n_samples, "n_features": n_features}}


def mlp(hidden: list[int]) -> dict:
    return {"name": "mlp", "params": {"hidden": hidden}}


BOMBS = {
    "mlp [50000, 50000]": (dataset_spec(mlp([50000, 50000]), regression()), ["problem", "model", "params", "hidden"]),
    "mlp [65536, 65536] float64": (
        dataset_spec(mlp([65536, 65536]), regression(), dtype="float64"),
        ["problem", "model", "params", "hidden"],
    ),
    "mlp [65536] x 16": (dataset_spec(mlp([65536] * 16), regression()), ["problem", "model", "params", "hidden"]),
    "cnn 4096 channels, kernel 15": (
        dataset_spec(
            {"name": "cnn", "params": {"channels": [4096, 4096], "kernel_size": 15}},
            {"name": "digits", "params": {"as_images": True}},
            loss="cross_entropy",
        ),
        ["problem", "model", "params", "channels"],
    ),
    "data 1e6 x 1e5": (
        dataset_spec({"name": "linear", "params": {}}, regression(1_000_000, 100_000)),
        ["problem", "dataset", "params", "n_samples"],
    ),
}
#: within the default 4 GiB budget, but 200k x 1000 used to be built in the API (13 s for two seeds)
LARGE_BUT_FITS = dataset_spec(
    mlp([100]), regression(200_000, 1000), seeds=[0, 1], training={"epochs": 1, "batch_size": 1000}
)

_PROBE = r"""
import json, resource, sys, time
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from api.main import create_app
from db.migrate import upgrade
from db.models import Comparison, Run
from db.session import transaction
from optibench.settings import get_settings

upgrade(get_settings().database_url)
probes = json.load(sys.stdin)

def rows():
    with transaction() as session:
        return [session.scalar(select(func.count()).select_from(t)) for t in (Comparison, Run)]

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

results = {}
with TestClient(create_app()) as client:
    # warm up every code path first (imports, registry discovery, a refusal, an accepted submit)
    for spec in (probes["warm_refused"], probes["warm_accepted"]):
        client.post("/api/v1/comparisons", json=spec)
    for name, spec in probes["specs"].items():
        stored, peak_before, times = rows(), peak(), []
        for _ in range(1 if name == "fits" else 3):
            start = time.perf_counter()
            response = client.post("/api/v1/comparisons", json=spec)
            times.append(time.perf_counter() - start)
        results[name] = {"status": response.status_code, "body": response.json(), "seconds": min(times),
                         "rss_growth": peak() - peak_before, "stored": [a - b for a, b in zip(rows(), stored)]}
print(json.dumps(results))
"""


def test_memory_bombs_are_refused_fast_without_allocating_and_nothing_is_stored(tmp_path):
    """In a fresh API process (its peak RSS is its own): each refusal in under 50 ms, with the field
    that drives the estimate; the process's peak RSS does not grow; no row is written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIBENCH_")}
    env["OPTIBENCH_DATA_DIR"] = str(tmp_path)
    probes = {
        "warm_refused": BOMBS["data 1e6 x 1e5"][0],
        "warm_accepted": dataset_spec(mlp([10]), regression(64, 10)),
        "specs": {name: spec for name, (spec, _) in BOMBS.items()} | {"fits": LARGE_BUT_FITS},
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        input=json.dumps(probes),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (_, loc) in BOMBS.items():
        result = results[name]
        assert result["status"] == 422, (name, result["body"])
        [error] = result["body"]["detail"]
        assert error["loc"] == ["body", *loc], name
        assert "over the worker memory budget of 4.0 GiB" in error["msg"] and "GiB" in error["msg"].split("needs")[1]
        assert result["seconds"] < 0.050, (name, result["seconds"])
        assert result["rss_growth"] < 32 * 1024**2, (name, result["rss_growth"])
        assert result["stored"] == [0, 0], name
    fits = results["fits"]
    assert fits["status"] == 202, fits["body"]
    assert fits["stored"] == [1, 2]
    assert fits["seconds"] < 2.0  # no data built: it took 13 s; 200k x 1000 float32 alone is 800 MB
    assert fits["rss_growth"] < 64 * 1024**2


# --- in-process: one API on the embedded default ---------------------------------------------------


@pytest.fixture(scope="module")
def client():
    assert "OPTIBENCH_DATABASE_URL" not in os.environ
    from db.migrate import upgrade
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()
    from api.main import create_app

    upgrade(get_settings().database_url)
    with TestClient(create_app()) as test_client:
        yield test_client
    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()


def stored_rows() -> tuple[int, int]:
    from db.models import Comparison, Run
    from db.session import transaction

    with transaction() as session:
        return tuple(session.scalar(select(func.count()).select_from(table)) for table in (Comparison, Run))


def refused(client, spec: dict) -> list[dict]:
    """POST a spec that must be refused: 422, and nothing stored. Its errors."""
    before = stored_rows()
    response = client.post(BASE, json=spec)
    assert response.status_code == 422, response.text
    assert stored_rows() == before
    return response.json()["detail"]


SMALL = dataset_spec(mlp([8]), regression(32, 4))


def _with(spec: dict, path: tuple, value) -> dict:
    spec = copy.deepcopy(spec)
    where = spec
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("training", "epochs"), True),
        (("training", "epochs"), "3"),
        (("training", "batch_size"), "64"),
        (("training", "batch_size"), False),
        (("training", "shuffle"), 1),
        (("training", "shuffle"), "true"),
        (("training", "eval_every"), True),
        (("seeds",), [True]),
        (("seeds",), ["1"]),
        (("target_loss",), "0.5"),
        (("reuse",), 0),
        (("problem", "validation_fraction"), "0.1"),
        (("problem", "split_seed"), False),
        (("problem", "standardize"), "false"),
        (("problem", "model", "params", "hidden"), [True]),
        (("problem", "model", "params", "bias"), 1),
        (("problem", "dataset", "params", "n_samples"), "32"),
        (("problem", "dataset", "params", "n_features"), True),
        (("optimizers", 0, "params", "lr"), "0.1"),
        (("optimizers", 0, "params", "lr"), True),
        (("optimizers", 0, "params", "betas"), [0.9, "0.99"]),
        (("optimizers", 0, "params", "amsgrad"), "yes"),
        (("optimizers", 0, "batch_size"), "16"),
    ],
)
def test_lax_json_types_are_refused_at_their_field(client, path, value):
    [error] = refused(client, _with(SMALL, path, value))
    index = [i for i, item in enumerate(value) if isinstance(item, (str, bool))] if isinstance(value, list) else []
    assert error["loc"] == ["body", *path, *index] and error["type"] == "strict_type", error


def test_a_lax_value_is_refused_beside_the_specs_other_errors(client):
    """The form shows every bad field at once: a strict-type refusal does not hide the others."""
    spec = _with(_with(_with(SMALL, ("name",), ""), ("seeds",), [0, "x"]), ("optimizers", 0, "params", "lr"), -1)
    errors = {tuple(error["loc"]): error["type"] for error in refused(client, spec)}
    assert errors == {
        ("body", "name"): "string_too_short",
        ("body", "seeds", 1): "strict_type",
        ("body", "optimizers", 0, "params", "lr"): "greater_than",
    }


def test_strict_types_still_take_an_integer_for_a_float_and_a_steps_budget(client):
    spec = _with(_with(SMALL, ("optimizers", 0, "params", "lr"), 1), ("training",), {"steps": 3})
    response = client.post(BASE, json=spec)
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["optimizers"][0]["params"]["lr"] == 1.0


def test_steps_true_and_lr_string_are_refused_on_function_problems_and_schedules(client):
    function = {
        "name": "f",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": True},
        "optimizers": [{"name": "sgd", "params": {"lr": "0.1"}, "schedule": {"name": "step", "step_size": "10"}}],
    }
    locs = {tuple(error["loc"]) for error in refused(client, function)}
    assert ("body", "training", "steps") in locs
    assert ("body", "optimizers", 0, "params", "lr") in locs
    assert ("body", "optimizers", 0, "schedule", "step", "step_size") in locs


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_a_model_that_cannot_take_the_data_is_refused_before_storing(client, seeds):
    """cnn on a table (iris) used to answer 500 after storing, with three seeds, and stay queued."""
    spec = dataset_spec(
        {"name": "cnn", "params": {}}, {"name": "iris", "params": {}}, loss="cross_entropy", seeds=seeds
    )
    [error] = refused(client, spec)
    assert error["loc"] == ["body", "problem", "model", "name"]
    assert "rank 2 or 3" in error["msg"] and "iris" in error["msg"] and "(4,)" in error["msg"]


@pytest.mark.parametrize(("param", "value"), [("max_iter", 1001), ("history_size", 1001)])
def test_lbfgs_work_per_step_is_bounded(client, param, value):
    spec = _with(SMALL, ("optimizers",), [{"name": "lbfgs", "params": {param: value}}])
    spec["training"] = {"steps": 3, "batch_size": "full"}
    [error] = refused(client, spec)
    assert error["loc"] == ["body", "optimizers", 0, "params", param] and error["type"] == "less_than_equal"


def test_the_budget_is_the_setting_and_the_refusal_names_the_largest_part(client, settings_env):
    """A 64 MiB budget refuses what 4 GiB takes; a huge full batch is the batch size's fault."""
    spec = dataset_spec(mlp([256]), regression(20_000, 200), training={"epochs": 1, "batch_size": "full"})
    assert client.post(BASE, json=spec).status_code == 202
    settings_env("OPTIBENCH_WORKER_MEMORY_BYTES", str(64 * 1024**2))
    [error] = refused(client, spec)
    assert error["loc"] == ["body", "training", "batch_size"] and error["type"] == "memory_budget"
    assert "64.0 MiB" in error["msg"] and "activations" in error["msg"]


def test_a_transformer_too_wide_for_memory_is_refused_at_its_width(client):
    model = {"name": "transformer", "params": {"layers": 48, "heads": 16, "width": 8192}}
    spec = dataset_spec(model, {"name": "modular_arithmetic", "params": {"p": 11}}, loss="token_cross_entropy")
    [error] = refused(client, spec)
    assert error["loc"] == ["body", "problem", "model", "params", "width"] and error["type"] == "memory_budget"


def test_a_submit_that_breaks_after_storing_fails_its_comparison_with_the_reason(client, monkeypatch):
    """An unexpected error while dispatching (injected here) answers 500 only after marking the
    stored comparison failed, its runs saying why; nothing is left queued."""
    from worker import dispatch

    def broken(*args, **kwargs):
        raise RuntimeError("injected dispatch fault")

    monkeypatch.setattr(dispatch, "_publish", broken)
    lenient = TestClient(client.app, raise_server_exceptions=False)
    before = stored_rows()
    response = lenient.post(BASE, json=_with(SMALL, ("seeds",), [0, 1, 2]))
    assert response.status_code == 500
    assert "marked failed" in response.json()["detail"] and "injected dispatch fault" in response.json()["detail"]
    assert stored_rows() == (before[0] + 1, before[1] + 3)
    comparison_id = response.json()["detail"].split()[1]
    monkeypatch.undo()
    stored = client.get(f"{BASE}/{comparison_id}").json()
    assert stored["status"] == "failed"
    assert [run["status"] for run in stored["runs"]] == ["failed"] * 3
    assert all("injected dispatch fault" in run["error"] for run in stored["runs"])
