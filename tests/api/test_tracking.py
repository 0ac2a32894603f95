"""Free-form tracking through HTTP with team keys, on SQLite and PostgreSQL: runs with a config and any metrics,
uploaded as Arrow batches (idempotent by metric and step, all or nothing), read back wide, grouped by config in
a project summary marked not paired, failed by the watchdog when abandoned; another team sees nothing."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from sqlalchemy import update

from db.models import TrackedRun, utcnow
from db.session import transaction
from tests.api.teams import bearer, make_team, team_client  # noqa: F401
from worker.sweeper import sweep

RUNS = "/api/v1/tracking/runs"
ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}


def arrow(columns: dict) -> bytes:
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def create(client, api_key: str, project: str = "mnist", config: dict | None = None, **extra) -> dict:
    body = {"project": project, "config": config if config is not None else {"lr": 0.1, "model": "mlp"}, **extra}
    response = client.post(RUNS, json=body, headers=bearer(api_key))
    assert response.status_code == 201, response.text
    return response.json()


def upload(client, key: str, run_id: str, body: bytes, headers=ARROW):
    return client.post(f"{RUNS}/{run_id}/metrics", content=body, headers={**headers, **bearer(key)})


def metrics(client, key: str, run_id: str) -> dict:
    response = client.get(f"{RUNS}/{run_id}/metrics", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def loss_and_accuracy(first: int, last: int) -> dict:
    step = np.arange(first, last, dtype=np.int64)
    accuracy = pa.array([0.5 + 0.01 * s if s % 5 == 0 else None for s in step], pa.float64())
    return {"step": step, "loss": 1.0 / (1.0 + step), "eval/accuracy": accuracy}


def test_a_run_stores_any_metrics_once_and_reads_back_wide(team_client):
    client, team = team_client, make_team()
    run = create(client, team.member, seed=3, packages={"torch": "2.13.0"}, hardware={"cpu": "test"})
    assert (run["status"], run["seed"], run["packages"]) == ("running", 3, {"torch": "2.13.0"})
    assert run["name"] == f"cfg-{run['config_hash'][:8]}"
    body = arrow(loss_and_accuracy(0, 10))
    first = upload(client, team.member, run["id"], body).json()
    retried = upload(client, team.member, run["id"], body).json()  # its answer was lost: sent again
    assert (first["rows"], first["stored"], first["cancelled"]) == (10, 12, False)  # 10 losses, 2 accuracies
    assert (retried["rows"], retried["stored"]) == (10, 0)
    overlap = {"step": np.array([8, 9]), "loss": np.array([7.0, 7.0]), "grad_norm": np.array([0.5, 0.25])}
    assert upload(client, team.member, run["id"], arrow(overlap)).json()["stored"] == 2  # the new metric only
    nan_step = {"step": np.array([10, 11]), "loss": np.array([math.nan, math.inf])}
    assert upload(client, team.member, run["id"], arrow(nan_step)).json()["stored"] == 2

    wide = metrics(client, team.member, run["id"])
    assert wide["columns"] == ["step", "eval/accuracy", "grad_norm", "loss"]
    assert [row[0] for row in wide["rows"]] == list(range(12))
    assert wide["rows"][5] == [5, 0.55, None, 1.0 / 6.0]
    assert wide["rows"][1][1] is None  # not logged at step 1
    assert wide["rows"][9] == [9, None, 0.25, 0.1]  # the stored loss kept, not the retry's 7.0
    assert wide["rows"][10:] == [[10, None, None, "NaN"], [11, None, None, "Infinity"]]
    as_arrow = client.get(f"{RUNS}/{run['id']}/metrics?format=arrow", headers=bearer(team.member))
    table = pa.ipc.open_stream(as_arrow.content).read_all()
    assert table.column("loss").to_pylist()[:2] == [1.0, 0.5] and table.column("eval/accuracy").null_count == 10

    finished = client.post(f"{RUNS}/{run['id']}/finish", json={"status": "succeeded"}, headers=bearer(team.member))
    assert finished.json()["status"] == "succeeded" and finished.json()["finished_at"]
    assert upload(client, team.member, run["id"], arrow(loss_and_accuracy(12, 14))).status_code == 409
    again = client.post(f"{RUNS}/{run['id']}/finish", json={"status": "failed"}, headers=bearer(team.member))
    assert again.status_code == 409


def test_the_same_key_returns_the_same_run(team_client):
    client, team = team_client, make_team()
    first = create(client, team.member, key="create-once-1234")
    assert create(client, team.member, key="create-once-1234")["id"] == first["id"]
    assert create(client, team.member, key="another-key-5678")["id"] != first["id"]


def _detail(response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.text
    return [(error["loc"], error["msg"]) for error in response.json()["detail"]]


def test_bad_batches_are_refused_naming_the_field_and_store_nothing(team_client):
    client, team = team_client, make_team()
    run_id = create(client, team.member)["id"]
    step = np.arange(3, dtype=np.int64)
    bad_name = _detail(
        upload(client, team.member, run_id, arrow({"step": step, "loss": [1.0] * 3, "bad name": [1.0] * 3}))
    )
    assert bad_name[0][0] == ["body", "bad name"] and "metric name" in bad_name[0][1]
    float_step = _detail(upload(client, team.member, run_id, arrow({"step": [0.0, 1.0], "loss": [1.0, 2.0]})))
    assert float_step[0][0] == ["body", "step"] and "int64" in float_step[0][1]
    duplicate = _detail(upload(client, team.member, run_id, arrow({"step": [0, 1, 1], "loss": [1.0, 2.0, 3.0]})))
    assert duplicate[0][0] == ["body", "step"] and "duplicate" in duplicate[0][1]
    int_metric = _detail(upload(client, team.member, run_id, arrow({"step": [0, 1], "loss": [1, 2]})))
    assert int_metric[0][0] == ["body", "loss"] and "float64" in int_metric[0][1]
    no_step = _detail(upload(client, team.member, run_id, arrow({"loss": [1.0]})))
    assert no_step[0][0] == ["body", "step"]
    assert _detail(upload(client, team.member, run_id, b"not arrow at all"))[0][0] == ["body"]
    assert upload(client, team.member, run_id, arrow({"step": [0], "loss": [1.0]}), headers={}).status_code == 415
    assert metrics(client, team.member, run_id)["rows"] == []  # nothing of any refused batch was stored

    too_large = client.post(RUNS, json={"project": "p", "config": {"blob": "x" * 70_000}}, headers=bearer(team.member))
    assert _detail(too_large)[0][0] == ["body", "config"]
    not_object = client.post(RUNS, json={"project": "p", "config": [1, 2]}, headers=bearer(team.member))
    assert _detail(not_object)[0][0] == ["body", "config"]


def test_another_teams_run_and_project_are_missing_on_every_route(team_client):
    client, team_a, team_b = team_client, make_team(), make_team()
    run_id = create(client, team_a.member, project="secret")["id"]
    b = bearer(team_b.member)
    body = arrow({"step": [0], "loss": [1.0]})
    answers = [
        client.get(f"{RUNS}/{run_id}", headers=b),
        client.get(f"{RUNS}/{run_id}/metrics", headers=b),
        client.post(f"{RUNS}/{run_id}/metrics", content=body, headers={**ARROW, **b}),
        client.post(f"{RUNS}/{run_id}/metrics", content=b"anything", headers=b),  # 404 whatever it sends
        client.post(f"{RUNS}/{run_id}/heartbeat", headers=b),
        client.post(f"{RUNS}/{run_id}/finish", json={"status": "failed"}, headers=b),
        client.get("/api/v1/tracking/projects/secret", headers=b),
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    # the very answer a missing id gets: nothing says the run exists
    assert {a.json()["detail"] for a in answers[:-1]} == {f"tracked run {run_id!r} not found"}
    missing = client.get(f"{RUNS}/{'0' * 32}", headers=bearer(team_a.member))
    assert (missing.status_code, missing.json()["detail"]) == (404, f"tracked run {'0' * 32!r} not found")
    assert client.get(f"{RUNS}/{run_id}", headers=bearer(team_a.member)).json()["status"] == "running"


def test_the_project_groups_runs_by_config_and_says_they_are_not_paired(team_client):
    client, team = team_client, make_team()
    project = "cifar-small"
    finals = {}
    for config, name in (({"lr": 0.1, "opt": "sgd"}, "sgd"), ({"opt": "adam", "lr": 0.001}, None)):
        for seed in (0, 1):
            run = create(
                client, team.member, project=project, config=config, seed=seed, **({"name": name} if name else {})
            )
            loss = np.array([2.0, 1.0 + seed + (0.5 if name == "sgd" else 0.0)])
            upload(client, team.member, run["id"], arrow({"step": np.array([0, 7]), "loss": loss}))
            finals[run["id"]] = float(loss[-1])
    create(client, team.member, project="another", config={"lr": 0.1, "opt": "sgd"})
    same_config_other_order = create(client, team.member, project=project, config={"opt": "sgd", "lr": 0.1})

    summary = client.get(f"/api/v1/tracking/projects/{project}", headers=bearer(team.member)).json()
    assert summary["paired"] is False and "no shared initial weights or batch order" in summary["note"]
    sgd, adam = summary["configs"]
    assert (sgd["name"], adam["name"]) == ("sgd", f"cfg-{adam['config_hash'][:8]}")
    assert adam["config"] == {"opt": "adam", "lr": 0.001}
    assert same_config_other_order["config_hash"] == sgd["config_hash"]  # keys in any order: one config
    assert [r["seed"] for r in sgd["runs"]] == [0, 1, None] and len(adam["runs"]) == 2
    assert sgd["metrics"]["loss"]["runs"] == 2  # the third run logged nothing
    assert (sgd["metrics"]["loss"]["mean"], sgd["metrics"]["loss"]["min"], sgd["metrics"]["loss"]["max"]) == (
        2.0,
        1.5,
        2.5,
    )
    assert adam["metrics"]["loss"]["mean"] == 1.5
    assert {run_id: last["value"] for run_id, last in adam["metrics"]["loss"]["last"].items()} == {
        r["id"]: finals[r["id"]] for r in adam["runs"]
    }
    assert all(last["step"] == 7 for last in sgd["metrics"]["loss"]["last"].values())
    assert client.get("/api/v1/tracking/projects/nothing-here", headers=bearer(team.member)).status_code == 404


def test_an_abandoned_run_fails_after_its_lease_and_keeps_its_metrics(team_client):
    client, team = team_client, make_team()
    run_id = create(client, team.member)["id"]
    assert upload(client, team.member, run_id, arrow(loss_and_accuracy(0, 4))).status_code == 200
    beat = client.post(f"{RUNS}/{run_id}/heartbeat", headers=bearer(team.member)).json()
    assert (beat["status"], beat["cancelled"]) == ("running", False)
    with transaction() as session:  # the client went away a lease ago
        session.execute(
            update(TrackedRun).where(TrackedRun.id == run_id).values(heartbeat_at=utcnow().replace(year=2000))
        )
    sweep()  # what every API and worker process runs periodically
    run = client.get(f"{RUNS}/{run_id}", headers=bearer(team.member)).json()
    assert run["status"] == "failed" and "client" in run["error"]
    assert len(metrics(client, team.member, run_id)["rows"]) == 4
    assert upload(client, team.member, run_id, arrow(loss_and_accuracy(4, 6))).status_code == 409
    assert client.post(f"{RUNS}/{run_id}/heartbeat", headers=bearer(team.member)).status_code == 409
