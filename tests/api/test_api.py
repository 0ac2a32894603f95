"""The HTTP API in-process on the embedded default (SQLite file under OPTIBENCH_DATA_DIR, SQLite
broker): submit, validation errors with field paths, limits, reads, pagination, catalogue, docs.
Published tasks land in the embedded broker; nothing consumes them here."""

from __future__ import annotations

import copy
import csv
import io
import json
import os

import pytest
from fastapi.testclient import TestClient

from engine import registry

BASE = "/api/v1/comparisons"


def _clear_caches() -> None:
    from db.session import _factory, get_engine
    from optibench.settings import get_settings

    for cached in (get_settings, get_engine, _factory):
        cached.cache_clear()


@pytest.fixture(scope="module")
def client():
    # other modules' fixtures may have left the cached engine pointing elsewhere: start clean
    assert "OPTIBENCH_DATABASE_URL" not in os.environ
    _clear_caches()
    from api.main import create_app
    from db.migrate import upgrade
    from optibench.settings import get_settings

    settings = get_settings()
    assert settings.database_url.startswith("sqlite:///") and settings.embedded_broker
    upgrade(settings.database_url)
    with TestClient(create_app()) as test_client:
        yield test_client
    _clear_caches()


@pytest.fixture(scope="module")
def lenient_client(client):
    """Answers a server error with 500 instead of raising it in the test."""
    return TestClient(client.app, raise_server_exceptions=False)


def function_spec(**overrides) -> dict:
    spec = {
        "name": "api quadratic",
        "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "training": {"steps": 30},
        "optimizers": [{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.05}}],
        "seeds": [0, 3],
    }
    return spec | overrides


def dataset_spec(**overrides) -> dict:
    spec = {
        "name": "api regression",
        "problem": {
            "model": {"name": "linear", "params": {}},
            "dataset": {"name": "synthetic_regression", "params": {"n_samples": 40, "n_features": 3, "n_targets": 2}},
            "loss": "mse_mean",
        },
        "training": {"epochs": 3, "batch_size": 16},
        "optimizers": [{"name": "sgd", "params": {"lr": 0.01}}],
        "seeds": [0],
    }
    return spec | overrides


def _defaults(kind: str, name: str) -> dict:
    return registry.get(kind, name).Params().model_dump(mode="json")


def _locs(response) -> list[list]:
    return [error["loc"] for error in response.json()["detail"]]


# --- submit --------------------------------------------------------------------------------------


def test_submit_returns_the_normalised_spec_and_one_queued_run_per_optimizer_and_seed(client):
    sent = function_spec(tags=["api"])
    sent["optimizers"][1]["label"] = "plain sgd"
    response = client.post(BASE, json=sent)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["name"] == "api quadratic" and body["status"] == "queued" and body["finished_at"] is None
    assert body["tags"] == ["api"]

    spec = body["spec"]
    adam, sgd = spec["optimizers"]
    assert adam["params"] == _defaults("optimizer", "adam") | {"lr": 0.1}
    assert adam["params"]["betas"] == [0.9, 0.999] and adam["params"]["eps"] == 1e-8
    assert adam["params"]["amsgrad"] is False and adam["params"]["weight_decay"] == 0.0
    assert sgd["params"] == _defaults("optimizer", "sgd") | {"lr": 0.05}
    assert sgd["params"]["momentum"] == 0.0 and sgd["params"]["nesterov"] is False
    assert (adam["label"], sgd["label"]) == ("adam", "plain sgd")
    assert spec["training"]["steps"] == 30 and spec["training"]["epochs"] is None
    assert spec["training"]["shuffle"] is True and spec["training"]["batch_size"] == "full"
    assert spec["training"]["drop_last"] is False
    assert spec["problem"]["function"]["params"] == _defaults("function", "quadratic") | {"center": [2.0]}
    assert spec["problem"]["x0"] == [8.0]
    assert (spec["device"], spec["dtype"], spec["seeds"], spec["tags"]) == ("auto", "float32", [0, 3], ["api"])

    runs = body["runs"]
    assert [(r["label"], r["seed"]) for r in runs] == [("adam", 0), ("adam", 3), ("plain sgd", 0), ("plain sgd", 3)]
    for run, entry in zip(runs, [adam, adam, sgd, sgd]):
        assert run["comparison_id"] == body["id"]
        assert run["status"] == "queued" and run["attempt"] == 0
        assert (run["steps_done"], run["steps_total"]) == (0, 30)
        assert run["optimizer"] == {"name": entry["name"], "params": entry["params"]}
        assert run["final_loss"] is None and run["started_at"] is None
    assert len({r["id"] for r in runs}) == 4
    assert body["progress"] == {"runs_total": 4, "runs_done": 0, "steps_total": 120, "steps_done": 0}

    # what was stored is what was answered
    stored = client.get(f"{BASE}/{body['id']}")
    assert stored.status_code == 200
    assert stored.json()["spec"] == spec and stored.json()["runs"] == runs
    for run in runs:
        one = client.get(f"/api/v1/runs/{run['id']}")
        assert one.status_code == 200 and one.json() == run


