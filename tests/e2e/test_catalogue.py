"""Every optimizer of the catalogue trained through the public API, on a real `optibench serve` (uvicorn and a
Celery worker) on the embedded default: listed by GET /api/v1/catalog, submitted over HTTP with each one's own
test settings (engine.optimizers.TestSettings) on a function problem and on a small dataset problem, trained by
the worker, and checked for progress run by run. Unsupported entries are refused at submit. A library optimizer's
lr sweep trains as a vectorized ensemble whose stored rows equal its runs trained one by one.

Fast by construction: one comparison per problem and step budget, every optimizer an entry of it, one seed,
tiny problems, two training processes of one thread each.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine.optimizers import Optimizer
from engine.spec import ComparisonSpec
from engine.training import train
from tests.e2e.conftest import Service, start_service, stop_service

pytestmark = pytest.mark.e2e

BASE = "/api/v1/comparisons"
#: tests/engine/test_optimizers.py's parabola, (x0 - 1)^2 + 10 (x1 + 2)^2 from (-3, 2), where each optimizer's
#: "parabola" settings halve the loss and land in 500 steps (tested there); here it must make progress in 100
PARABOLA = {
    "function": {"name": "quadratic", "params": {"center": [1.0, -2.0], "scale": [1.0, 10.0]}},
    "x0": [-3.0, 2.0],
}
FUNCTION_STEPS = 100
IRIS = {
    "model": {"name": "mlp", "params": {"hidden": [8]}},
    "dataset": {"name": "iris"},
    "loss": "cross_entropy",
}
DATASET_STEPS = 50
#: the test settings (and exceptions) each problem takes (engine.optimizers.TestSettings; none: the defaults)
SETTINGS = {"function": "parabola", "dataset": "dataset"}
#: entries a comparison may have (engine.spec)
MAX_ENTRIES = 100
#: an optimizer of matrices only takes the MLP's hidden weight; AdamW takes the rest
MATRIX_GROUPS = [
    {"select": ["hidden_matrices"]},
    {"select": ["rest"], "optimizer": {"name": "adamw", "params": {"lr": 0.01}}},
]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    svc = start_service(
        "embedded",
        {"OPTIBENCH_WORKER_CONCURRENCY": "2", "OPTIBENCH_TORCH_THREADS": "1"},
        tmp_path_factory.mktemp("serve-catalogue"),
    )
    yield svc
    if svc.process.poll() is None:
        stop_service(svc)


@pytest.fixture(scope="module")
def optimizers(service: Service) -> list[dict]:
    with service.client as client:
        response = client.get("/api/v1/catalog")
    assert response.status_code == 200, response.text
    return response.json()["optimizers"]


def spec(name: str, problem: dict, steps: int, entries: list[dict], **extra: Any) -> dict:
    return {
        "name": name,
        "problem": problem,
        "training": {"steps": steps},
        "optimizers": entries,
        "seeds": [0],
        "device": "cpu",
        "dtype": "float64",
        "reuse": False,
        **extra,
    }


def submit(service: Service, body: dict) -> str:
    with service.client as client:
        response = client.post(BASE, json=body)
    assert response.status_code == 202, response.text[:3000]
    return response.json()["id"]


def initial_losses(service: Service, comparison_id: str) -> dict[str, float]:
    """Each run's loss before its first update (step 0), from the comparison's export."""
    with service.client as client:
        response = client.get(f"{BASE}/{comparison_id}/export", params={"format": "csv"})
    assert response.status_code == 200
    return {
        row["run_id"]: float(row["loss"]) for row in csv.DictReader(io.StringIO(response.text)) if row["step"] == "0"
    }


def test_the_catalogue_lists_at_least_140_optimizers_with_typed_params(optimizers: list[dict]) -> None:
    assert len(optimizers) >= 140
    assert len({o["name"] for o in optimizers}) == len(optimizers)
    for optimizer in optimizers:
        assert optimizer["params"] and all({"type", "anyOf", "$ref", "enum"} & set(p) for p in optimizer["params"])
        assert optimizer["supported"] == (optimizer["unsupported_reason"] is None)


def test_every_supported_optimizer_trains_through_the_api_and_makes_progress(
    service: Service, optimizers: list[dict]
) -> None:
    """One comparison per (problem, step budget), split where a comparison's limit on entries asks: the parabola
    with each optimizer's parabola settings (its own ``steps`` where it declares them), and an MLP on iris with
    its dataset settings (mostly its defaults); an optimizer of matrices only trains the MLP's hidden weight
    beside AdamW, and is refused on the function (test_refusals). Each run must succeed and end below its first
    step's loss; on a problem in its declared exceptions it only has to run and stay finite."""
    supported: list[type[Optimizer[Any]]] = [Optimizer.registered(o["name"]) for o in optimizers if o["supported"]]
    assert len(supported) >= 130
    comparisons: dict[str, tuple[str, dict[str, type]]] = {}  # id -> (problem, label -> optimizer class)
    chunks: dict[tuple[str, int], list[dict]] = {}
    classes: dict[tuple[str, int], dict[str, type]] = {}
    for cls in supported:
        settings = cls.test_settings
        matrices = cls.param_shapes == "matrices"
        plans = [("dataset", min(settings.steps or DATASET_STEPS, DATASET_STEPS))]
        if not matrices:
            plans.append(("function", settings.steps or FUNCTION_STEPS))
        for problem, steps in plans:
            entry: dict[str, Any] = {"name": cls.name, "params": dict(settings.params.get(SETTINGS[problem], {}))}
            if matrices:
                entry["groups"] = MATRIX_GROUPS
            chunks.setdefault((problem, steps), []).append(entry)
            classes.setdefault((problem, steps), {})[cls.name] = cls
    for (problem, steps), entries in chunks.items():
        parts = math.ceil(len(entries) / MAX_ENTRIES)
        for part in range(parts):  # as many comparisons as a comparison's limit on entries asks, of even sizes
            some = entries[part::parts]
            body = spec(
                f"catalogue: {problem}, {steps} steps", PARABOLA if problem == "function" else IRIS, steps, some
            )
            comparisons[submit(service, body)] = (
                problem,
                {e["name"]: classes[(problem, steps)][e["name"]] for e in some},
            )

    failures = []
    for comparison_id, (problem, by_name) in comparisons.items():
        finished = service.wait_for(comparison_id, timeout_s=600)
        initial = initial_losses(service, comparison_id)
        assert {run["optimizer"]["name"] for run in finished["runs"]} == set(by_name)
        for run in finished["runs"]:
            cls, final = by_name[run["optimizer"]["name"]], run["final_loss"]
            excepted = SETTINGS[problem] in cls.test_settings.exceptions
            start = initial.get(run["id"])
            if run["status"] != "succeeded" or final is None or not math.isfinite(final) or start is None:
                failures.append(f"{cls.name} on {problem}: {run['status']} {run['error']} final {final}")
            elif not excepted and not final < start:
                failures.append(f"{cls.name} on {problem}: {start} -> {final}, no progress")
    assert not failures, f"{len(failures)} runs:\n" + "\n".join(failures)


