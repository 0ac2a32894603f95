"""Adaptive seeding end to end, on both deployments: submitted over HTTP, its rounds trained and
evaluated by a real Celery worker, its decisions read back from the comparison and its summary."""

from __future__ import annotations

import copy
import re

import pytest
from rich.console import Console

from optibench.cli import _leaderboard_tables
from tests.specs import adaptive_regression

pytestmark = pytest.mark.e2e

BASE = "/api/v1/comparisons"


def _regression(**adaptive) -> dict:
    return adaptive_regression(
        "adaptive: a clearly better learning rate",
        {"slow": 1e-4, "fast": 0.05},
        {"min": 3, "max": 8, "round": 1, **adaptive},
    )


def _twins() -> dict:
    return {
        "name": "adaptive: the same optimizer under two labels",
        "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "training": {"steps": 30},
        "optimizers": [
            {"name": "sgd", "params": {"lr": 0.1}, "label": "one"},
            {"name": "sgd", "params": {"lr": 0.1}, "label": "two"},
        ],
        "seeds": {"adaptive": {"min": 3, "max": 10, "round": 2, "equivalence": 0.01}},
        "device": "cpu",
        "reuse": False,
    }


def _run(service, spec: dict) -> tuple[dict, dict]:
    with service.client as client:
        response = client.post(BASE, json=spec)
        assert response.status_code == 202, response.text
        assert response.json()["adaptive"] == {"round": 1, "done": False, "stopped": None, "pairs": []}
        assert response.json()["progress"]["runs_total"] == 2 * spec["seeds"]["adaptive"]["min"]
        done = service.wait_for(response.json()["id"], timeout_s=120)
        summary = client.get(f"{BASE}/{done['id']}/summary").json()
    return done, summary


def test_a_clearly_better_optimizer_stops_before_max(service):
    done, summary = _run(service, _regression())
    assert done["status"] == "succeeded", service.log_tail()
    adaptive = done["adaptive"]
    assert adaptive["done"] and adaptive["stopped"] is None and adaptive["baseline"] == "slow"
    (pair,) = adaptive["pairs"]
    assert pair["label"] == "fast" and pair["decision"] == "better", pair
    assert 3 <= pair["seeds"] < 8 and pair["ci_high"] < 0 and abs(pair["statistic"]) > pair["boundary"]
    seeds = {label: sorted(run["seed"] for run in done["runs"] if run["label"] == label) for label in ("slow", "fast")}
    assert seeds["slow"] == seeds["fast"] == list(range(pair["seeds"]))  # paired: the baseline got every seed
    assert adaptive["round"] == pair["seeds"] - 2  # min 3, then one seed per round
    assert summary["adaptive"] == adaptive
    with service.client as client:
        page = client.get(f"/comparisons/{done['id']}").text
    assert "Adaptive seeding" in page and "<td>fast</td><td>better</td>" in page
    console = Console(record=True, width=200)
    for table in _leaderboard_tables(summary):
        console.print(table)
    text = console.export_text()
    assert "adaptive seeding (done): against slow" in text
    assert re.search(rf"│ fast\s*│ better\s*│\s*{pair['seeds']} │", text), text


def test_the_same_optimizer_twice_is_equivalent(service):
    done, summary = _run(service, _twins())
    assert done["status"] == "succeeded", service.log_tail()
    (pair,) = done["adaptive"]["pairs"]
    assert pair["decision"] == "equivalent" and pair["seeds"] == 3 and pair["mean_diff"] == 0
    assert len(done["runs"]) == 6 and summary["adaptive"]["pairs"] == [pair]


BAD = [
    ({"min": 1}, ["seeds", "adaptive", "min"]),
    ({"min": 5, "max": 4}, ["seeds", "adaptive", "max"]),
    ({"max": 101}, ["seeds", "adaptive", "max"]),
    ({"round": 0}, ["seeds", "adaptive", "round"]),
    ({"alpha": 0}, ["seeds", "adaptive", "alpha"]),
    ({"alpha": 1}, ["seeds", "adaptive", "alpha"]),
    ({"alpha": True}, ["seeds", "adaptive", "alpha"]),
    ({"equivalence": -0.1}, ["seeds", "adaptive", "equivalence"]),
    ({"scale": "ln"}, ["seeds", "adaptive", "scale"]),
    ({"spending": "haybittle"}, ["seeds", "adaptive", "spending"]),
    ({"rounds": 2}, ["seeds", "adaptive", "rounds"]),
]


def test_bad_adaptive_specs_are_422_at_the_field_before_anything_is_stored(service):
    cases = [(_regression(**fields), loc) for fields, loc in BAD]
    alone = _regression()
    alone["optimizers"] = alone["optimizers"][:1]
    cases.append((alone, ["seeds", "adaptive"]))
    tuning = copy.deepcopy(_twins())
    tuning["optimizers"][0]["sweep"] = {"lr": [0.1, 0.2]}
    tuning["tuning"] = {"seeds": [0, 1]}
    cases.append((tuning, ["seeds", "adaptive"]))
    cases.append(({**_twins(), "seeds": {"adaptive": [3]}}, ["seeds", "adaptive"]))
    with service.client as client:
        before = client.get(BASE, params={"limit": 100}).json()["items"]
        for spec, loc in cases:
            response = client.post(BASE, json=spec)
            assert response.status_code == 422, (loc, response.text)
            assert ["body", *loc] in [error["loc"] for error in response.json()["detail"]], (loc, response.json())
        assert client.get(BASE, params={"limit": 100}).json()["items"] == before
