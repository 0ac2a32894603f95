"""Sweeps and reuse through HTTP, on both databases: a sweep of 4 learning rates × 3 seeds makes 12 runs
with the right params; once they have trained, resubmitting it publishes and trains nothing (every run
points at its source, whose rows it serves); 'reuse: false' trains again. Tasks run in-process with
``.apply``, as they were published (an ensemble task trains its runs as one ensemble); the broker is
watched through a spy on ``send_task``. A run is reused only from one trained in the same execution mode,
alone or as an ensemble member, and an ensemble is reused whole or trains whole."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from db import comparisons
from db.models import Comparison, Step, Team
from db.session import transaction
from engine.identity import run_config_hash
from engine.spec import ComparisonSpec
from worker.tasks import train_ensemble_runs, train_run

BASE = "/api/v1/comparisons"
LRS = [0.02, 0.05, 0.1, 0.2]
SEEDS = [0, 1, 2]


class Published(list):
    """The run ids of every task published to the broker: one per training task, every member's for an
    ensemble task; ``tasks``: the tasks themselves, (name, run ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[tuple[str, list[str]]] = []

    def clear(self) -> None:
        super().clear()
        self.tasks.clear()

    def train(self) -> dict[str, str]:
        """Run every task published so far as a worker would; each run's result."""
        from worker.celery_app import ENSEMBLE_TASK

        results: dict[str, str] = {}
        for name, run_ids in self.tasks:
            if name == ENSEMBLE_TASK:
                results |= train_ensemble_runs.apply(args=[run_ids]).get()
            else:
                results[run_ids[0]] = train_run.apply(args=run_ids).get()
        return results


@pytest.fixture
def published(monkeypatch) -> Published:
    """What is published to the broker (instead of publishing it)."""
    from worker.celery_app import ENSEMBLE_TASK
    from worker.dispatch import celery_app

    sent = Published()

    def send_task(name, args, **kwargs):
        run_ids = list(args[0] if name == ENSEMBLE_TASK else args)
        sent.extend(run_ids)
        sent.tasks.append((name, run_ids))

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return sent


def _sweep(**overrides) -> dict:
    spec = {
        "name": "lr sweep",
        "problem": {"function": {"name": "quadratic", "params": {"center": [1.5]}}, "x0": [4.0]},
        "training": {"steps": 15},
        "optimizers": [{"name": "sgd", "params": {"momentum": 0.5}, "sweep": {"lr": LRS}}],
        "seeds": SEEDS,
        "device": "cpu",
        "dtype": "float64",
    }
    return spec | overrides


def _submit(client: TestClient, spec: dict) -> dict:
    response = client.post(BASE, json=spec)
    assert response.status_code == 202, response.text
    return response.json()


def _stored_steps(run_id: str) -> int:
    with transaction() as session:
        return session.scalar(select(func.count()).select_from(Step).where(Step.run_id == run_id))


def _delete(comparison_id: str) -> None:
    with transaction() as session:
        session.execute(update(Comparison).where(Comparison.id == comparison_id).values(deleted_at=func.now()))


def test_a_resubmitted_sweep_reuses_every_run_and_trains_nothing(client, published):
    first = _submit(client, _sweep())
    runs = first["runs"]
    assert len(runs) == 12 and first["progress"]["runs_total"] == 12
    assert [(r["optimizer"]["params"]["lr"], r["seed"]) for r in runs] == [(lr, s) for lr in LRS for s in SEEDS]
    for run in runs:
        lr = run["optimizer"]["params"]["lr"]
        assert run["optimizer"]["params"]["momentum"] == 0.5 and run["sweep_values"] == {"lr": lr}
        assert run["label"] == f"sgd(lr={lr})" and run["phase"] is None and run["reused_from_id"] is None
        assert run["status"] == "queued"
        assert run["config_hash"] == run_config_hash(first["spec"], 0, run["optimizer"]["params"], run["seed"], "cpu")
    assert len({r["config_hash"] for r in runs}) == 12
    assert sorted(published) == sorted(r["id"] for r in runs)

    assert published.train() == {r["id"]: "succeeded" for r in runs}
    for run in runs:  # each trained with its own lr
        steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
        assert len(steps) == 15 and {s["lr"] for s in steps} == {run["optimizer"]["params"]["lr"]}
    trained = [client.get(f"/api/v1/runs/{r['id']}").json() for r in runs]
    assert len({t["final_loss"] for t in trained}) == 4  # one per lr: the seed does not matter here

    published.clear()
    again = _submit(client, _sweep())
    assert again["status"] == "succeeded" and again["finished_at"] is not None
    assert again["progress"]["runs_done"] == 12 and again["progress"]["steps_done"] == 12 * 15
    assert published == []  # nothing for the broker
    outcome = ("steps_done", "final_loss", "best_loss", "wall_time_s", "device", "started_at", "finished_at")
    for run, source in zip(again["runs"], trained):
        assert run["status"] == "succeeded" and run["reused_from_id"] == source["id"]
        assert (run["label"], run["seed"], run["optimizer"], run["config_hash"]) == (
            source["label"],
            source["seed"],
            source["optimizer"],
            source["config_hash"],
        )
        assert all(run[c] == source[c] for c in outcome)
        assert train_run.apply(args=[run["id"]]).get() == "skipped"  # even if delivered, nothing trains
        assert _stored_steps(run["id"]) == 0
        # its rows are its source's
        steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()
        assert steps["run_id"] == run["id"]
        assert steps["steps"] == client.get(f"/api/v1/runs/{source['id']}/steps").json()["steps"]
        csv = client.get(f"/api/v1/runs/{run['id']}/steps", params={"format": "csv"}).text
        assert csv == client.get(f"/api/v1/runs/{source['id']}/steps", params={"format": "csv"}).text
        assert len(csv.splitlines()) == 16

    # a source in a deleted comparison is reached through a run that reused it: chains stay one long
    _delete(first["id"])
    third = _submit(client, _sweep())
    assert [r["reused_from_id"] for r in third["runs"]] == [s["id"] for s in trained]
    # once no comparison that holds the results is left, everything trains again
    _delete(again["id"])
    _delete(third["id"])
    fourth = _submit(client, _sweep())
    assert fourth["status"] == "queued" and all(r["reused_from_id"] is None for r in fourth["runs"])
    assert sorted(published) == sorted(r["id"] for r in fourth["runs"])


def test_reuse_false_trains_again(client, published):
    spec = _sweep(optimizers=[{"name": "adam", "sweep": {"lr": [0.1, 0.3]}}], seeds=[0])
    first = _submit(client, spec)
    assert [train_run.apply(args=[r["id"]]).get() for r in first["runs"]] == ["succeeded"] * 2
    published.clear()

    fresh = _submit(client, spec | {"reuse": False})
    assert fresh["status"] == "queued" and fresh["spec"]["reuse"] is False
    assert all(r["status"] == "queued" and r["reused_from_id"] is None for r in fresh["runs"])
    assert [r["config_hash"] for r in fresh["runs"]] == [r["config_hash"] for r in first["runs"]]
    assert sorted(published) == sorted(r["id"] for r in fresh["runs"])
    run = fresh["runs"][0]
    assert train_run.apply(args=[run["id"]]).get() == "succeeded" and _stored_steps(run["id"]) == 15


def test_another_teams_runs_are_never_reused(client, published):
    spec = _sweep(optimizers=[{"name": "rmsprop", "sweep": {"lr": [0.01]}}], seeds=[0])
    parsed = ComparisonSpec.model_validate(spec)
    with transaction() as session:
        team = Team(name=f"other-{id(session)}")
        session.add(team)
        session.flush()
        theirs = comparisons.create_comparison(session, parsed.model_dump(mode="json"), 15, team_id=team.id)
        their_run = theirs.runs[0].id
    assert train_run.apply(args=[their_run]).get() == "succeeded"

    ours = _submit(client, spec)
    assert ours["runs"][0]["status"] == "queued" and ours["runs"][0]["reused_from_id"] is None
    assert published == [ours["runs"][0]["id"]]


def test_a_tuning_job_is_submitted_as_its_search_phase(client, published):
    spec = _sweep(
        seeds=[4, 5, 6],
        tuning={"metric": "final_loss", "seeds": [4, 5, 6]},
        optimizers=[{"name": "sgd", "sweep": {"lr": LRS}}, {"name": "adam", "params": {"lr": 0.1}}],
    )
    body = _submit(client, spec | {"reuse": False})
    assert body["spec"]["seeds"] == [4, 5, 6]
    assert [(r["label"], r["seed"], r["phase"]) for r in body["runs"]] == [
        *((f"sgd(lr={lr})", 4, "search") for lr in LRS),
        ("adam", 4, "search"),
    ]
    assert sorted(published) == sorted(r["id"] for r in body["runs"])


@pytest.mark.parametrize(
    "change, loc",
    [
        ({"optimizers": [{"name": "sgd", "sweep": {"lr": [0.1, 0.2, -1.0]}}]}, ["optimizers", 0, "sweep", "lr", 2]),
        ({"optimizers": [{"name": "sgd", "sweep": {"beta": [0.1]}}]}, ["optimizers", 0, "sweep", "beta"]),
        ({"tuning": {"seeds": [1, 2]}}, ["seeds"]),
        ({"seeds": [1, 2], "tuning": {"metric": "val_loss", "seeds": [1, 2]}}, ["problem", "validation_fraction"]),
        ({"baseline": "nobody"}, ["baseline"]),
    ],
)
def test_bad_sweeps_answer_422_naming_the_field(client, published, change, loc):
    response = client.post(BASE, json=_sweep(**change))
    assert response.status_code == 422
    assert ["body", *loc] in [e["loc"] for e in response.json()["detail"]], response.json()
    assert published == []


def test_the_run_limit_counts_the_expanded_runs(client, published, monkeypatch):
    from optibench.settings import get_settings

    monkeypatch.setenv("OPTIBENCH_MAX_RUNS_PER_COMPARISON", "11")
    get_settings.cache_clear()
    try:
        response = client.post(BASE, json=_sweep())  # 4 lrs × 3 seeds
        tuning = client.post(BASE, json=_sweep(seeds=list(range(9)), tuning={"seeds": list(range(9))}))  # 4 + 8 runs
    finally:
        monkeypatch.delenv("OPTIBENCH_MAX_RUNS_PER_COMPARISON")
        get_settings.cache_clear()
    for rejected in (response, tuning):
        assert rejected.status_code == 422, rejected.text
        (error,) = rejected.json()["detail"]
        assert error["loc"] == ["body", "seeds"] and "12 runs" in error["msg"]
    assert published == []


def _runs(client: TestClient, comparison: dict) -> list[dict]:
    return [client.get(f"/api/v1/runs/{r['id']}").json() for r in comparison["runs"]]


def test_a_sweep_trained_as_an_ensemble_records_it_and_is_reused_as_one(client, published):
    from worker.celery_app import ENSEMBLE_TASK

    first = _submit(client, _sweep())
    assert {r["execution"] for r in first["runs"]} == {"ensemble"}  # decided at submit
    assert published.tasks == [(ENSEMBLE_TASK, [r["id"] for r in first["runs"]])]
    published.train()
    trained = _runs(client, first)
    assert {(r["status"], r["execution"]) for r in trained} == {("succeeded", "ensemble")}

    published.clear()
    again = _submit(client, _sweep())
    assert again["status"] == "succeeded" and published == []
    assert [r["reused_from_id"] for r in again["runs"]] == [r["id"] for r in trained]
    assert {r["execution"] for r in _runs(client, again)} == {"ensemble"}


def test_a_run_trained_alone_is_not_reused_for_an_ensemble_member_nor_the_reverse(client, published):
    from worker.celery_app import ENSEMBLE_TASK, TRAIN_TASK

    sweep = _sweep(optimizers=[{"name": "sgd", "params": {"momentum": 0.3}, "sweep": {"lr": LRS}}])
    first = _submit(client, sweep)
    # each member trained alone, as a worker does for a member that falls back (a resume, the memory budget)
    assert [train_run.apply(args=[r["id"]]).get() for r in first["runs"]] == ["succeeded"] * 12
    assert {r["execution"] for r in _runs(client, first)} == {"alone"}

    published.clear()
    ensemble = _submit(client, sweep)
    assert ensemble["status"] == "queued"
    assert all(r["status"] == "queued" and r["reused_from_id"] is None for r in ensemble["runs"])
    assert [r["config_hash"] for r in ensemble["runs"]] == [r["config_hash"] for r in first["runs"]]
    assert published.tasks == [(ENSEMBLE_TASK, [r["id"] for r in ensemble["runs"]])]
    published.train()

    # one of those settings alone: its alone-trained twin is reused, not the ensemble member's result
    published.clear()
    single = _submit(client, _sweep(optimizers=[{"name": "sgd", "params": {"momentum": 0.3, "lr": LRS[0]}}], seeds=[0]))
    assert single["runs"][0]["execution"] == "alone"
    assert single["runs"][0]["reused_from_id"] == first["runs"][0]["id"] and published == []

    # with no alone-trained twin left (its comparison deleted), the ensemble member is not reused either
    _delete(first["id"])
    _delete(single["id"])
    again = _submit(client, _sweep(optimizers=[{"name": "sgd", "params": {"momentum": 0.3, "lr": LRS[0]}}], seeds=[0]))
    run = again["runs"][0]
    assert run["status"] == "queued" and run["reused_from_id"] is None and run["execution"] == "alone"
    assert run["config_hash"] == ensemble["runs"][0]["config_hash"]
    assert published.tasks == [(TRAIN_TASK, [run["id"]])]


def test_a_run_of_unknown_execution_mode_is_never_reused(client, published):
    from db.models import Run

    spec = _sweep(optimizers=[{"name": "adam", "params": {"lr": 0.07}}], seeds=[0])
    first = _submit(client, spec)
    assert published.train() == {first["runs"][0]["id"]: "succeeded"}
    with transaction() as session:  # as a run trained before the mode was recorded (migration 0009)
        session.execute(update(Run).where(Run.id == first["runs"][0]["id"]).values(execution=None))
    assert client.get(f"/api/v1/runs/{first['runs'][0]['id']}").json()["execution"] is None
    again = _submit(client, spec)
    assert again["runs"][0]["status"] == "queued" and again["runs"][0]["reused_from_id"] is None


def test_a_partly_reusable_ensemble_trains_whole(client, published):
    from worker.celery_app import ENSEMBLE_TASK

    first = _submit(
        client, _sweep(optimizers=[{"name": "sgd", "params": {"momentum": 0.1}, "sweep": {"lr": LRS[:2]}}], seeds=[0])
    )
    assert published.tasks == [(ENSEMBLE_TASK, [r["id"] for r in first["runs"]])]
    published.train()

    published.clear()
    wider = _submit(
        client, _sweep(optimizers=[{"name": "sgd", "params": {"momentum": 0.1}, "sweep": {"lr": LRS[:3]}}], seeds=[0])
    )
    # two of its three runs have an identical ensemble-trained twin, but the three train as one ensemble
    assert [r["config_hash"] for r in wider["runs"][:2]] == [r["config_hash"] for r in first["runs"]]
    assert all(r["status"] == "queued" and r["reused_from_id"] is None for r in wider["runs"])
    assert published.tasks == [(ENSEMBLE_TASK, [r["id"] for r in wider["runs"]])]
    assert published.train() == {r["id"]: "succeeded" for r in wider["runs"]}
    assert {r["execution"] for r in _runs(client, wider)} == {"ensemble"}