def test_refusals_are_422_at_the_field_and_nothing_is_stored(service: Service, optimizers: list[dict]) -> None:
    """An unsupported optimizer (listed with its reason) and an optimizer of matrices only on a function's
    vector are refused at submit, at the entry, before anything is stored."""
    unsupported = [o for o in optimizers if not o["supported"]]
    matrices_only = [
        o["name"] for o in optimizers if o["supported"] and o["capabilities"]["param_shapes"] == "matrices"
    ]
    assert unsupported and matrices_only
    with service.client as client:
        before = len(client.get(BASE, params={"limit": 200}).json()["items"])
        names = [o["name"] for o in unsupported]
        response = client.post(BASE, json=spec("refused", PARABOLA, 5, [{"name": name} for name in names]))
        assert response.status_code == 422, response.text[:2000]
        refused = {tuple(error["loc"]): error["msg"] for error in response.json()["detail"]}
        assert set(refused) == {("body", "optimizers", index, "name") for index in range(len(names))}
        for index, optimizer in enumerate(unsupported):  # the message says why, as the catalogue does
            assert optimizer["unsupported_reason"] in refused[("body", "optimizers", index, "name")]
        for name in matrices_only:  # the spec's checks stop at the first entry they refuse: one at a time
            response = client.post(BASE, json=spec("refused", PARABOLA, 5, [{"name": "adam"}, {"name": name}]))
            assert response.status_code == 422, response.text[:2000]
            assert [error["loc"] for error in response.json()["detail"]] == [["body", "optimizers", 1, "name"]]
        assert len(client.get(BASE, params={"limit": 200}).json()["items"]) == before


def test_a_library_optimizers_lr_sweep_trains_as_an_ensemble_equal_to_its_runs_one_by_one(service: Service) -> None:
    """Lion (the library's, no rule) and AdaBelief swept over rates on the MLP with mini-batches: the submit plans
    each sweep as one ensemble, the worker trains it so, and every stored row equals the run trained alone."""
    entries = [
        {"name": "pytorch_optimizer.lion", "sweep": {"lr": [3e-4, 1e-3, 3e-3]}},
        {"name": "pytorch_optimizer.adabelief", "sweep": {"lr": [1e-3, 1e-2]}},
    ]
    body = spec("library sweep", IRIS, 40, entries, seeds=[0, 1])
    body["training"]["batch_size"] = 16
    comparison_id = submit(service, body)
    finished = service.wait_for(comparison_id)
    assert finished["status"] == "succeeded"
    runs = finished["runs"]
    assert len(runs) == 10 and {run["execution"] for run in runs} == {"ensemble"}
    stored_spec = ComparisonSpec.model_validate(finished["spec"])
    index = {entry.name: i for i, entry in enumerate(stored_spec.optimizers)}
    with service.client as client:
        for run in runs:
            steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
            stored = np.array([[row["step"], float(row["loss"]), float(row["lr"])] for row in steps])
            alone = _train_alone(stored_spec, index[run["optimizer"]["name"]], run["optimizer"]["params"], run["seed"])
            assert stored.shape == alone.shape == (40, 3)
            np.testing.assert_allclose(stored, alone, rtol=1e-10, atol=0)


def _train_alone(spec: ComparisonSpec, entry_index: int, params: dict, seed: int) -> np.ndarray:
    data = spec.model_dump(mode="json")
    data["optimizers"][entry_index].update(params=params, sweep={})
    rows: list = []

    def sink(batch) -> bool:
        rows.extend(zip(batch.step, batch.loss, batch.lr))
        return True

    train(ComparisonSpec.model_validate(data), entry_index, seed, sink, total_steps=40)
    return np.array(rows, dtype=float)
