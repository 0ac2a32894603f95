"""Parameter groups and schedules through HTTP, on both databases: a group that is not a partition of the
model's parameters, an unknown selector, a schedule-free optimizer with a decaying schedule are each a 422
at their field with nothing stored or queued; Muon + AdamW as one entry trains as a worker trains it (the
task run in-process) and its stored steps are the plain torch loop's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api.test_reuse import published  # noqa: F401  (the fixture)
from tests.engine.test_groups import MUON_ADAMW, PROBLEM, make_spec, plain_muon_adamw
from worker.tasks import train_run

BASE = "/api/v1/comparisons"


def spec(*entries: dict) -> dict:
    return {
        "name": "groups over HTTP",
        "problem": PROBLEM,
        "training": {"steps": 12, "batch_size": 32},
        "optimizers": list(entries),
        "seeds": [3],
        "device": "cpu",
        "dtype": "float64",
    }


def adamw(*groups: dict, **entry) -> dict:
    return {"name": "adamw", "groups": list(groups), **entry}


MATRICES, REST = {"select": "hidden_matrices"}, {"select": "rest"}
FREE = {"name": "pytorch_optimizer.schedulefreeadamw", "params": {"lr": 0.01}}
REFUSED = {
    "selector matching nothing": (
        adamw(MATRICES, {"select": "embeddings"}, REST),
        ["optimizers", 0, "groups", 1, "select"],
        "selector 'embeddings' matches no parameter",
    ),
    "parameters missed": (
        adamw(MATRICES, {"select": "biases"}),
        ["optimizers", 0, "groups"],
        "no group selects 4.weight 3×8;",
    ),
    "a parameter double-covered": (
        adamw({"select": "biases"}, {"select": "head"}, REST),
        ["optimizers", 0, "groups", 1, "select"],
        "'4.bias' is also selected by groups.0",
    ),
    "unknown selector": (
        adamw({"select": "hidden_matrix"}, REST),
        ["optimizers", 0, "groups", 0, "select"],
        "unknown selector 'hidden_matrix'",
    ),
    "muon on biases": (
        adamw({"select": ["biases", "hidden_matrices"], "optimizer": {"name": "muon"}}, REST),
        ["optimizers", 0, "groups", 0, "select"],
        "'muon' only takes matrices",
    ),
    "a group's bad param": (
        adamw({"select": "biases", "params": {"weight_decay": -0.1}}, REST),
        ["optimizers", 0, "groups", 0, "params", "weight_decay"],
        "greater than or equal to 0",
    ),
    "schedule-free with a decaying schedule": (
        {**FREE, "schedule": {"name": "cosine", "warmup_steps": 2}},
        ["optimizers", 0, "schedule"],
        "schedule-free",
    ),
}


def test_a_bad_group_or_schedule_is_422_at_its_field_and_nothing_is_stored(client, published) -> None:
    before = client.get(BASE).json()["items"]
    for name, (entry, loc, message) in REFUSED.items():
        response = client.post(BASE, json=spec({"name": "sgd"}, entry))
        assert response.status_code == 422, (name, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "optimizers", 1, *loc[2:]], name
        assert message in error["msg"], (name, error["msg"])
    assert client.get(BASE).json()["items"] == before and published == []
    # warm-up then constant is what a schedule-free optimizer takes
    accepted = client.post(BASE, json=spec({**FREE, "schedule": {"name": "constant", "warmup_fraction": 0.25}}))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["spec"]["optimizers"][0]["schedule"] == {"name": "constant", "warmup_fraction": 0.25}


def test_muon_and_adamw_as_one_entry_trains_to_the_plain_loops_steps(client, published) -> None:
    response = client.post(BASE, json=spec(MUON_ADAMW))
    assert response.status_code == 202, response.text
    body = response.json()
    entry = body["spec"]["optimizers"][0]
    assert entry["label"] == "muon+adamw"
    assert [g["select"] for g in entry["groups"]] == [["hidden_matrices"], ["rest"]]
    assert entry["groups"][0]["optimizer"]["params"]["lr"] == 0.05
    [run] = body["runs"]
    assert run["execution"] == "alone" and published == [run["id"]]

    assert train_run.apply(args=[run["id"]]).get() == "succeeded"
    steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    losses, lrs, final = plain_muon_adamw(make_spec([MUON_ADAMW], seeds=[3]), 3)
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose([s["lr"] for s in steps], lrs, rtol=1e-12, atol=0)
    assert client.get(f"/api/v1/runs/{run['id']}").json()["final_loss"] == pytest.approx(final, rel=1e-12)


def test_the_catalogue_lists_the_selectors_and_the_schedules(client) -> None:
    catalog = client.get("/api/v1/catalog").json()
    selectors = [s["name"] for s in catalog["selectors"]]
    assert selectors == ["hidden_matrices", "biases", "norms", "embeddings", "head", "rest", "name:<glob>"]
    assert all(s["description"] for s in catalog["selectors"])
    schedules = {s["name"] for s in catalog["schedules"]}
    assert schedules >= {"linear", "inverse_sqrt", "wsd", "one_cycle"}
