"""GET /comparisons/{id}/surface and /step-times over HTTP on both databases, against numpy and the
stored rows; and a share link's reads, which answer exactly what the team's routes answer for its
comparison and nothing else."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, update

from db import comparisons
from db.models import LOCAL_TEAM_ID, Run, Step
from db.session import transaction
from engine.spec import ComparisonSpec

BASE = "/api/v1/comparisons"


@pytest.fixture
def client(use_database):
    from api.main import create_app

    return TestClient(create_app())


def _comparison(
    problem: dict, seeds=(0, 1), labels=("adam", "sgd"), team_id: str = LOCAL_TEAM_ID, **extra
) -> list[str]:
    """A comparison made directly in the database (no worker): its run ids, in position order."""
    spec = ComparisonSpec.model_validate(
        {
            "name": "figures",
            "problem": problem,
            "training": {"steps": 10},
            "seeds": list(seeds),
            "optimizers": [
                {"name": "sgd", "label": label, "params": {"lr": 0.01 * (i + 1)}} for i, label in enumerate(labels)
            ],
            **extra,
        }
    ).model_dump(mode="json")
    with transaction() as session:
        return [run.id for run in comparisons.create_comparison(session, spec, 10, team_id=team_id).runs]


def _comparison_id(run_id: str) -> str:
    with transaction() as session:
        return session.get(Run, run_id).comparison_id


def _store(run_id: str, xs: np.ndarray, losses: np.ndarray, step_time_ms: np.ndarray | None = None) -> None:
    n = len(losses)
    times = np.full(n, 1.0) if step_time_ms is None else step_time_ms
    with transaction() as session:
        session.execute(
            insert(Step),
            [
                {
                    "run_id": run_id,
                    "step": i,
                    "loss": float(losses[i]),
                    "time_s": 0.001 * (i + 1),
                    "step_time_ms": float(times[i]),
                    "lr": 0.1,
                    "x": None if xs is None else [float(v) for v in xs[i]],
                }
                for i in range(n)
            ],
        )


ROSENBROCK = {"function": {"name": "rosenbrock", "params": {"a": 1.0, "b": 100.0}}, "x0": [-1.2, 1.0]}


def _rosenbrock(x, y):
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def test_a_2d_surface_is_the_function_on_a_grid_around_every_path(client):
    runs = _comparison(ROSENBROCK)
    rng = np.random.default_rng(0)
    paths = {run_id: np.cumsum(rng.normal(0, 0.05, (1000, 2)), axis=0) + [-1.2, 1.0] for run_id in runs}
    for run_id, xs in paths.items():
        _store(run_id, xs, _rosenbrock(xs[:, 0], xs[:, 1]))

    body = client.get(f"{BASE}/{_comparison_id(runs[0])}/surface", params={"points": 25, "path_points": 50}).json()
    assert (body["function"], body["dim"], body["x0"], body["minimizers"]) == (
        "rosenbrock",
        2,
        [-1.2, 1.0],
        [[1.0, 1.0]],
    )
    # the box holds what is drawn: the start, the minimizer and every path's sampled points
    every = np.vstack([*(path["x"] for path in body["paths"]), [[-1.2, 1.0], [1.0, 1.0]]])
    span = every.max(axis=0) - every.min(axis=0)
    assert body["box"]["lo"] == pytest.approx(every.min(axis=0) - 0.1 * span)
    assert body["box"]["hi"] == pytest.approx(every.max(axis=0) + 0.1 * span)
    x, y, z = (np.array(body["grid"][k]) for k in ("x", "y", "z"))
    assert x == pytest.approx(np.linspace(body["box"]["lo"][0], body["box"]["hi"][0], 25))
    assert y == pytest.approx(np.linspace(body["box"]["lo"][1], body["box"]["hi"][1], 25))
    assert z.shape == (25, 25)
    assert z == pytest.approx(_rosenbrock(x[None, :], y[:, None]), rel=1e-12)  # z[i][j] = f(x[j], y[i])

    assert [path["run_id"] for path in body["paths"]] == runs
    for path in body["paths"]:
        # evenly sampled down to 50, both ends kept, each point exactly as stored
        assert len(path["steps"]) == 50 and path["steps"][0] == 0 and path["steps"][-1] == 999
        assert np.diff(path["steps"]).max() - np.diff(path["steps"]).min() <= 1
        stored = paths[path["run_id"]]
        assert path["x"] == stored[path["steps"]].tolist()
        assert path["loss"] == pytest.approx(_rosenbrock(*stored[path["steps"]].T).tolist(), rel=1e-12)


def test_a_1d_surface_a_short_path_whole_and_a_reused_run_from_its_source(client):
    source, reuser = _comparison(
        {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]}, labels=("adam",)
    )
    xs = np.array([[8.0], [6.8], [5.84], [math.inf]])
    _store(source, xs, (xs[:, 0] - 2.0) ** 2)
    with transaction() as session:
        session.execute(update(Run).where(Run.id == reuser).values(reused_from_id=source, status="succeeded"))

    body = client.get(f"{BASE}/{_comparison_id(source)}/surface", params={"points": 11}).json()
    assert body["dim"] == 1 and set(body["grid"]) == {"x", "z"}
    # the diverged point is drawn ("Infinity") but leaves the box to the finite ones
    assert body["box"] == {"lo": pytest.approx([2.0 - 0.6]), "hi": pytest.approx([8.0 + 0.6])}
    assert body["grid"]["z"] == pytest.approx(((np.array(body["grid"]["x"]) - 2.0) ** 2).tolist())
    ours, theirs = body["paths"][1], body["paths"][0]
    assert ours["run_id"] == reuser and ours["steps"] == theirs["steps"] == [0, 1, 2, 3]
    assert ours["x"] == theirs["x"] == [[8.0], [6.8], [5.84], ["Infinity"]]
    assert ours["loss"][-1] == "Infinity"


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ({"model": {"name": "linear"}, "dataset": {"name": "iris"}, "loss": "cross_entropy"}, "a dataset problem"),
        ({"function": {"name": "rastrigin", "params": {"dim": 3}}, "x0": [1.0, 1.0, 1.0]}, "a 3-D function problem"),
    ],
)
def test_no_surface_without_a_1d_or_2d_function_names_the_comparison(client, problem, reason):
    comparison_id = _comparison_id(_comparison(problem)[0])
    response = client.get(f"{BASE}/{comparison_id}/surface")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["path", "comparison_id"] and reason in error["msg"]


def test_step_times_are_counted_in_shared_log_bins_per_setting(client):
    runs = _comparison(ROSENBROCK, seeds=(0, 1))  # adam 0, adam 1, sgd 0, sgd 1
    rng = np.random.default_rng(1)
    times = {run_id: rng.lognormal(0.0, 1.0, 300) for run_id in runs}
    times[runs[0]][0] = 250.0  # a slow first step
    for run_id, ms in times.items():
        _store(run_id, None, np.ones(300), ms)

    body = client.get(f"{BASE}/{_comparison_id(runs[0])}/step-times", params={"bins": 12}).json()
    every = np.concatenate(list(times.values()))
    edges = np.array(body["edges"])
    assert body["unit"] == "ms" and len(edges) == 13
    assert (edges[0], edges[-1]) == (every.min(), every.max())
    assert np.diff(np.log(edges)) == pytest.approx(np.full(12, np.log(every.max() / every.min()) / 12))
    expected = {
        label: sum(np.histogram(times[r], edges)[0] for r in group)
        for label, group in (("adam", runs[:2]), ("sgd", runs[2:]))
    }
    assert {g["label"]: g["counts"] for g in body["groups"]} == {k: v.tolist() for k, v in expected.items()}
    assert sum(map(sum, (g["counts"] for g in body["groups"]))) == 1200


def test_step_times_of_a_comparison_without_rows_are_empty(client):
    comparison_id = _comparison_id(_comparison(ROSENBROCK)[0])
    body = client.get(f"{BASE}/{comparison_id}/step-times").json()
    assert body["edges"] == [] and body["groups"] == [{"label": "adam", "counts": []}, {"label": "sgd", "counts": []}]


def test_a_share_link_reads_its_comparisons_figures_and_nothing_else(client):
    runs = _comparison(ROSENBROCK, seeds=(0, 1))
    other = _comparison(ROSENBROCK)[0]
    rng = np.random.default_rng(2)
    for run_id in [*runs, other]:
        xs = np.cumsum(rng.normal(0, 0.05, (40, 2)), axis=0)
        _store(run_id, xs, _rosenbrock(*xs.T), rng.lognormal(0.0, 0.5, 40))
    comparison_id = _comparison_id(runs[0])
    link = client.post(f"{BASE}/{comparison_id}/share", json={}).json()
    shared = f"/api/v1/shared/{link['token']}"

    for team_path, shared_path, params in [
        ("/curves", "/curves", {"x": "time", "points": 7, "band": "minmax"}),
        ("/curves", "/curves", {"points": 7, "scale": "log", "group_by": "params.lr"}),
        ("/summary", "/summary", {}),
        ("/surface", "/surface", {"points": 10, "path_points": 9}),
        ("/step-times", "/step-times", {"bins": 5}),
        (f"/runs/{runs[1]}/curve", f"/runs/{runs[1]}/curve", {"points": 5}),
    ]:
        team_url = f"/api/v1{team_path}" if team_path.startswith("/runs") else f"{BASE}/{comparison_id}{team_path}"
        ours, theirs = client.get(team_url, params=params), client.get(shared + shared_path, params=params)
        assert ours.status_code == theirs.status_code == 200, (shared_path, theirs.text)
        assert ours.json() == theirs.json()
    assert client.get(f"{shared}/sensitivity").status_code == 422  # nothing swept: as for the team
    # another comparison's run is not reachable through this link
    assert client.get(f"{shared}/runs/{other}/curve").status_code == 404
    assert client.delete(f"/api/v1/share-links/{link['id']}").status_code == 204
    assert client.get(f"{shared}/curves").status_code == 404