def test_submit_fills_in_defaults_of_omitted_params(client):
    """Every component's params are normalised, also where the request leaves 'params' out."""
    sent = {
        "name": "omitted params",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [{"name": "adam"}, {"name": "sgd"}],
    }
    response = client.post(BASE, json=sent)
    assert response.status_code == 202, response.text
    body = response.json()
    spec = body["spec"]
    assert spec["optimizers"][0]["params"] == _defaults("optimizer", "adam")
    assert spec["optimizers"][0]["params"]["betas"] == [0.9, 0.999]
    assert spec["optimizers"][1]["params"] == _defaults("optimizer", "sgd")
    assert spec["problem"]["function"]["params"] == _defaults("function", "quadratic")
    assert spec["problem"]["x0"] == [6.0]
    assert body["runs"][0]["optimizer"]["params"] == _defaults("optimizer", "adam")


def test_submit_dataset_problem_counts_steps_from_epochs_and_batches(client):
    response = client.post(BASE, json=dataset_spec())
    assert response.status_code == 202, response.text
    body = response.json()
    # 40 samples in batches of 16: 3 batches per epoch, 3 epochs
    assert [r["steps_total"] for r in body["runs"]] == [9]
    assert body["progress"] == {"runs_total": 1, "runs_done": 0, "steps_total": 9, "steps_done": 0}
    problem = body["spec"]["problem"]
    assert problem["model"]["params"] == _defaults("model", "linear")
    assert problem["dataset"]["params"] == _defaults("dataset", "synthetic_regression") | {
        "n_samples": 40,
        "n_features": 3,
        "n_targets": 2,
    }
    assert problem["x0"] is None
    assert body["spec"]["training"]["batch_size"] == 16 and body["spec"]["training"]["shuffle"] is True


def test_duplicate_optimizers_get_distinct_default_labels(client):
    spec = function_spec(
        optimizers=[{"name": "adam", "params": {"lr": 0.1}}, {"name": "adam", "params": {"lr": 0.01}}], seeds=[0]
    )
    response = client.post(BASE, json=spec)
    assert response.status_code == 202, response.text
    labels = [r["label"] for r in response.json()["runs"]]
    assert labels == ["adam(lr=0.1)", "adam(lr=0.01)"]


# --- 422 with the field path ---------------------------------------------------------------------


def _mutate(spec: dict, path: tuple, value) -> dict:
    spec = copy.deepcopy(spec)
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return spec


