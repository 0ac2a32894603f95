"""The leaderboard, paired tests and sensitivity through HTTP, on SQLite and PostgreSQL. Run columns,
step and eval rows are written directly; expected figures are computed here from the same raw data
with numpy and scipy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats

from db import comparisons
from db.models import DIVERGED, RUNNING, SUCCEEDED, Comparison, Eval, Run, Step, Team, new_id, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec

BASE = "/api/v1/comparisons"
NAN = math.nan


@pytest.fixture
def client(use_database):
    # no lifespan: the watchdog must not requeue the 'running' runs these tests write
    from api.main import create_app

    return TestClient(create_app())


def _spec(optimizers: list[dict], seeds: list[int], **extra: Any) -> dict:
    """A validated, normalised spec; the summary reads extra keys (target_loss, baseline, tuning) with .get()."""
    spec = ComparisonSpec.model_validate(
        {
            "name": "summary test",
            "problem": {"function": {"name": "quadratic", "params": {}}},
            "training": {"steps": 5},
            "optimizers": optimizers,
            "seeds": seeds,
        }
    ).model_dump(mode="json")
    return spec | extra


def _create(spec: dict, team_id: str | None = None) -> dict:
    """The comparison's id under "id", each run's id under (label, seed)."""
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, 5, **({"team_id": team_id} if team_id else {}))
        return {"id": comparison.id} | {(run.label, run.seed): run.id for run in comparison.runs}


def _finish(
    run_id: str,
    losses: list[float],
    final: float | None,
    *,
    status: str = SUCCEEDED,
    wall_time_s: float = 1.0,
    evals: list[tuple[int, float | None, float | None]] = (),
) -> None:
    """Write a run's outcome columns and its rows: step k has loss losses[k] and time_s 0.1·(k+1)."""
    finite = [v for v in [*losses, final] if v is not None and math.isfinite(v)]
    with transaction() as session:
        run = session.get(Run, run_id)
        run.status, run.final_loss, run.best_loss = status, final, min(finite, default=None)
        run.steps_done, run.wall_time_s = len(losses), wall_time_s
        run.diverged_step = len(losses) - 1 if status == DIVERGED else None
        session.add_all(
            Step(run_id=run_id, step=k, loss=loss, time_s=0.1 * (k + 1), step_time_ms=100.0)
            for k, loss in enumerate(losses)
        )
        session.add_all(
            Eval(run_id=run_id, step=step, train_loss=1.0, val_loss=val_loss, val_accuracy=accuracy)
            for step, val_loss, accuracy in evals
        )
        comparisons.refresh_comparison(session, run.comparison_id)


def _auc(losses: list[float]) -> float:
    finite = np.array([v for v in losses if math.isfinite(v)])
    return float(np.mean(np.log10(np.maximum(finite, 1e-12))))


def _log_t(values: list[float]) -> dict[str, Any]:
    """The geometric mean and its 95% t-interval on the log scale, as scipy computes it."""
    if not values:
        return {"estimate": None, "low": None, "high": None, "method": None}
    logs = np.log(values)
    if len(values) == 1:
        return {"estimate": pytest.approx(values[0]), "low": None, "high": None, "method": "log_t"}
    low, high = np.exp(stats.t.interval(0.95, len(values) - 1, loc=logs.mean(), scale=stats.sem(logs)))
    return {"estimate": stats.gmean(values), "low": low, "high": high, "method": "log_t"}


def _first_reach(losses: list[float], target: float) -> int | None:
    hits = [k for k, v in enumerate(losses) if v <= target]
    return hits[0] if hits else None


ADAM = {0: ([4, 2, 1, 0.5, 0.25], 0.2), 1: ([4, 3, 2, 1.5, 0.9], 0.8), 2: ([4, 2.5, 1.0, 0.0, 0.0], 0.5)}
SGD = {0: ([4, 1, 0.5, 0.2, 0.1], 0.1), 1: ([4, 2, 0.8, 0.4, 0.3], 0.3)}
SGD_DIVERGED = [4, 3, 2, NAN]  # seed 2: never reaches 1.0 before its NaN
ADAM_EVALS = {0: [(0, 5.0, 0.1), (5, 0.3, 0.9)], 1: [(5, 0.7, 0.8)], 2: [(5, 0.6, 0.85)]}
ADAM_WALL = {0: 2.0, 1: 3.0, 2: 1.0}


