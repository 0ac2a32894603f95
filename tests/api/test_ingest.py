"""External runs through HTTP with team keys, on SQLite and PostgreSQL: created beside a comparison's catalogue
runs, fed Arrow batches (idempotent by step, all or nothing), failed by the watchdog when abandoned, read back
as Arrow, and paired with the catalogue runs in the leaderboard."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import func, select, update

from db import leases
from db.models import Run, Step, utcnow
from db.session import transaction
from tests.api.teams import bearer, make_team, record_steps, submit, team_client  # noqa: F401

ARROW = {"Content-Type": "application/vnd.apache.arrow.stream"}


def arrow(columns: dict, schema: pa.Schema | None = None) -> bytes:
    table = pa.table(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def rows(first: int, last: int, **extra) -> dict:
    step = np.arange(first, last, dtype=np.int64)
    return {
        "step": step,
        "loss": 10.0 / (1.0 + step),
        "time_s": 0.01 * (step + 1),
        "step_time_ms": np.full(len(step), 10.0),
        "lr": np.full(len(step), 0.05),
        **extra,
    }


def create(client, key: str, comparison_id: str, seed: int = 0, label: str = "signsgd"):
    return client.post(
        f"/api/v1/comparisons/{comparison_id}/runs",
        json={
            "seed": seed,
            "label": label,
            "optimizer": {"name": "mylab.signsgd", "params": {"lr": 0.05, "momentum": 0.9}},
            "device": "cpu",
            "hardware": {"cpu": "test"},
            "packages": {"torch": "2.13.0"},
        },
        headers=bearer(key),
    )


def upload(client, key: str, run_id: str, body: bytes, headers=ARROW):
    return client.post(f"/api/v1/runs/{run_id}/steps", content=body, headers={**headers, **bearer(key)})


def stored(run_id: str) -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Step).where(Step.run_id == run_id))


def test_external_runs_pair_with_the_catalogue_in_the_summary_and_curves(team_client):
    client, team = team_client, make_team()
    comparison = submit(client, team.member)
    for run in comparison["runs"]:  # the catalogue: adam better than sgd
        record_steps(run["id"], [5.0, 3.0, 1.0 + run["seed"] + (0.5 if run["label"] == "sgd" else 0.0)])
    externals = []
    for seed in (0, 1):
        response = create(client, team.member, comparison["id"], seed)
        assert response.status_code == 201, response.text
        run = response.json()
        assert (run["status"], run["external"], run["steps_total"]) == ("running", True, 20)
        assert run["client"] == {"packages": {"torch": "2.13.0"}}
        body = arrow(rows(0, 10))
        first = upload(client, team.member, run["id"], body).json()
        retried = upload(client, team.member, run["id"], body).json()  # the answer was lost: sent again
        assert (first["stored"], retried["stored"], retried["cancelled"]) == (10, 0, False)
        assert upload(client, team.member, run["id"], arrow(rows(10, 20))).json()["stored"] == 10
        assert stored(run["id"]) == 20
        finished = client.post(
            f"/api/v1/runs/{run['id']}/finish",
            json={"status": "succeeded", "final_loss": 0.5 + seed, "wall_time_s": 0.2},
            headers=bearer(team.member),
        )
        assert finished.status_code == 200, finished.text
        assert (finished.json()["status"], finished.json()["steps_done"]) == ("succeeded", 20)
        externals.append(run["id"])

    read = client.get(f"/api/v1/runs/{externals[0]}/steps", params={"format": "arrow"}, headers=bearer(team.member))
    assert read.headers["content-type"] == ARROW["Content-Type"]
    table = pa.ipc.open_stream(read.content).read_all()
    expected = rows(0, 20)
    for name, values in expected.items():
        assert table.column(name).to_numpy().tolist() == values.tolist(), name
    assert table.column("grad_norm").null_count == 20

    summary = client.get(f"/api/v1/comparisons/{comparison['id']}/summary", headers=bearer(team.member)).json()
    row = next(r for r in summary["rows"] if r["label"] == "signsgd")
    assert (row["optimizer"], row["n_seeds"], row["n_finished"]) == ("mylab.signsgd", 2, 2)
    paired = next(p for p in summary["paired"] if p["label"] == "signsgd")
    assert (paired["baseline"], paired["n_pairs"]) == ("adam", 2)
    assert paired["mean_diff"] == pytest.approx(np.mean([0.5 - 1.0, 1.5 - 2.0]))
    curves = client.get(f"/api/v1/comparisons/{comparison['id']}/curves", headers=bearer(team.member)).json()
    group = next(g for g in curves["groups"] if g["label"] == "signsgd")
    assert (sorted(group["run_ids"]), group["seeds"]) == (sorted(externals), [0, 1])
    assert group["points"][0]["n"] == 2 and group["points"][0]["mean"] == pytest.approx(10.0)


def test_a_bad_batch_stores_nothing_and_says_why(team_client, settings_env):
    client, team = team_client, make_team()
    comparison = submit(client, team.member)
    run_id = create(client, team.member, comparison["id"]).json()["id"]
    assert upload(client, team.member, run_id, arrow(rows(0, 5))).status_code == 200
    good = rows(5, 10)
    float32_loss = pa.schema(
        [(n, pa.float32() if n == "loss" else pa.from_numpy_dtype(v.dtype)) for n, v in good.items()]
    )
    cases = {
        "duplicate step": (arrow({**good, "step": np.array([5, 6, 6, 7, 8])}), 422, ["body", "step"]),
        "decreasing step": (arrow({**good, "step": np.array([5, 7, 6, 8, 9])}), 422, ["body", "step"]),
        "loss as float32": (arrow(good, float32_loss), 422, ["body", "loss"]),
        "step as float": (arrow({**good, "step": good["step"].astype(float)}), 422, ["body", "step"]),
        "a missing column": (arrow({k: v for k, v in good.items() if k != "time_s"}), 422, ["body", "time_s"]),
        "an unknown column": (arrow({**good, "momentum": good["lr"]}), 422, ["body", "momentum"]),
        "nulls in some rows": (arrow({**good, "lr": pa.array([0.1, None, 0.1, 0.1, 0.1])}), 422, ["body", "lr"]),
        "malformed": (b"not arrow at all", 422, ["body"]),
        "truncated": (arrow(good)[:-40], 422, ["body"]),
    }
    for name, (body, status, loc) in cases.items():
        response = upload(client, team.member, run_id, body)
        assert response.status_code == status, (name, response.text)
        assert [error["loc"] for error in response.json()["detail"]] == [loc], name
    assert upload(client, team.member, run_id, arrow(good), {"Content-Type": "application/json"}).status_code == 415
    settings_env("OPTIBENCH_INGEST_MAX_BODY_BYTES", "2048")
    assert upload(client, team.member, run_id, arrow(rows(5, 200))).status_code == 413
    assert stored(run_id) == 5

    nan_loss = {**good, "loss": np.array([math.nan, math.inf, -math.inf, 1.0, 2.0])}
    assert upload(client, team.member, run_id, arrow(nan_loss)).json()["stored"] == 5
    client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "diverged"}, headers=bearer(team.member))
    finished = upload(client, team.member, run_id, arrow(rows(10, 12)))
    assert finished.status_code == 409 and "diverged" in finished.json()["detail"]
    assert stored(run_id) == 10
    losses = client.get(f"/api/v1/runs/{run_id}/steps", headers=bearer(team.member)).json()["steps"]
    assert [s["loss"] for s in losses[5:8]] == ["NaN", "Infinity", "-Infinity"]


def test_another_teams_key_finds_nothing_on_every_new_route(team_client):
    client, a, b = team_client, make_team(), make_team()
    comparison = submit(client, a.member)
    run_id = create(client, a.member, comparison["id"]).json()["id"]
    attempts = {
        "create": create(client, b.member, comparison["id"]),
        "upload": upload(client, b.member, run_id, arrow(rows(0, 3))),
        "heartbeat": client.post(f"/api/v1/runs/{run_id}/heartbeat", headers=bearer(b.member)),
        "finish": client.post(f"/api/v1/runs/{run_id}/finish", json={"status": "failed"}, headers=bearer(b.member)),
        "cancel": client.post(f"/api/v1/runs/{run_id}/cancel", headers=bearer(b.member)),
        **{
            f"read as {format}": client.get(
                f"/api/v1/runs/{run_id}/steps", params={"format": format}, headers=bearer(b.member)
            )
            for format in ("arrow", "json", "csv")
        },
    }
    assert {name: response.status_code for name, response in attempts.items()} == dict.fromkeys(attempts, 404)
    own = client.get(f"/api/v1/runs/{run_id}", headers=bearer(a.member)).json()
    assert own["status"] == "running"  # neither finished nor cancelled by the other team
    assert create(client, b.revoked, comparison["id"]).status_code == 401
    assert stored(run_id) == 0
    with transaction() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.external.is_(True), Run.comparison_id == comparison["id"])
            )
            == 1
        )


def test_an_abandoned_run_fails_after_its_lease_and_keeps_its_rows(team_client):
    client, team = team_client, make_team()
    comparison = submit(client, team.member)
    run_id = create(client, team.member, comparison["id"]).json()["id"]
    assert upload(client, team.member, run_id, arrow(rows(0, 7))).status_code == 200
    beat = client.post(f"/api/v1/runs/{run_id}/heartbeat", headers=bearer(team.member)).json()
    assert (beat["status"], beat["cancelled"]) == ("running", False)
    with transaction() as session:  # the client went away a lease ago
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow().replace(year=2000)))
    with transaction() as session:
        requeued, failed = leases.reap_stale_runs(session, lease_timeout_s=60, max_attempts=3)
    assert run_id in failed and run_id not in requeued
    run = client.get(f"/api/v1/runs/{run_id}", headers=bearer(team.member)).json()
    assert (run["status"], run["steps_done"], stored(run_id)) == ("failed", 7, 7)
    assert "client" in run["error"]
    assert upload(client, team.member, run_id, arrow(rows(7, 9))).status_code == 409


def test_a_cancelled_run_tells_its_client_and_the_team_limit_answers_429(team_client, settings_env):
    client, team = team_client, make_team()
    comparison = submit(client, team.member)
    run_id = create(client, team.member, comparison["id"]).json()["id"]
    client.post(f"/api/v1/runs/{run_id}/cancel", headers=bearer(team.member))
    answer = upload(client, team.member, run_id, arrow(rows(0, 3))).json()
    assert (answer["status"], answer["cancelled"], answer["stored"]) == ("cancelled", True, 0)

    other = create(client, team.member, comparison["id"], seed=1).json()["id"]
    settings_env("OPTIBENCH_INGEST_ROWS_PER_S", "10")
    assert upload(client, team.member, other, arrow(rows(0, 50))).status_code == 200  # a burst
    refused = upload(client, team.member, other, arrow(rows(50, 60)))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert stored(other) == 50