INVALID = {
    "unknown optimizer": (function_spec(), ("optimizers", 0, "name"), "adamm", ("optimizers", 0, "name")),
    "unknown model": (dataset_spec(), ("problem", "model", "name"), "perceiver", ("problem", "model", "name")),
    "unknown dataset": (dataset_spec(), ("problem", "dataset", "name"), "imagenet", ("problem", "dataset", "name")),
    "unknown function": (function_spec(), ("problem", "function", "name"), "sphere9", ("problem", "function", "name")),
    "unknown loss": (dataset_spec(), ("problem", "loss"), "hinge2", ("problem", "loss")),
    "lr zero": (function_spec(), ("optimizers", 1, "params", "lr"), 0, ("optimizers", 1, "params", "lr")),
    "lr negative": (function_spec(), ("optimizers", 0, "params", "lr"), -0.1, ("optimizers", 0, "params", "lr")),
    "unknown hyperparameter": (
        function_spec(),
        ("optimizers", 0, "params", "momentum"),
        0.9,
        ("optimizers", 0, "params", "momentum"),
    ),
    "beta2 = 1": (
        function_spec(),
        ("optimizers", 0, "params", "betas"),
        [0.9, 1.0],
        ("optimizers", 0, "params", "betas", 1),
    ),
    "beta1 < 0": (
        function_spec(),
        ("optimizers", 0, "params", "betas"),
        [-0.1, 0.999],
        ("optimizers", 0, "params", "betas", 0),
    ),
    "eps zero": (function_spec(), ("optimizers", 0, "params", "eps"), 0.0, ("optimizers", 0, "params", "eps")),
    "eps negative": (function_spec(), ("optimizers", 0, "params", "eps"), -1e-8, ("optimizers", 0, "params", "eps")),
    "epochs and steps": (function_spec(), ("training",), {"epochs": 3, "steps": 30}, ("training", "epochs")),
    "neither epochs nor steps": (function_spec(), ("training",), {"batch_size": "full"}, ("training", "epochs")),
    "duplicate seeds": (function_spec(), ("seeds",), [1, 2, 1], ("seeds",)),
    "duplicate labels": (
        function_spec(),
        ("optimizers",),
        [{"name": "adam", "label": "same"}, {"name": "sgd", "label": "same"}],
        ("optimizers", 1, "label"),
    ),
    "duplicate default labels": (
        function_spec(),
        ("optimizers",),
        [{"name": "sgd", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.1}}],
        ("optimizers", 1, "label"),
    ),
    "x0 dimension": (function_spec(), ("problem", "x0"), [8.0, 1.0], ("problem", "x0")),
    "cross_entropy on regression": (dataset_spec(), ("problem", "loss"), "cross_entropy", ("problem", "loss")),
    "lbfgs on mini-batches": (
        dataset_spec(),
        ("optimizers",),
        [{"name": "lbfgs", "params": {}}],
        ("optimizers", 0, "name"),
    ),
    "epochs as a string": (dataset_spec(), ("training", "epochs"), "ten", ("training", "epochs")),
    "an optimizer that cannot run here": (
        function_spec(),
        ("optimizers", 0, "name"),
        "pytorch_optimizer.lomo",
        ("optimizers", 0, "name"),
    ),
    "sparse_adam without sparse gradients": (
        function_spec(),
        ("optimizers", 0, "name"),
        "sparse_adam",
        ("optimizers", 0, "name"),
    ),
    "muon on a function's x": (function_spec(), ("optimizers", 0, "name"), "muon", ("optimizers", 0, "name")),
    "muon on biases": (dataset_spec(), ("optimizers",), [{"name": "muon"}], ("optimizers", 0, "name")),
    "a library beta of 1": (
        function_spec(),
        ("optimizers",),
        [{"name": "pytorch_optimizer.lion", "params": {"betas": [0.9, 1.0]}}],
        ("optimizers", 0, "params", "betas", 1),
    ),
    "a value the library's constructor refuses": (
        function_spec(),
        ("optimizers",),
        [{"name": "pytorch_optimizer.soap", "params": {"precondition_frequency": 0}}],
        ("optimizers", 0, "params", "precondition_frequency"),
    ),
    "a library option kept at its default": (
        function_spec(),
        ("optimizers",),
        [{"name": "pytorch_optimizer.adan", "params": {"foreach": True}}],
        ("optimizers", 0, "params", "foreach"),
    ),
    "a library choice it does not have": (
        function_spec(),
        ("optimizers",),
        [{"name": "pytorch_optimizer.adahessian", "params": {"hessian_distribution": "uniform"}}],
        ("optimizers", 0, "params", "hessian_distribution"),
    ),
    "seed as a string": (function_spec(), ("seeds",), ["zero"], ("seeds", 0)),
    "a text corpus outside the data root": (
        dataset_spec(),
        ("problem", "dataset"),
        {"name": "text_corpus", "params": {"path": "../../etc/passwd"}},
        ("problem", "dataset", "params", "path"),
    ),
    "a text corpus that is missing": (
        dataset_spec(),
        ("problem", "dataset"),
        {"name": "text_corpus", "params": {"path": "no-such-corpus.txt"}},
        ("problem", "dataset", "params", "path"),
    ),
    "a transformer on features": (
        dataset_spec(),
        ("problem", "model"),
        {"name": "transformer"},
        ("problem", "model", "name"),
    ),
    "token cross-entropy on a regression set": (
        dataset_spec(),
        ("problem", "loss"),
        "token_cross_entropy",
        ("problem", "loss"),
    ),
}