def _adam_vs_sgd(**spec_extra: Any) -> dict:
    ids = _create(
        _spec(
            [{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd", "params": {"lr": 0.1}}], [0, 1, 2], **spec_extra
        )
    )
    for seed, (losses, final) in ADAM.items():
        _finish(ids["adam", seed], losses, final, wall_time_s=ADAM_WALL[seed], evals=ADAM_EVALS[seed])
    for seed, (losses, final) in SGD.items():
        _finish(ids["sgd", seed], losses, final)
    _finish(ids["sgd", 2], SGD_DIVERGED, None, status=DIVERGED, wall_time_s=0.5)
    return ids


def test_leaderboard_figures_rank_and_paired_test(client):
    ids = _adam_vs_sgd(target_loss=1.0)
    response = client.get(f"{BASE}/{ids['id']}/summary")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["target_loss"], body["target_loss_source"]) == ("succeeded", 1.0, "spec")
    assert (body["baseline"], body["metric"]) == ("adam", "final_loss")

    adam, sgd = body["rows"]
    # sgd ends lower on average, but one of its seeds diverged: it ranks after adam
    assert (adam["label"], adam["rank"], sgd["label"], sgd["rank"]) == ("adam", 1, "sgd", 2)
    assert (adam["n_seeds"], adam["n_finished"], adam["n_diverged"]) == (3, 3, 0)
    assert (sgd["n_seeds"], sgd["n_finished"], sgd["n_diverged"]) == (3, 3, 1)
    assert adam["optimizer"] == "adam" and adam["params"]["lr"] == 0.1 and adam["params"]["betas"] == [0.9, 0.999]

    finals = [final for _, final in ADAM.values()]
    low, high = np.exp(stats.t.interval(0.95, 2, loc=np.mean(np.log(finals)), scale=stats.sem(np.log(finals))))
    assert adam["final_loss"] == pytest.approx(
        {
            "mean": np.mean(finals),
            "ci_low": low,
            "ci_high": high,
            "median": 0.5,
            "best": 0.2,
            "worst": 0.8,
            "geometric_mean": stats.gmean(finals),
            "ci_method": "log_t",
        }
    )
    assert sgd["final_loss"]["mean"] == pytest.approx(0.2)  # the diverged seed is left out
    assert adam["best_so_far"] == pytest.approx(np.mean([0.2, 0.8, 0.0]))
    assert adam["val_loss"] == pytest.approx(np.mean([0.3, 0.7, 0.6]))  # each run's last evaluation
    assert adam["val_accuracy"] == pytest.approx(np.mean([0.9, 0.8, 0.85]))
    assert sgd["val_loss"] is None and sgd["val_accuracy"] is None
    assert adam["steps_per_s"] == pytest.approx(15 / 6.0) and sgd["steps_per_s"] == pytest.approx(14 / 2.5)
    assert adam["wall_time_s"] == pytest.approx({"total": 6.0, "mean": 2.0})

    adam_steps = [_first_reach(losses, 1.0) for losses, _ in ADAM.values()]
    assert adam_steps == [2, 4, 2]
    seconds = [0.1 * (k + 1) for k in adam_steps]
    assert adam["time_to_target"].pop("seconds_ci") == pytest.approx(_log_t(seconds))
    assert adam["time_to_target"] == pytest.approx(
        {"steps": np.mean(adam_steps), "reached": 3, "of": 3, "seconds": np.mean(seconds)}
    )
    assert sgd["time_to_target"].pop("seconds_ci") == pytest.approx(_log_t([0.2, 0.3]))
    assert sgd["time_to_target"] == pytest.approx({"steps": 1.5, "seconds": 0.25, "reached": 2, "of": 3})
    # losses of exactly 0 count as the 1e-12 floor; the diverged run is left out
    assert adam["auc_log_loss"] == pytest.approx(np.mean([_auc(losses) for losses, _ in ADAM.values()]))
    assert sgd["auc_log_loss"] == pytest.approx(np.mean([_auc(losses) for losses, _ in SGD.values()]))

    [paired] = body["paired"]
    candidate, baseline = [SGD[0][1], SGD[1][1]], [ADAM[0][1], ADAM[1][1]]  # seed 2 diverged: no pair
    expected = stats.ttest_rel(candidate, baseline)
    interval = expected.confidence_interval(0.95)
    assert (paired["label"], paired["baseline"], paired["n_pairs"]) == ("sgd", "adam", 2)
    assert paired["mean_diff"] == pytest.approx(-0.3)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert paired["t_pvalue"] == pytest.approx(expected.pvalue)
    assert paired["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(np.subtract(candidate, baseline)).pvalue)

    reverse = client.get(f"{BASE}/{ids['id']}/summary", params={"baseline": "sgd"}).json()
    assert reverse["baseline"] == "sgd"
    assert [(p["label"], p["n_pairs"]) for p in reverse["paired"]] == [("adam", 2)]
    assert reverse["paired"][0]["mean_diff"] == pytest.approx(0.3)


def test_default_target_is_the_loosest_best_step_loss_every_non_diverged_run_reaches(client):
    ids = _adam_vs_sgd(baseline="sgd")
    body = client.get(f"{BASE}/{ids['id']}/summary").json()
    assert body["baseline"] == "sgd" and body["paired"][0]["label"] == "adam"  # the spec's baseline
    lowest = [min(losses) for losses, _ in [*ADAM.values(), *SGD.values()]]
    assert (body["target_loss"], body["target_loss_source"]) == (max(lowest), "default")
    adam, sgd = body["rows"]
    assert adam["time_to_target"]["reached"] == adam["time_to_target"]["of"] == 3
    assert (sgd["time_to_target"]["reached"], sgd["time_to_target"]["of"]) == (2, 3)


def test_a_running_comparison_counts_finished_runs_only(client):
    ids = _create(_spec([{"name": "adam", "params": {}}, {"name": "sgd", "params": {}}], [0, 1]))
    _finish(ids["adam", 0], [3.0, 2.0, 1.0], 0.9)
    with transaction() as session:  # adam seed 1 is still training, and already lower
        session.get(Run, ids["adam", 1]).status = RUNNING
        session.add_all(
            Step(run_id=ids["adam", 1], step=k, loss=loss, time_s=0.1, step_time_ms=1.0)
            for k, loss in enumerate([3.0, 0.001])
        )
        comparisons.refresh_comparison(session, ids["id"])

    body = client.get(f"{BASE}/{ids['id']}/summary").json()
    assert body["status"] == "running"
    assert body["target_loss"] == 1.0  # from the finished run alone
    adam, sgd = body["rows"]
    assert (adam["label"], adam["n_seeds"], adam["n_finished"], adam["rank"]) == ("adam", 2, 1, 1)
    assert adam["final_loss"] == {
        "mean": 0.9,
        "ci_low": None,
        "ci_high": None,
        "median": 0.9,
        "best": 0.9,
        "worst": 0.9,
        "geometric_mean": pytest.approx(0.9),
        "ci_method": "log_t",
    }
    assert adam["time_to_target"].pop("seconds_ci") == _log_t([0.3])
    assert adam["time_to_target"] == {"steps": 2.0, "seconds": pytest.approx(0.3), "reached": 1, "of": 1}
    assert (sgd["label"], sgd["n_finished"], sgd["rank"], sgd["final_loss"]["mean"]) == ("sgd", 0, None, None)
    assert sgd["wall_time_s"] == {"total": None, "mean": None} and sgd["steps_per_s"] is None
    assert body["paired"] == [
        {
            "label": "sgd",
            "baseline": "adam",
            "n_pairs": 0,
            "mean_diff": None,
            "ci_low": None,
            "ci_high": None,
            "t_pvalue": None,
            "wilcoxon_pvalue": None,
            "t_pvalue_holm": None,
            "wilcoxon_pvalue_holm": None,
            "prob_improvement": None,
            "prob_improvement_ci_low": None,
            "prob_improvement_ci_high": None,
        }
    ]


def test_a_reused_run_reads_its_rows_from_its_source_and_non_finite_values_are_strings(client):
    spec = _spec([{"name": "adam", "params": {}}], [0], target_loss=0.5)
    source = _create(spec)
    _finish(source["adam", 0], [2.0, 1.0, 0.4], 0.3, evals=[(3, math.inf, 0.5)])
    reused = _create(spec)
    with transaction() as session:
        run = session.get(Run, reused["adam", 0])
        run.status, run.final_loss, run.best_loss, run.steps_done, run.wall_time_s = SUCCEEDED, 0.3, 0.3, 3, 1.0
        run.reused_from_id = source["adam", 0]
        comparisons.refresh_comparison(session, reused["id"])

    [row] = client.get(f"{BASE}/{reused['id']}/summary").json()["rows"]
    assert row["time_to_target"].pop("seconds_ci") == _log_t([0.3])
    assert row["time_to_target"] == {"steps": 2.0, "seconds": pytest.approx(0.3), "reached": 1, "of": 1}
    assert row["auc_log_loss"] == pytest.approx(_auc([2.0, 1.0, 0.4]))
    assert (row["val_loss"], row["val_accuracy"]) == ("Infinity", 0.5)


def test_a_trained_example_agrees_with_its_own_step_rows(client):
    """The Adam-vs-SGD example trained for real by the Celery task: the summary's step-derived
    figures equal those computed here from the rows GET /runs/{id}/steps returns."""
    from worker.tasks import train_run

    spec = json.loads((Path(__file__).parents[2] / "examples" / "adam_vs_sgd_quadratic.json").read_text())
    submitted = client.post(BASE, json=spec | {"device": "cpu", "target_loss": 1.0}).json()
    for run in submitted["runs"]:
        assert train_run.apply(args=[run["id"]]).get() == "succeeded"
    body = client.get(f"{BASE}/{submitted['id']}/summary").json()
    assert (body["status"], body["baseline"]) == ("succeeded", "adam")

    for run in submitted["runs"]:
        [row] = [r for r in body["rows"] if r["label"] == run["label"]]
        steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
        losses = [step["loss"] for step in steps]
        first = _first_reach(losses, 1.0)
        reached = (
            {"steps": first, "seconds": steps[first]["time_s"], "reached": 1, "of": 1}
            if first is not None
            else {"steps": None, "seconds": None, "reached": 0, "of": 1}
        )
        assert row["time_to_target"].pop("seconds_ci") == _log_t([reached["seconds"]] if first is not None else [])
        assert row["time_to_target"] == pytest.approx(reached)
        assert row["auc_log_loss"] == pytest.approx(_auc(losses), rel=1e-12)
        stored = client.get(f"/api/v1/runs/{run['id']}").json()
        assert row["final_loss"]["mean"] == stored["final_loss"] and row["best_so_far"] == stored["best_loss"]
    # SGD with lr 0.1 shrinks the distance to the minimum by 0.8 a step, Adam by at most lr: SGD wins
    assert [(r["label"], r["rank"]) for r in body["rows"]] == [("sgd", 1), ("adam", 2)]
    assert body["rows"][0]["time_to_target"]["reached"] == 1


def _store_runs(spec: dict, runs: list[dict]) -> str:
    """A comparison with these runs, as sweeps and tuning jobs create them (labels with swept values)."""
    with transaction() as session:
        comparison = Comparison(name=spec["name"], spec=spec, status=SUCCEEDED)
        for position, run in enumerate(runs):
            status = DIVERGED if run.get("final") is None else SUCCEEDED
            comparison.runs.append(
                Run(
                    position=position,
                    steps_total=5,
                    steps_done=5,
                    status=status,
                    optimizer_params={},
                    best_loss=run.get("final"),
                    final_loss=run.get("final"),
                    **{k: v for k, v in run.items() if k != "final"},
                )
            )
        session.add(comparison)
        session.flush()
        return comparison.id


def _sweep_run(
    entry_index: int, name: str, seed: int, final: float | None, phase: str | None = None, **values: float
) -> dict:
    label = f"{name}({', '.join(f'{k}={v}' for k, v in values.items())})"
    return {
        "entry_index": entry_index,
        "label": label,
        "optimizer_name": name,
        "seed": seed,
        "final": final,
        "sweep_values": values,
        "phase": phase,
    }


def test_sensitivity_gives_the_final_loss_against_each_swept_value_per_entry(client):
    spec = _spec([{"name": "adam", "params": {}}, {"name": "sgd", "params": {}}], [0, 1])
    adam = {0.1: [0.3, 0.5], 0.001: [0.6, 0.8], 1.0: [0.9, None]}
    runs = [
        _sweep_run(0, "adam", seed, final, lr=lr) for lr, finals in adam.items() for seed, final in enumerate(finals)
    ]
    runs += [
        _sweep_run(1, "sgd", 0, 0.4, lr=0.1, momentum=0.9),
        _sweep_run(1, "sgd", 0, 0.7, lr=0.01, momentum=0.9),
        _sweep_run(1, "sgd", 0, 0.2, lr=0.1, momentum=0.0),
    ]
    comparison_id = _store_runs(spec, runs)

    body = client.get(f"{BASE}/{comparison_id}/sensitivity", params={"param": "lr"}).json()
    assert (body["param"], body["swept"], body["metric"]) == ("lr", ["lr", "momentum"], "final_loss")
    adam_series, sgd_momentum, sgd_plain = body["series"]
    assert (adam_series["label"], adam_series["entry_index"], adam_series["fixed"]) == ("adam", 0, {})
    assert [p["value"] for p in adam_series["points"]] == [0.001, 0.1, 1.0]
    logs = np.log([0.3, 0.5])
    low, high = np.exp(stats.t.interval(0.95, 1, loc=logs.mean(), scale=stats.sem(logs)))
    middle, diverging = adam_series["points"][1:]
    assert (middle["value"], middle["n"], middle["n_diverged"]) == (0.1, 2, 0)
    assert middle["final_loss"] == pytest.approx(
        {
            "mean": 0.4,
            "ci_low": low,
            "ci_high": high,
            "median": 0.4,
            "best": 0.3,
            "worst": 0.5,
            "geometric_mean": np.sqrt(0.15),
            "ci_method": "log_t",
        }
    )
    assert (diverging["value"], diverging["n"], diverging["n_diverged"]) == (1.0, 1, 1)
    assert diverging["final_loss"] == {
        "mean": 0.9,
        "ci_low": None,
        "ci_high": None,
        "median": 0.9,
        "best": 0.9,
        "worst": 0.9,
        "geometric_mean": pytest.approx(0.9),
        "ci_method": "log_t",
    }
    assert (sgd_momentum["label"], sgd_momentum["fixed"]) == ("sgd", {"momentum": 0.9})
    assert [(p["value"], p["final_loss"]["mean"]) for p in sgd_momentum["points"]] == [(0.01, 0.7), (0.1, 0.4)]
    assert [(p["value"], p["final_loss"]["mean"]) for p in sgd_plain["points"]] == [(0.1, 0.2)]

    by_momentum = client.get(f"{BASE}/{comparison_id}/sensitivity", params={"param": "momentum"}).json()
    assert [(s["label"], s["fixed"], [p["value"] for p in s["points"]]) for s in by_momentum["series"]] == [
        ("sgd", {"lr": 0.1}, [0.0, 0.9]),
        ("sgd", {"lr": 0.01}, [0.9]),
    ]

    response = client.get(f"{BASE}/{comparison_id}/sensitivity", params={"param": "beta1"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "param"] and "swept: lr, momentum" in error["msg"]


def test_a_tuning_job_with_one_seed_shows_the_settings_its_search_chose(client):
    # one tuning seed: the search runs are the only runs, and the chosen settings are theirs
    spec = _spec(
        [{"name": "adam", "params": {}}, {"name": "sgd", "params": {}}],
        [0],
        tuning={"metric": "final_loss", "seeds": [0]},
    )
    runs = [
        _sweep_run(0, "adam", 0, 0.4, "search", lr=0.1),
        _sweep_run(0, "adam", 0, 0.2, "search", lr=0.01),
        _sweep_run(1, "sgd", 0, None, "search", lr=1.0),
        _sweep_run(1, "sgd", 0, 0.5, "search", lr=0.1),
        _sweep_run(1, "sgd", 0, 0.5, "search", lr=0.01),
    ]
    comparison_id = _store_runs(spec, runs)

    chosen = client.get(f"{BASE}/{comparison_id}/summary").json()
    assert chosen["baseline"] == "adam(lr=0.01)"
    # the diverged setting loses; a tie goes to the earlier setting
    assert [(r["label"], r["n_seeds"], r["rank"]) for r in chosen["rows"]] == [
        ("adam(lr=0.01)", 1, 1),
        ("sgd(lr=0.1)", 1, 2),
    ]
    assert [p["label"] for p in chosen["paired"]] == ["sgd(lr=0.1)"]
    with transaction() as session:
        comparisons.refresh_comparison(session, comparison_id)
    with transaction() as session:
        assert session.get(Comparison, comparison_id).winners == ["adam(lr=0.01)"]


def test_a_tuning_job_shows_its_chosen_settings_unless_phase_is_all(client):
    spec = _spec(
        [{"name": "adam", "params": {}}, {"name": "sgd", "params": {}}],
        [0],
        tuning={"metric": "final_loss", "seeds": [0, 1, 2]},
    )
    runs = [
        _sweep_run(0, "adam", 0, 0.4, "search", lr=0.1),
        _sweep_run(0, "adam", 0, 0.2, "search", lr=0.01),
        _sweep_run(1, "sgd", 0, 0.5, "search", lr=0.1),
        _sweep_run(1, "sgd", 0, 0.7, "search", lr=0.01),
        _sweep_run(0, "adam", 1, 0.3, "final", lr=0.01),
        _sweep_run(0, "adam", 2, 0.25, "final", lr=0.01),
        _sweep_run(1, "sgd", 1, 0.65, "final", lr=0.1),
        _sweep_run(1, "sgd", 2, 0.55, "final", lr=0.1),
    ]
    comparison_id = _store_runs(spec, runs)

    chosen = client.get(f"{BASE}/{comparison_id}/summary").json()
    assert chosen["phase"] == "chosen" and chosen["baseline"] == "adam(lr=0.01)"  # the first entry's chosen setting
    assert [(r["label"], r["n_seeds"], r["rank"]) for r in chosen["rows"]] == [
        ("adam(lr=0.01)", 3, 1),
        ("sgd(lr=0.1)", 3, 2),
    ]
    [paired] = chosen["paired"]
    assert (paired["label"], paired["n_pairs"]) == ("sgd(lr=0.1)", 3)
    assert paired["t_pvalue"] == pytest.approx(stats.ttest_rel([0.5, 0.65, 0.55], [0.2, 0.3, 0.25]).pvalue)

    every = client.get(f"{BASE}/{comparison_id}/summary", params={"phase": "all"}).json()
    assert [r["label"] for r in every["rows"]] == ["adam(lr=0.01)", "adam(lr=0.1)", "sgd(lr=0.1)", "sgd(lr=0.01)"]
    # an entry's label as the baseline stands for that entry's chosen setting
    by_entry = client.get(f"{BASE}/{comparison_id}/summary", params={"baseline": "sgd"}).json()
    assert by_entry["baseline"] == "sgd(lr=0.1)" and by_entry["paired"][0]["label"] == "adam(lr=0.01)"

    response = client.get(f"{BASE}/{comparison_id}/summary", params={"baseline": "rmsprop"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "baseline"] and "unknown baseline 'rmsprop'" in error["msg"]


def test_another_teams_deleted_and_missing_comparisons_are_404(client):
    spec = _spec([{"name": "adam", "params": {}}], [0])
    with transaction() as session:
        team = Team(name=f"other-{new_id()}")
        session.add(team)
        session.flush()
        team_id = team.id
    others = _create(spec, team_id=team_id)["id"]
    deleted = _create(spec)["id"]
    with transaction() as session:
        session.get(Comparison, deleted).deleted_at = utcnow()
    for comparison_id in (others, deleted, "nope"):
        for path in ("summary", "sensitivity"):
            response = client.get(f"{BASE}/{comparison_id}/{path}")
            assert response.status_code == 404, (path, response.text)


def test_positive_intervals_robust_aggregates_holm_budget_rankings_and_shared_times(client):
    """Five seeds of three optimizers: adam leads early, sgd ends lowest with losses as tiny and spread
    as the README's MLP example (a t-interval below 0), rmsprop diverges on one seed after 75 % of its
    steps. sgd's runs trained as an ensemble."""
    seeds = [0, 1, 2, 3, 4]
    ids = _create(_spec([{"name": n, "params": {}} for n in ("adam", "sgd", "rmsprop")], seeds))
    sgd_finals = [0.2e-6, 0.8e-6, 3.4e-6, 1.0e-6, 0.5e-6]
    adam_finals = [0.3, 0.35, 0.28, 0.4, 0.33]
    accuracies = [0.99, 1.0, 0.98, 1.0, 0.97]
    for seed in seeds:
        scale = 1 + 0.1 * seed
        _finish(
            ids["adam", seed],
            [4, 1.0 * scale, 0.5 * scale, 0.4 * scale, 0.35],
            adam_finals[seed],
            evals=[(5, 0.5, accuracies[seed])],
        )
        _finish(ids["sgd", seed], [4, 3 * scale, 1.0 * scale, 0.2 * scale, 0.1], sgd_finals[seed])
        if seed == 4:
            _finish(ids["rmsprop", seed], [4, 2, 0.8, 0.3, NAN], None, status=DIVERGED)
        else:
            _finish(ids["rmsprop", seed], [4, 2 * scale, 0.8 * scale, 0.3 * scale, 0.2], 0.1 + 0.01 * seed)
    with transaction() as session:  # how each run trained, as the worker records it
        for label in ("adam", "sgd", "rmsprop"):
            for seed in seeds:
                session.get(Run, ids[label, seed]).execution = "ensemble" if label == "sgd" else "alone"

    body = client.get(f"{BASE}/{ids['id']}/summary").json()
    rows = {row["label"]: row for row in body["rows"]}
    assert [(row["label"], row["rank"]) for row in body["rows"]] == [("sgd", 1), ("adam", 2), ("rmsprop", 3)]

    # the loss interval: the geometric mean's, on the log scale, positive where the t-interval is not
    sgd = rows["sgd"]["final_loss"]
    assert stats.t.interval(0.95, 4, loc=np.mean(sgd_finals), scale=stats.sem(sgd_finals))[0] < 0
    expected = _log_t(sgd_finals)
    assert (sgd["geometric_mean"], sgd["ci_low"], sgd["ci_high"], sgd["ci_method"]) == pytest.approx(
        (expected["estimate"], expected["low"], expected["high"], "log_t")
    )
    assert 0 < sgd["ci_low"] < sgd["geometric_mean"] < sgd["ci_high"]
    # accuracies: the mean's t-interval, clipped to [0, 1]
    low, high = stats.t.interval(0.95, 4, loc=np.mean(accuracies), scale=stats.sem(accuracies))
    assert high > 1
    assert rows["adam"]["val_accuracy_ci"] == pytest.approx(
        {"estimate": np.mean(accuracies), "low": low, "high": 1.0, "method": "t_clipped"}
    )

    # robust aggregates from five finite final losses on; rmsprop has four
    adam_robust = rows["adam"]["robust"]
    assert (adam_robust["n"], adam_robust["median"]) == (5, np.median(adam_finals))
    assert adam_robust["iqm"] == pytest.approx(np.mean(sorted(adam_finals)[1:4]))  # int(0.25 · 5) = 1 cut each end
    assert min(adam_finals) <= adam_robust["iqm_ci_low"] <= adam_robust["iqm"] <= adam_robust["iqm_ci_high"]
    assert rows["rmsprop"]["robust"] is None

    # Holm over the two settings compared with adam; P(improvement) is rliable's over the matched seeds
    paired = {pair["label"]: pair for pair in body["paired"]}
    rms_finals = [0.1, 0.11, 0.12, 0.13]
    raw = {
        "sgd": stats.ttest_rel(sgd_finals, adam_finals).pvalue,
        "rmsprop": stats.ttest_rel(rms_finals, adam_finals[:4]).pvalue,
    }
    first, second = sorted(raw, key=raw.get)
    holm = {first: min(1, 2 * raw[first])}
    holm[second] = max(holm[first], raw[second])
    for label in raw:
        assert paired[label]["t_pvalue"] == pytest.approx(raw[label])
        assert paired[label]["t_pvalue_holm"] == pytest.approx(holm[label])
        assert paired[label]["wilcoxon_pvalue_holm"] >= paired[label]["wilcoxon_pvalue"]
    assert paired["rmsprop"]["n_pairs"] == 4 and paired["rmsprop"]["prob_improvement_ci_low"] is None
    u = stats.mannwhitneyu(adam_finals, sgd_finals).statistic  # adam > sgd counts, ties 1/2
    assert paired["sgd"]["prob_improvement"] == pytest.approx(u / 25) == 1.0
    assert paired["sgd"]["prob_improvement_ci_low"] == paired["sgd"]["prob_improvement_ci_high"] == 1.0

    # rankings at 25, 50, 75 and 100 % of the 5 steps: steps 1, 2, 3, then the final loss
    budgets = body["budgets"]
    assert [(b["fraction"], b["changed"]) for b in budgets] == [(0.25, False), (0.5, False), (0.75, True), (1.0, True)]
    assert body["ranking_changes"] is True
    ranks = [[(r["label"], r["step"], r["rank"]) for r in b["rows"]] for b in budgets]
    assert ranks[0] == [("adam", 1, 1), ("rmsprop", 1, 2), ("sgd", 1, 3)]
    assert ranks[2] == [("sgd", 3, 1), ("rmsprop", 3, 2), ("adam", 3, 3)]
    assert ranks[3] == [("sgd", 5, 1), ("adam", 5, 2), ("rmsprop", 5, 3)]
    step_one = {r["label"]: r for r in budgets[0]["rows"]}
    assert step_one["adam"]["mean_loss"] == pytest.approx(np.mean([1 + 0.1 * s for s in seeds]))
    assert (step_one["rmsprop"]["n_finished"], step_one["rmsprop"]["n_diverged"]) == (5, 0)  # it diverged later
    final = {r["label"]: r for r in budgets[3]["rows"]}
    assert (final["rmsprop"]["n_diverged"], final["sgd"]["mean_loss"]) == (1, pytest.approx(np.mean(sgd_finals)))

    # the ensemble's members share its wall time, and say so
    assert (rows["sgd"]["timed_together"], rows["adam"]["timed_together"]) == (True, False)
    assert client.get(f"{BASE}/{ids['id']}/summary").json() == body  # the bootstrap is seeded


def test_an_early_budget_ranks_on_the_mean_loss_of_its_last_percent_of_steps(client):
    """adam and sgd plan 400 steps: the 25 % budget reads steps 97 to 100, and adam's lucky batch at
    step 100 does not put it ahead of sgd. rmsprop plans 200 (steps 49 and 50 at 25 %, 99 and 100 at
    50 %) and diverges at step 98: it leads at 25 % and counts as diverged at 50 %."""
    spec = _spec([{"name": n, "params": {}} for n in ("adam", "sgd", "rmsprop")], [0])
    with transaction() as session:
        created = comparisons.create_comparison(session, spec, [400, 400, 200])
        ids = {run.label: run.id for run in created.runs}
    adam = [1.0] * 400
    adam[100] = 0.1
    _finish(ids["adam"], adam, 0.9)
    _finish(ids["sgd"], [0.5] * 400, 0.4)
    _finish(ids["rmsprop"], [0.3] * 98 + [NAN], None, status=DIVERGED)

    quarter, half = client.get(f"{BASE}/{created.id}/summary").json()["budgets"][:2]
    assert [(r["label"], r["step"], r["rank"], r["n_diverged"]) for r in quarter["rows"]] == [
        ("rmsprop", 50, 1, 0),
        ("sgd", 100, 2, 0),
        ("adam", 100, 3, 0),
    ]
    assert [r["mean_loss"] for r in quarter["rows"]] == pytest.approx([0.3, 0.5, np.mean(adam[97:101])])
    assert [(r["label"], r["step"], r["rank"], r["n_diverged"]) for r in half["rows"]] == [
        ("sgd", 200, 1, 0),
        ("adam", 200, 2, 0),
        ("rmsprop", 100, 3, 1),
    ]
