"""lite-v1 end to end through the API at the reduced budget, on both databases: one comparison per workload with
the baselines, tasks run in-process as published; the suite's profile and score equal an independent numpy
recomputation from the stored rows; a second submission reuses the baselines' runs; bad input is a 422 at the field.
A published suite's content never changes (pinned hashes)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Comparison, Eval, Run, Step
from db.session import transaction
from engine.suites import discover
from tests import suite_scores
from tests.api.test_reuse import published  # noqa: F401  (a fixture; `client` is tests/api/conftest.py's)

PINNED = {
    "lite-v1": "42ad3179674ee59d1b0aa406b7e99632e7270973ffd2ef18c39d3069c01885a3",
    "standard-v1": "1425d7bc663d99ca625fe6d3e8a2fd6df04371fe76f398e43344be93f260c7e9",
}
SUBMITTED = {"name": "adam", "label": "adam-candidate", "params": {"lr": 0.01}}


def test_published_suites_never_change():
    assert {k: s.content_hash for k, s in discover().items()} == PINNED


def _recomputed(suite_id: str, tau_max: float, team_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """Scores by steps and seconds from the team's stored runs, evaluations and steps, read run by run."""
    suite = discover()[suite_id]
    per_workload = []
    with transaction() as session:
        for workload in suite.workloads:
            runs = session.scalars(
                select(Run)
                .join(Comparison)
                .where(Comparison.suite == suite_id, Comparison.suite_workload == workload.name)
                .where(Comparison.team_id == team_id)
                .where(Run.status.in_(suite_scores.SCORED))
            ).all()
            curves: dict[str, dict[int, suite_scores.Curve]] = {}
            for run in runs:
                source = run.reused_from_id or run.id
                evals = session.scalars(select(Eval).where(Eval.run_id == source).order_by(Eval.step)).all()
                clock = dict(session.execute(select(Step.step, Step.time_s).where(Step.run_id == source)).all())
                curves.setdefault(run.label, {})[run.seed] = suite_scores.curve(
                    [(e.step, getattr(e, workload.metric)) for e in evals], clock, workload.metric
                )
            per_workload.append(suite_scores.first_hits(curves, workload.reduced.steps, workload.reduced.wall_s))
    return suite_scores.scores(per_workload, tau_max)


