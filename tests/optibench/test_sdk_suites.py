"""A client's own optimizer scored on lite-v1 (reduced budget) through the SDK, against the real app in-process on
both databases: its external runs carry their evaluations, and the suite ranks its label beside the catalogue's
settings with the score an independent numpy recomputation gives from the rows read back over HTTP."""

from __future__ import annotations

import pytest

from engine.suites import discover
from optibench.client import Client, OptibenchError
from optibench.sdk_suites import DEFAULT_BASELINE, train_suite
from tests import suite_scores
from tests.api.teams import make_team, team_client  # noqa: F401
from tests.api.test_reuse import published  # noqa: F401
from tests.optibench.test_sdk import STEPS, SignSGD, trained  # noqa: F401

LITE = discover()["lite-v1"]
#: the quickest three of lite-v1's seven workloads: the other four count as not reached for everyone
CHOSEN = ["logreg-breast-cancer", "noisy-quadratic", "mlp-synthetic"]


def _recomputed(client: Client, comparisons: dict[str, str]) -> tuple[dict, dict]:
    """Scores by steps and seconds from each workload's runs as the API serves them (external runs by label)."""
    per_workload: list[dict] = []
    for workload in LITE.workloads:
        if workload.name not in comparisons:
            per_workload.append({})
            continue
        runs = client.comparison(comparisons[workload.name])["runs"]
        curves: dict[str, dict[int, suite_scores.Curve]] = {}
        for run in (run for run in runs if run["status"] in suite_scores.SCORED):
            evals = client._json("GET", f"/api/v1/runs/{run['id']}/evals")["evals"]
            steps = client._json("GET", f"/api/v1/runs/{run['id']}/steps")["steps"]
            curves.setdefault(run["label"], {})[run["seed"]] = suite_scores.curve(
                [(e["step"], e[workload.metric]) for e in evals],
                {row["step"]: row["time_s"] for row in steps},
                workload.metric,
            )
        per_workload.append(suite_scores.first_hits(curves, workload.reduced.steps, workload.reduced.wall_s))
    return suite_scores.scores(per_workload, LITE.tau_max)


def test_an_external_optimizer_is_scored_on_the_suite_from_its_own_runs(team_client, published, tmp_path):  # noqa: F811
    team = make_team()
    with Client("http://testserver", api_key=team.member, transport=team_client._transport) as client:
        # the team has trained the suite's baselines and Adam before: train_suite's submission reuses those runs
        client.submit_suite("lite", "v1", {"optimizers": [DEFAULT_BASELINE], "budget": "reduced", "workloads": CHOSEN})
        assert set(published.train().values()) == {"succeeded"}
        published.clear()
        scores = train_suite(
            client,
            "lite",
            "v1",
            lambda params: SignSGD(params, lr=0.01),
            label="signsgd",
            optimizer="tests.signsgd",
            params={"lr": 0.01, "beta": 0.9},
            workloads=CHOSEN,
            spool_dir=tmp_path,
        )
        assert list(published) == []  # the server trained nothing new
        by_label = {o["label"]: o for o in scores["optimizers"]}
        assert set(by_label) == {"adamw (baseline)", "sgd-momentum (baseline)", "adam", "signsgd"}
        ours = by_label["signsgd"]
        assert (ours["external"], ours["baseline"], ours["optimizer"]) == (True, False, "tests.signsgd")
        seeds = {w["workload"]: w["seeds"] for w in ours["workloads"]}
        assert seeds == {w.name: len(LITE.reduced_seeds) if w.name in CHOSEN else 0 for w in LITE.workloads}
        assert any(w["reached_seeds"] for w in ours["workloads"])  # scored from its evaluations, not left out

        comparisons = scores["comparisons"]
        assert sorted(comparisons) == sorted(CHOSEN)
        by_steps, by_seconds = _recomputed(client, comparisons)
        assert set(by_steps) == set(by_label)
        for label, row in by_label.items():
            assert row["score_steps"] == pytest.approx(by_steps[label], abs=1e-3), label
            assert row["score"] == pytest.approx(by_seconds[label], abs=1e-3), label
        board = client._json("GET", "/api/v1/suites/lite/v1/leaderboard", params={"budget": "reduced"})
        assert "signsgd" in [row["label"] for row in board]
        assert list(tmp_path.iterdir()) == []  # every local run finished and was sent


def test_evaluations_upload_once_all_or_nothing_and_only_to_the_teams_runs(trained, team_client):  # noqa: F811
    client, comparison_id, _ = trained
    run = client.create_run(comparison_id, seed=0, label="evaluated", optimizer="x")
    rows = [{"step": 0, "epoch": 0, "train_loss": 1.5, "val_loss": 1.6}, {"step": 10, "train_loss": float("nan")}]
    assert client.upload_evals(run["id"], rows)["stored"] == 2
    assert client.upload_evals(run["id"], rows)["stored"] == 0  # a retried batch stores nothing twice
    stored = client._json("GET", f"/api/v1/runs/{run['id']}/evals")["evals"]
    assert [(e["step"], e["val_loss"]) for e in stored] == [(0, 1.6), (10, None)]
    for bad, loc in (
        ([{"step": 20, "train_loss": 1.0}, {"step": 20, "train_loss": 1.0}], ["body", "evals", 1, "step"]),
        ([{"step": 25, "train_loss": 1.0}, {"step": STEPS + 1, "train_loss": 1.0}], ["body", "evals", 1, "step"]),
        ([{"step": 25, "train_loss": "low"}], ["body", "evals", 0, "train_loss"]),
    ):
        with pytest.raises(OptibenchError) as refused:
            client.upload_evals(run["id"], bad)
        assert refused.value.status == 422 and refused.value.detail[0]["loc"] == loc
    assert len(client._json("GET", f"/api/v1/runs/{run['id']}/evals")["evals"]) == 2  # nothing of a refused batch
    other = make_team()
    with Client("http://testserver", api_key=other.member, transport=team_client._transport) as theirs:
        with pytest.raises(OptibenchError) as missing:
            theirs.upload_evals(run["id"], [{"step": 1, "train_loss": 1.0}])
        assert missing.value.status == 404
    client.finish_run(run["id"], "succeeded")
    with pytest.raises(OptibenchError) as finished:
        client.upload_evals(run["id"], [{"step": 1, "train_loss": 1.0}])
    assert finished.value.status == 409