@pytest.mark.parametrize("case", INVALID.values(), ids=INVALID.keys())
def test_invalid_spec_is_422_naming_the_field(client, case):
    base, path, value, loc = case
    spec = _mutate(base, path, value)
    response = client.post(BASE, json=spec)
    assert response.status_code == 422, response.text
    assert ["body", *loc] in _locs(response), response.json()


def test_lbfgs_is_fine_on_the_full_batch(client):
    spec = dataset_spec(optimizers=[{"name": "lbfgs", "params": {}}])
    spec["training"] = {"epochs": 2, "batch_size": "full"}
    response = client.post(BASE, json=spec)
    assert response.status_code == 202, response.text
    assert response.json()["runs"][0]["steps_total"] == 2


def test_lbfgs_on_batch_size_8_is_rejected(client):
    spec = dataset_spec(optimizers=[{"name": "lbfgs", "params": {"lr": 0.5}}])
    spec["training"] = {"steps": 10, "batch_size": 8}
    response = client.post(BASE, json=spec)
    assert response.status_code == 422
    assert ["body", "optimizers", 0, "name"] in _locs(response)
    assert "batch_size" in json.dumps(response.json())


@pytest.mark.parametrize("token", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_non_finite_hyperparameter_is_422(lenient_client, token):
    raw = json.dumps(function_spec()).replace('"lr": 0.1', f'"lr": {token}', 1)
    assert token in raw
    response = lenient_client.post(BASE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert ["body", "optimizers", 0, "params", "lr"] in _locs(response)


def test_non_finite_x0_is_422(lenient_client):
    raw = json.dumps(function_spec()).replace('"x0": [8.0]', '"x0": [NaN]', 1)
    response = lenient_client.post(BASE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert any(loc[:3] == ["body", "problem", "x0"] for loc in _locs(response))


@pytest.mark.parametrize("raw", ['{"name": "x", ', "not json", '{"name": "x"}}'])
def test_malformed_json_is_422(client, raw):
    response = client.post(BASE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors and errors[0]["loc"][0] == "body"
    assert any(error["type"] == "json_invalid" for error in errors)


def test_invalid_spec_stores_nothing(client):
    before = client.get(BASE, params={"limit": 500}).json()["items"]
    response = client.post(BASE, json=_mutate(function_spec(), ("optimizers", 0, "params", "lr"), -1))
    assert response.status_code == 422
    assert client.get(BASE, params={"limit": 500}).json()["items"] == before


# --- limits --------------------------------------------------------------------------------------


def test_too_many_runs_is_422_naming_the_setting(client, settings_env):
    settings_env("OPTIBENCH_MAX_RUNS_PER_COMPARISON", "3")
    before = len(client.get(BASE, params={"limit": 500}).json()["items"])
    response = client.post(BASE, json=function_spec())  # 2 optimizers x 2 seeds
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert ["body", "seeds"] in _locs(response)
    assert "OPTIBENCH_MAX_RUNS_PER_COMPARISON" in detail[0]["msg"] and "4 runs" in detail[0]["msg"]
    assert len(client.get(BASE, params={"limit": 500}).json()["items"]) == before
    # at the limit is fine
    ok = client.post(
        BASE,
        json=function_spec(
            seeds=[0],
            optimizers=[
                {"name": "adam", "params": {"lr": 0.1}},
                {"name": "sgd", "params": {"lr": 0.1}},
                {"name": "rprop", "params": {}},
            ],
        ),
    )
    assert ok.status_code == 202, ok.text


def test_too_many_steps_is_422_naming_the_setting(client, settings_env):
    settings_env("OPTIBENCH_MAX_STEPS_PER_RUN", "100")
    response = client.post(BASE, json=function_spec(training={"steps": 101}))
    assert response.status_code == 422, response.text
    assert ["body", "training"] in _locs(response)
    assert "OPTIBENCH_MAX_STEPS_PER_RUN" in response.json()["detail"][0]["msg"]
    assert client.post(BASE, json=function_spec(training={"steps": 100})).status_code == 202


# --- reads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{BASE}/0123456789abcdef0123456789abcdef",
        f"{BASE}/no-such-comparison",
        "/api/v1/runs/0123456789abcdef0123456789abcdef",
        "/api/v1/runs/0123456789abcdef0123456789abcdef/steps",
        "/api/v1/runs/0123456789abcdef0123456789abcdef/steps?format=csv",
    ],
)
def test_unknown_ids_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


def test_steps_of_a_queued_run_are_empty(client):
    body = client.post(BASE, json=function_spec()).json()
    run_id = body["runs"][0]["id"]
    response = client.get(f"/api/v1/runs/{run_id}/steps")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"run_id": run_id, "steps": []}

    as_csv = client.get(f"/api/v1/runs/{run_id}/steps", params={"format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert run_id in as_csv.headers["content-disposition"]
    assert as_csv.text == "step,epoch,loss,time_s,step_time_ms,lr,x0\n"
    assert list(csv.reader(io.StringIO(as_csv.text))) == [
        ["step", "epoch", "loss", "time_s", "step_time_ms", "lr", "x0"]
    ]


def test_steps_csv_header_of_a_dataset_run_has_no_coordinates(client):
    run_id = client.post(BASE, json=dataset_spec()).json()["runs"][0]["id"]
    as_csv = client.get(f"/api/v1/runs/{run_id}/steps", params={"format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.text == "step,epoch,loss,time_s,step_time_ms,lr\n"


def test_steps_unknown_format_is_422(client):
    run_id = client.post(BASE, json=function_spec()).json()["runs"][0]["id"]
    response = client.get(f"/api/v1/runs/{run_id}/steps", params={"format": "xml"})
    assert response.status_code == 422
    assert ["query", "format"] in _locs(response)


def test_list_comparisons_pages_through_everything_newest_first(client):
    posted = []
    for i in range(5):
        response = client.post(BASE, json=function_spec(name=f"page {i}", seeds=[i]))
        assert response.status_code == 202
        posted.append(response.json()["id"])

    first = client.get(BASE, params={"limit": 2})
    assert first.status_code == 200
    items, cursor, pages = list(first.json()["items"]), first.json()["next_cursor"], 1
    assert len(items) == 2 and cursor
    while cursor:
        page = client.get(BASE, params={"limit": 2, "cursor": cursor}).json()
        assert len(page["items"]) <= 2
        items.extend(page["items"])
        cursor, pages = page["next_cursor"], pages + 1
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids))
    everything = client.get(BASE, params={"limit": 500}).json()
    assert everything["next_cursor"] is None and [item["id"] for item in everything["items"]] == ids
    assert pages == (len(ids) + 1) // 2
    # the five just posted are the newest, newest first
    assert ids[:5] == posted[::-1]
    created = [item["created_at"] for item in items]
    assert created == sorted(created, reverse=True)
    summary = items[0]
    assert set(summary) >= {"id", "name", "status", "created_at", "finished_at", "tags", "progress"}
    assert "runs" not in summary and "spec" not in summary
    assert summary["progress"] == {"runs_total": 2, "runs_done": 0, "steps_total": 60, "steps_done": 0}


@pytest.mark.parametrize("cursor", ["not-a-cursor", "eyJhIjogMX0=", "W10="])
def test_list_comparisons_bad_cursor_is_400(client, cursor):
    response = client.get(BASE, params={"cursor": cursor})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


@pytest.mark.parametrize("limit", ["0", "501", "-1", "many"])
def test_list_comparisons_limit_out_of_range_is_422(client, limit):
    response = client.get(BASE, params={"limit": limit})
    assert response.status_code == 422
    assert ["query", "limit"] in _locs(response)


def test_list_comparisons_limit_bounds_are_accepted(client):
    assert client.get(BASE, params={"limit": 1}).status_code == 200
    assert client.get(BASE, params={"limit": 500}).status_code == 200


# --- catalogue, health, docs ---------------------------------------------------------------------


def test_catalog_lists_every_registered_component_with_typed_params(client):
    response = client.get("/api/v1/catalog")
    assert response.status_code == 200
    catalog = response.json()
    plural = {kind: "losses" if kind == "loss" else f"{kind}s" for kind in registry.KINDS}
    assert set(catalog) >= set(plural.values())
    for kind in registry.KINDS:
        entries = catalog[plural[kind]]
        assert [entry["name"] for entry in entries] == registry.names(kind), kind
        assert registry.names(kind), kind
        for entry in entries:
            schema_fields = set(registry.get(kind, entry["name"]).Params.model_fields)
            assert {p["name"] for p in entry["params"]} == schema_fields, (kind, entry["name"])
            for param in entry["params"]:
                typed = "type" in param or ("anyOf" in param and all("type" in alt for alt in param["anyOf"]))
                assert typed, (kind, entry["name"], param)
                assert param["required"] or "default" in param, (kind, entry["name"], param)
    optimizers = {entry["name"]: entry for entry in catalog["optimizers"]}
    assert optimizers["lbfgs"]["full_batch_only"] is True and optimizers["adam"]["full_batch_only"] is False
    adam = {p["name"]: p for p in optimizers["adam"]["params"]}
    assert adam["lr"]["type"] == "number" and adam["lr"]["exclusiveMinimum"] == 0 and adam["lr"]["default"] == 0.001
    assert adam["betas"]["type"] == "array" and adam["betas"]["default"] == [0.9, 0.999]
    items = adam["betas"].get("prefixItems") or [adam["betas"]["items"]] * 2
    assert len(items) == 2
    for item in items:
        assert item["type"] == "number" and item["minimum"] == 0 and item["exclusiveMaximum"] == 1
    assert adam["eps"]["exclusiveMinimum"] == 0 and adam["eps"]["default"] == 1e-8
    datasets = {entry["name"]: entry for entry in catalog["datasets"]}
    losses = {entry["name"]: entry for entry in catalog["losses"]}
    assert datasets["synthetic_regression"]["task"] == "regression"
    assert losses["cross_entropy"]["task"] == "classification"


def test_catalog_lists_the_library_and_what_cannot_run_with_its_reason(client):
    import pytorch_optimizer

    optimizers = {entry["name"]: entry for entry in client.get("/api/v1/catalog").json()["optimizers"]}
    assert len(optimizers) >= 140
    library = {name for name, entry in optimizers.items() if entry["source"] == "pytorch-optimizer"}
    assert library == {f"pytorch_optimizer.{name}" for name in pytorch_optimizer.get_supported_optimizers()}
    assert {"adam", "sgd", "muon", "adafactor", "adamax", "asgd"} <= {
        name for name, entry in optimizers.items() if entry["source"] == "torch.optim"
    }
    for name, entry in optimizers.items():
        assert entry["family"] and (entry["version"] or entry["source"] == "optibench"), name
        assert set(entry["capabilities"]) == {
            "elementwise",
            "full_batch_only",
            "needs_closure",
            "needs_hvp",
            "needs_loss",
            "train_eval_modes",
            "param_shapes",
        }, name
        assert entry["supported"] is (entry["unsupported_reason"] is None), name
    unsupported = {name: entry["unsupported_reason"] for name, entry in optimizers.items() if not entry["supported"]}
    assert (
        "sparse gradients" in unsupported["sparse_adam"] and "fused_backward" in unsupported["pytorch_optimizer.lomo"]
    )
    assert optimizers["muon"]["capabilities"]["param_shapes"] == "matrices"
    assert optimizers["pytorch_optimizer.adahessian"]["capabilities"]["needs_hvp"] is True
    assert optimizers["pytorch_optimizer.schedulefreeadamw"]["capabilities"]["train_eval_modes"] is True
    assert optimizers["pytorch_optimizer.alig"]["capabilities"]["needs_loss"] is True
    lion = optimizers["pytorch_optimizer.lion"]
    assert lion["reference"]["url"] == "https://arxiv.org/abs/2302.06675" and lion["family"] == "sign-based"
    assert {p["name"]: p for p in lion["params"]}["lr"]["description"].startswith("Learning rate")
    assert lion["fixed"]["foreach"]  # kept at its default, with the reason


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/comparisons",
        "/api/v1/comparisons/{comparison_id}",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/steps",
        "/api/v1/catalog",
        "/healthz",
    ):
        assert path in paths, path
    assert "post" in paths["/api/v1/comparisons"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_cancel_a_comparison_over_http(client):
    created = client.post(BASE, json=function_spec()).json()
    response = client.post(f"{BASE}/{created['id']}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert {run["status"] for run in body["runs"]} == {"cancelled"}
    assert client.post(f"{BASE}/{created['id']}/cancel").json()["status"] == "cancelled"  # idempotent
    assert client.post(f"{BASE}/no-such-id/cancel").status_code == 404


def test_cancel_one_run_over_http(client):
    created = client.post(BASE, json=function_spec()).json()
    first, *others = created["runs"]
    response = client.post(f"/api/v1/runs/{first['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    after = client.get(f"{BASE}/{created['id']}").json()
    assert [r["status"] for r in after["runs"]] == ["cancelled"] + ["queued"] * len(others)
    assert after["status"] == "running"  # one run is finished, the others are still to come
    assert client.post("/api/v1/runs/no-such-id/cancel").status_code == 404