def test_lite_v1_reduced_end_to_end_scores_equal_an_independent_recomputation(client, published):  # noqa: F811
    response = client.post("/api/v1/suites/lite/v1/submissions", json={"optimizers": [SUBMITTED], "budget": "reduced"})
    assert response.status_code == 202, response.text
    made = response.json()["comparisons"]
    suite = discover()["lite-v1"]
    assert [c["workload"] for c in made] == [w.name for w in suite.workloads]
    assert all(len(c["comparison"]["runs"]) == 3 * len(suite.reduced_seeds) for c in made)
    results = published.train()
    assert set(results.values()) == {"succeeded"}

    body = client.get("/api/v1/suites/lite/v1", params={"budget": "reduced"}).json()
    assert body["comparable"] is False and body["content_hash"] == PINNED["lite-v1"]
    assert all(w["target"] is not None for w in body["workloads"])
    with transaction() as session:  # another test's team may have runs on the suite in this database
        team_id = session.get_one(Comparison, made[0]["comparison"]["id"]).team_id
    by_steps, by_seconds = _recomputed("lite-v1", body["tau_max"], team_id)
    assert {o["label"] for o in body["optimizers"]} == set(by_steps)
    for o in body["optimizers"]:
        assert o["score_steps"] == pytest.approx(by_steps[o["label"]], abs=1e-3)
        assert o["score"] == pytest.approx(by_seconds[o["label"]], abs=1e-3)
        assert [w["seeds"] for w in o["workloads"]] == [len(suite.reduced_seeds)] * len(suite.workloads), o
    assert client.get("/api/v1/suites/lite/v1").json()["optimizers"] == []  # the full budget is scored apart
    board = client.get("/api/v1/suites/lite/v1/leaderboard", params={"budget": "reduced"}).json()
    assert [row["rank"] for row in board] == [1, 2, 3]
    assert [row["score"] for row in board] == sorted((row["score"] for row in board), reverse=True)
    page = client.get("/suites/lite/v1", params={"budget": "reduced"})
    assert page.status_code == 200 and "adam-candidate" in page.text and "profile-chart" in page.text

    # a second submission on one workload trains only the new optimizer: the baselines' runs are reused
    published.clear()
    again = {"optimizers": [SUBMITTED | {"label": "adam-2", "params": {"lr": 0.02}}], "budget": "reduced"}
    response = client.post("/api/v1/suites/lite/v1/submissions", json=again | {"workloads": ["logreg-breast-cancer"]})
    runs = response.json()["comparisons"][0]["comparison"]["runs"]
    assert len(published) == len(suite.reduced_seeds)
    assert {r["id"] for r in runs if r["label"] == "adam-2"} == set(published)


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/v1/suites/nope/v1/submissions", {"optimizers": [SUBMITTED]}, ["path", "name"]),
        ("/api/v1/suites/lite/v9/submissions", {"optimizers": [SUBMITTED]}, ["path", "version"]),
        (
            "/api/v1/suites/lite/v1/submissions",
            {"optimizers": [SUBMITTED | {"params": {"lr": -1}}]},
            ["body", "optimizers", 0, "params", "lr"],
        ),
        (
            "/api/v1/suites/lite/v1/submissions",
            {"optimizers": [SUBMITTED | {"label": "adamw (baseline)"}]},
            ["body", "optimizers", 0, "label"],
        ),
        (
            "/api/v1/suites/lite/v1/submissions",
            {"optimizers": [SUBMITTED], "workloads": ["x"]},
            ["body", "workloads", 0],
        ),
        ("/api/v1/suites/lite/v1/submissions", {"optimizers": [SUBMITTED], "budget": "tiny"}, ["body", "budget"]),
    ],
)
def test_bad_submissions_are_a_422_at_the_field_and_store_nothing(client, published, path, body, loc):  # noqa: F811
    stored = select(Comparison.id).where(Comparison.suite.is_not(None))
    with transaction() as session:
        before = session.scalars(stored).all()
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert list(published) == []
    with transaction() as session:
        assert session.scalars(stored).all() == before


def test_a_workload_over_the_limits_is_a_422_at_it_before_any_workload_is_stored(client, published, settings_env):  # noqa: F811
    stored = select(Comparison.id).where(Comparison.suite.is_not(None))
    with transaction() as session:
        before = session.scalars(stored).all()
    settings_env("OPTIBENCH_MAX_STEPS_PER_RUN", "450")  # mlp-digits (the first) needs 500 steps
    response = client.post("/api/v1/suites/lite/v1/submissions", json={"optimizers": [SUBMITTED]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "workloads", "mlp-digits", "budget", "steps"]
    assert list(published) == []
    with transaction() as session:
        assert session.scalars(stored).all() == before


def test_a_suite_file_that_cannot_run_names_its_field():
    from pydantic import ValidationError

    from engine.suites import Budget, Suite

    lite = discover()["lite-v1"]
    regression = next(w for w in lite.workloads if w.metric == "val_loss" and w.name == "noisy-quadratic")
    with pytest.raises(ValidationError) as raised:
        Suite.model_validate(lite.model_dump() | {"workloads": [regression.model_dump() | {"metric": "val_accuracy"}]})
    assert raised.value.errors()[0]["loc"] == ("workloads", 0, "metric")
    with pytest.raises(ValidationError) as raised:
        Budget(steps=10, wall_s=1.0, eval_every=20)
    assert raised.value.errors()[0]["loc"] == ("eval_every",)
