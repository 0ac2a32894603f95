"""GET /runs/{id}/curve and GET /comparisons/{id}/curves over HTTP, on both databases: buckets
against numpy over the documented grid, raw rows, zoom, time and epoch axes, eval metrics, reused
runs, seed aggregation with t-intervals and min/max bands, 422s naming the field, 404s across teams."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import insert, update

from api.schemas import json_safe
from db import comparisons
from db.models import LOCAL_TEAM_ID, Comparison, Eval, Run, Step, Team, utcnow
from db.session import transaction
from engine.spec import ComparisonSpec

# --- data made directly in the database (no worker) ---------------------------------------------


@dataclass
class Made:
    id: str
    #: (run id, label, seed) in position order
    runs: list[tuple[str, str, int]]


def make_comparison(
    labels: tuple[str, ...] = ("adam",), seeds: tuple[int, ...] = (0,), dim: int = 1, team_id: str = LOCAL_TEAM_ID
) -> Made:
    spec = ComparisonSpec.model_validate(
        {
            "name": "curves",
            "training": {"steps": 10},
            "seeds": list(seeds),
            "problem": {"function": {"name": "quadratic", "params": {"center": [2.0] * dim}}, "x0": [8.0] * dim},
            "optimizers": [
                {"name": "sgd", "label": label, "params": {"lr": 0.1 * (i + 1)}} for i, label in enumerate(labels)
            ],
        }
    ).model_dump(mode="json")
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, 10, team_id=team_id)
        return Made(comparison.id, [(run.id, run.label, run.seed) for run in comparison.runs])


def store_steps(run_id: str, loss, time_s=None, epoch=None, first_step: int = 0, **columns) -> list[dict]:
    """Step rows as a worker writes them; returns them."""
    n = len(loss)
    rows = [
        {
            "run_id": run_id,
            "step": first_step + i,
            "loss": float(loss[i]),
            "time_s": float(time_s[i]) if time_s is not None else 0.01 * (first_step + i + 1),
            "epoch": None if epoch is None else int(epoch[i]),
            "step_time_ms": 10.0,
            "lr": 0.1,
            **{name: values[i] for name, values in columns.items()},
        }
        for i in range(n)
    ]
    with transaction() as session:
        session.execute(insert(Step), rows)
    return rows


def other_team() -> str:
    with transaction() as session:
        team = Team(name=f"other-{uuid.uuid4().hex[:8]}")
        session.add(team)
        session.flush()
        return team.id


def soft_delete(comparison_id: str) -> None:
    with transaction() as session:
        session.execute(update(Comparison).where(Comparison.id == comparison_id).values(deleted_at=utcnow()))


@pytest.fixture
def client(use_database):
    from api.main import create_app

    return TestClient(create_app())


def curve(client: TestClient, run_id: str, **params) -> dict:
    response = client.get(f"/api/v1/runs/{run_id}/curve", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def number(value) -> float:
    """A JSON number, or the strings non-finite floats become."""
    return float(value)


def grid_index(x: np.ndarray, start: float, end: float, points: int) -> np.ndarray:
    """The documented bucket of x."""
    return np.minimum(np.floor((x - start) * (points / (end - start))), points - 1).astype(int)


def noisy_losses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(-np.arange(n) / 200) + rng.normal(0, 0.05, n)


# --- one run -------------------------------------------------------------------------------------


def test_buckets_hold_first_last_min_max_mean_of_their_rows_and_spikes_stay(client):
    ((run_id, *_),) = make_comparison().runs
    loss = noisy_losses(1000)
    loss[337], loss[512], loss[700], loss[999] = math.nan, math.inf, 1e6, -math.inf
    store_steps(run_id, loss)

    body = curve(client, run_id, points=50)
    assert (body["raw"], body["rows"], body["points"], body["start"], body["end"]) == (False, 1000, 50, 0, 999)
    buckets = body["buckets"]
    index = grid_index(np.arange(1000.0), 0, 999, 50)
    assert len(buckets) == 50
    for i, bucket in enumerate(buckets):
        steps = np.flatnonzero(index == i)
        values = loss[steps]
        finite, not_nan = values[np.isfinite(values)], values[~np.isnan(values)]
        assert (bucket["x_start"], bucket["x_end"], bucket["count"]) == (steps[0], steps[-1], len(steps))
        assert (bucket["first"], bucket["last"]) == (json_safe(values[0].item()), json_safe(values[-1].item()))
        assert (number(bucket["min"]), number(bucket["max"])) == (not_nan.min(), not_nan.max())
        assert bucket["mean"] == pytest.approx(finite.mean(), rel=1e-12)
        counts = {
            "nan": np.isnan(values).sum(),
            "pos_inf": (values == np.inf).sum(),
            "neg_inf": (values == -np.inf).sum(),
        }
        assert {k: bucket[k] for k in counts if k in bucket} == {k: v for k, v in counts.items() if v}
    by_step = {s: buckets[index[s]] for s in (337, 512, 700)}
    assert by_step[337]["nan"] == 1 and math.isfinite(by_step[337]["max"])
    assert by_step[512]["max"] == "Infinity" and by_step[700]["max"] == 1e6
    # the last row is exact even where it is non-finite
    assert buckets[-1]["last"] == "-Infinity" and buckets[-1]["min"] == "-Infinity"
    assert (buckets[0]["x_start"], buckets[0]["first"]) == (0, loss[0])


def test_no_more_rows_than_points_gives_the_raw_rows(client):
    ((run_id, *_),) = make_comparison().runs
    rows = store_steps(run_id, [3.0, math.nan, math.inf, 0.5], first_step=7)
    body = curve(client, run_id, points=4)
    assert body["raw"] is True and body["rows"] == 4 and (body["start"], body["end"]) == (7, 10)
    raw = [(b["x_start"], b["x_end"], b["count"], b["first"], b["last"]) for b in body["buckets"]]
    as_json = ["NaN" if math.isnan(r["loss"]) else "Infinity" if r["loss"] == math.inf else r["loss"] for r in rows]
    assert raw == [(r["step"], r["step"], 1, v, v) for r, v in zip(rows, as_json)]
    assert body["buckets"][1]["min"] is None and body["buckets"][1]["nan"] == 1
    assert body["buckets"][2]["max"] == "Infinity" and body["buckets"][2]["mean"] is None


def test_zoom_rebuckets_the_window_at_full_detail(client):
    ((run_id, *_),) = make_comparison().runs
    loss = noisy_losses(2000, seed=1)
    store_steps(run_id, loss)

    overview = curve(client, run_id, points=20)
    assert overview["rows"] == 2000 and len(overview["buckets"]) == 20

    narrow = curve(client, run_id, points=100, start=1234, end=1300)
    assert narrow["raw"] is True and narrow["rows"] == 67
    assert [b["x_start"] for b in narrow["buckets"]] == list(range(1234, 1301))
    assert [b["first"] for b in narrow["buckets"]] == loss[1234:1301].tolist()

    wide = curve(client, run_id, points=10, start=100.5, end=1900)
    assert (wide["raw"], wide["rows"], wide["start"], wide["end"]) == (False, 1800, 100.5, 1900)
    assert (wide["buckets"][0]["x_start"], wide["buckets"][-1]["x_end"]) == (101, 1900)
    assert wide["buckets"][0]["first"] == loss[101] and wide["buckets"][-1]["last"] == loss[1900]
    index = grid_index(np.arange(101.0, 1901), 100.5, 1900, 10)
    assert [b["count"] for b in wide["buckets"]] == np.bincount(index).tolist()

    only_start = curve(client, run_id, points=10, start=1990)
    assert (only_start["rows"], only_start["end"]) == (10, 1999)


def test_time_and_epoch_axes(client):
    ((run_id, *_),) = make_comparison().runs
    rng = np.random.default_rng(2)
    time_s = np.cumsum(rng.uniform(0.001, 0.2, 600))
    epoch = np.arange(600) // 100
    loss = noisy_losses(600, seed=2)
    store_steps(run_id, loss, time_s=time_s, epoch=epoch)

    by_time = curve(client, run_id, x="time", points=25)
    assert (by_time["start"], by_time["end"], by_time["rows"]) == (time_s[0], time_s[-1], 600)
    index = grid_index(time_s, time_s[0], time_s[-1], 25)
    occupied = np.unique(index)
    assert [b["count"] for b in by_time["buckets"]] == np.bincount(index)[occupied].tolist()
    assert [b["x_end"] for b in by_time["buckets"]] == [time_s[index == i][-1] for i in occupied]

    window = curve(client, run_id, x="time", points=1000, start=float(time_s[10]), end=float(time_s[20]))
    assert window["raw"] is True and [b["x_start"] for b in window["buckets"]] == time_s[10:21].tolist()

    by_epoch = curve(client, run_id, x="epoch", points=3)
    assert [(b["x_start"], b["x_end"], b["count"]) for b in by_epoch["buckets"]] == [
        (0, 1, 200),
        (2, 3, 200),
        (4, 5, 200),
    ]
    assert [b["last"] for b in by_epoch["buckets"]] == [loss[199], loss[399], loss[599]]


def test_eval_metrics_and_optional_extras(client):
    ((run_id, *_),) = make_comparison().runs
    store_steps(run_id, [1.0, 0.5, 0.25], grad_norm=[2.0, math.nan, 1.0])
    evals = [
        {
            "run_id": run_id,
            "step": s,
            "epoch": s // 2,
            "train_loss": 1 / (s + 1),
            "val_loss": 2 / (s + 1),
            "train_accuracy": None,
            "val_accuracy": None,
        }
        for s in range(0, 30, 3)
    ]
    with transaction() as session:
        session.execute(insert(Eval), evals)

    val = curve(client, run_id, metric="val_loss", points=5)
    assert (val["raw"], val["rows"], val["end"]) == (False, 10, 27)
    assert [b["count"] for b in val["buckets"]] == [2] * 5
    assert val["buckets"][0]["first"] == 2.0 and val["buckets"][-1]["last"] == 2 / 28
    assert curve(client, run_id, metric="train_loss", x="epoch", points=100)["rows"] == 10

    grad = curve(client, run_id, metric="grad_norm")
    assert [b["first"] for b in grad["buckets"]] == [2.0, "NaN", 1.0]
    absent = curve(client, run_id, metric="update_norm")
    assert (absent["raw"], absent["rows"], absent["buckets"], absent["start"], absent["end"]) == (
        True,
        0,
        [],
        None,
        None,
    )


def test_a_reused_run_reads_its_source_rows(client):
    source, reuser = (run for run, *_ in make_comparison(seeds=(0, 1)).runs)
    store_steps(source, noisy_losses(300, seed=3))
    with transaction() as session:
        session.execute(update(Run).where(Run.id == reuser).values(reused_from_id=source, status="succeeded"))
    ours, theirs = curve(client, reuser, points=30), curve(client, source, points=30)
    assert ours["run_id"] == reuser and ours["rows"] == 300
    assert ours["buckets"] == theirs["buckets"]


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"metric": "accuracy"}, "metric", "'val_accuracy'"),
        ({"x": "wall"}, "x", "'epoch'"),
        ({"points": 1}, "points", "2"),
        ({"points": 10_001}, "points", "10000"),
        ({"start": 5, "end": 5}, "end", "greater than start"),
        ({"start": 9, "end": 2}, "end", "greater than start"),
        ({"start": -1e308, "end": 1e308}, "end", "finite width"),
        ({"start": "nan"}, "start", "finite"),
        ({"end": "inf"}, "end", "finite"),
        ({"metric": "val_loss", "x": "time"}, "x", "wall time"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(client, params, field, says):
    ((run_id, *_),) = make_comparison().runs
    response = client.get(f"/api/v1/runs/{run_id}/curve", params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field] and says in error["msg"]


def test_unknown_metric_lists_the_choices(client):
    ((run_id, *_),) = make_comparison().runs
    message = client.get(f"/api/v1/runs/{run_id}/curve", params={"metric": "acc"}).json()["detail"][0]["msg"]
    for metric in (
        "loss",
        "lr",
        "step_time_ms",
        "grad_norm",
        "update_norm",
        "train_loss",
        "val_loss",
        "train_accuracy",
        "val_accuracy",
    ):
        assert f"'{metric}'" in message


def test_other_teams_deleted_and_missing_runs_are_404(client):
    ((theirs, *_),) = make_comparison(team_id=other_team()).runs
    deleted = make_comparison()
    soft_delete(deleted.id)
    for run_id in (theirs, deleted.runs[0][0]):
        store_steps(run_id, [1.0])
    for run_id in (theirs, deleted.runs[0][0], "no-such-run"):
        assert client.get(f"/api/v1/runs/{run_id}/curve").status_code == 404
    for comparison_id in (make_comparison(team_id=other_team()).id, deleted.id, "nope"):
        assert client.get(f"/api/v1/comparisons/{comparison_id}/curves").status_code == 404


# --- seed aggregation ----------------------------------------------------------------------------


def seed_curves(client: TestClient, comparison_id: str, **params) -> dict:
    response = client.get(f"/api/v1/comparisons/{comparison_id}/curves", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def t_interval(values: np.ndarray) -> tuple[float, float]:
    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


def test_seed_aggregation_per_step_with_t_interval_and_runs_that_stopped_early(client):
    made = make_comparison(labels=("adam", "sgd"), seeds=(0, 1, 2))
    lengths = {0: 100, 1: 100, 2: 60, 3: 100, 4: 100, 5: 0}  # run 2 still running; run 5 queued
    losses = {}
    for position, (run_id, _, seed) in enumerate(made.runs):
        losses[run_id] = noisy_losses(lengths[position], seed=10 + position) if lengths[position] else None
        if lengths[position]:
            store_steps(run_id, losses[run_id])

    body = seed_curves(client, made.id)  # 1000 points over steps 0..99: one step per bucket
    assert (body["x"], body["band"], body["points"], body["x_max"]) == ("step", "ci", 1000, 99)
    adam, sgd = body["groups"]
    assert adam["label"] == "adam" and adam["run_ids"] == [r for r, label, _ in made.runs if label == "adam"]
    assert adam["seeds"] == [0, 1, 2] and adam["optimizer"] == "sgd" and adam["params"]["lr"] == 0.1
    adam_losses = [losses[r] for r in adam["run_ids"]]
    assert [p["x"] for p in adam["points"]] == list(range(100))
    for point in adam["points"]:
        here = np.array([loss[point["x"]] for loss in adam_losses if point["x"] < len(loss)])
        assert point["n"] == len(here) == (3 if point["x"] < 60 else 2)
        assert point["mean"] == pytest.approx(here.mean(), rel=1e-12)
        assert (point["lo"], point["hi"]) == pytest.approx(t_interval(here), rel=1e-9)
    # a group of one run has a mean and no interval
    assert all(p["n"] == 2 for p in sgd["points"])
    single = make_comparison(labels=("solo",))
    store_steps(single.runs[0][0], [1.0, 2.0])
    (solo,) = seed_curves(client, single.id)["groups"]
    assert [(p["n"], p["mean"], p["lo"], p["hi"]) for p in solo["points"]] == [
        (1, 1.0, None, None),
        (1, 2.0, None, None),
    ]


def test_seed_aggregation_on_a_coarse_grid_takes_each_runs_last_value_per_bucket(client):
    made = make_comparison(labels=("adam",), seeds=(0, 1, 2))
    losses = [noisy_losses(500, seed=20 + i) for i in range(3)]
    losses[1][250] = math.nan
    for (run_id, *_), loss in zip(made.runs, losses):
        store_steps(run_id, loss)
    index = grid_index(np.arange(500.0), 0, 499, 7)
    last_steps = [np.flatnonzero(index == i)[-1] for i in range(7)]

    (ci,) = seed_curves(client, made.id, points=7)["groups"]
    (minmax,) = seed_curves(client, made.id, points=7, band="minmax")["groups"]
    for point, band, step in zip(ci["points"], minmax["points"], last_steps, strict=True):
        here = np.array([loss[step] for loss in losses])
        assert point["x"] == band["x"] == step and point["n"] == 3
        assert point["mean"] == pytest.approx(here.mean(), rel=1e-12)
        assert (band["lo"], band["hi"]) == (here.min(), here.max())
    # the NaN at step 250 is the last row of no bucket: it does not show here, but in run curves
    assert 250 not in last_steps and all("nan" not in p for p in ci["points"])


def test_a_nan_at_a_grid_point_makes_that_mean_nan_and_is_counted(client):
    made = make_comparison(seeds=(0, 1, 2))
    for position, (run_id, *_) in enumerate(made.runs):
        store_steps(run_id, [1.0, math.nan if position == 0 else 0.5, 0.25])
    points = seed_curves(client, made.id, band="minmax")["groups"][0]["points"]
    assert [(p["n"], p["mean"], p.get("nan", 0)) for p in points] == [(3, 1.0, 0), (3, "NaN", 1), (3, 0.25, 0)]
    assert (points[1]["lo"], points[1]["hi"]) == (0.5, 0.5)
    assert seed_curves(client, made.id)["groups"][0]["points"][1]["lo"] is None


def test_seed_aggregation_on_wall_time_and_sweep_points_apart(client):
    made = make_comparison(seeds=(0, 1))
    for position, (run_id, *_) in enumerate(made.runs):
        store_steps(run_id, noisy_losses(50, seed=position), time_s=np.arange(1, 51) * (0.1 + 0.05 * position))
    body = seed_curves(client, made.id, x="time", points=10)
    assert body["x_max"] == pytest.approx(50 * 0.15)
    (group,) = body["groups"]
    assert [p["n"] for p in group["points"]][:6] == [2] * 6 and group["points"][-1]["n"] == 1
    assert group["points"][-1]["x"] == pytest.approx(7.5)

    with transaction() as session:
        session.execute(update(Run).where(Run.id == made.runs[1][0]).values(sweep_values={"lr": 0.5}))
    groups = seed_curves(client, made.id)["groups"]
    assert [(g["run_ids"], g["sweep_values"]) for g in groups] == [
        ([made.runs[0][0]], {}),
        ([made.runs[1][0]], {"lr": 0.5}),
    ]


def test_a_comparison_without_rows_has_groups_without_points(client):
    made = make_comparison(labels=("a", "b"))
    body = seed_curves(client, made.id, metric="val_loss")
    assert body["x_max"] is None and [(g["label"], g["points"]) for g in body["groups"]] == [("a", []), ("b", [])]
    response = client.get(f"/api/v1/comparisons/{made.id}/curves", params={"x": "epoch"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "x"]


# --- log scale and grouping ----------------------------------------------------------------------


def log_t_band(values: np.ndarray) -> tuple[float, float, float]:
    """The geometric mean and the 95% t-interval of the logs, exponentiated (the reference)."""
    logs = np.log(values)
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=stats.sem(logs))
    return stats.gmean(values), math.exp(low), math.exp(high)


def test_log_scale_bands_are_t_intervals_of_the_logs_and_never_below_zero(client):
    made = make_comparison(seeds=(0, 1, 2, 3))
    rng = np.random.default_rng(7)
    # losses spread over two decades: the linear band's lower edge goes below 0, the log one cannot
    losses = np.exp(rng.normal(0, 1.5, (4, 40))) * np.exp(-np.arange(40) / 10)
    losses[0, 5], losses[1, 5] = 0.0, -0.5  # left out of step 5's log aggregate, and counted
    losses[:, 9] = [0.0, -1.0, -math.inf, 0.0]  # nothing positive: no mean, no band
    losses[2, 12] = math.nan  # NaN propagates as on the linear scale
    for (run_id, *_), loss in zip(made.runs, losses):
        store_steps(run_id, loss)

    (linear,) = seed_curves(client, made.id)["groups"]
    body = seed_curves(client, made.id, scale="log")
    assert (body["scale"], body["group_by"]) == ("log", "setting")
    (log,) = body["groups"]
    (log_minmax,) = seed_curves(client, made.id, scale="log", band="minmax")["groups"]
    assert any(isinstance(p["lo"], float) and p["lo"] < 0 for p in linear["points"])
    for step, (point, band) in enumerate(zip(log["points"], log_minmax["points"], strict=True)):
        here = losses[:, step]
        positive = here[here > 0]
        assert (point["x"], point["n"], point.get("nonpositive", 0)) == (
            step,
            4,
            4 - len(positive) - np.isnan(here).sum(),
        )
        if step == 9:
            assert (point["mean"], point["lo"], point["hi"], band["lo"], band["hi"]) == (None,) * 5
            assert (point["nonpositive"], point["neg_inf"]) == (4, 1)
        elif step == 12:
            assert (point["mean"], point["lo"], point["nan"]) == ("NaN", None, 1)
            assert (band["lo"], band["hi"]) == (np.nanmin(here), np.nanmax(here))
        else:
            assert (point["mean"], point["lo"], point["hi"]) == pytest.approx(log_t_band(positive), rel=1e-9)
            assert 0 < point["lo"] <= point["mean"] <= point["hi"]
            assert (band["lo"], band["hi"]) == (positive.min(), positive.max())
    assert log["points"][5]["nonpositive"] == 2


GROUPED_SPEC = {
    "name": "grouping",
    "problem": {"model": {"name": "linear"}, "dataset": {"name": "iris"}, "loss": "cross_entropy"},
    "training": {"steps": 10, "batch_size": 16},
    "optimizers": [
        {"name": "adam", "sweep": {"lr": [0.01, 0.001]}},
        {"name": "sgd", "params": {"lr": 0.01}, "batch_size": 32, "label": "sgd big"},
        {"name": "sgd", "params": {"lr": 0.001}},
    ],
    "seeds": [0, 1],
}


def test_group_by_aggregates_every_run_of_a_key_value(client):
    spec = ComparisonSpec.model_validate(GROUPED_SPEC).model_dump(mode="json")
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, 10)
        runs = [(run.id, run.label, run.optimizer_name, run.optimizer_params["lr"]) for run in comparison.runs]
        made_id = comparison.id
    losses = {}
    for i, (run_id, *_) in enumerate(runs):
        losses[run_id] = noisy_losses(30, seed=40 + i) + 1
        store_steps(run_id, losses[run_id])
    batch = {"sgd big": 32}
    expected = {
        "optimizer": [("adam", lambda r: r[2] == "adam"), ("sgd", lambda r: r[2] == "sgd")],
        "params.lr": [("lr=0.01", lambda r: r[3] == 0.01), ("lr=0.001", lambda r: r[3] == 0.001)],
        "batch_size": [("batch_size=16", lambda r: r[1] not in batch), ("batch_size=32", lambda r: r[1] in batch)],
        "label": [(label, lambda r, label=label: r[1] == label) for label in dict.fromkeys(r[1] for r in runs)],
    }
    for group_by, wanted in expected.items():
        body = seed_curves(client, made_id, group_by=group_by, points=10)
        assert body["group_by"] == group_by
        assert [g["label"] for g in body["groups"]] == [name for name, _ in wanted]
        for group, (_, member) in zip(body["groups"], wanted):
            members = [r for r in runs if member(r)]
            assert group["run_ids"] == [r[0] for r in members]
            assert group["settings"] == list(dict.fromkeys(r[1] for r in members))
            index = grid_index(np.arange(30.0), 0, 29, 10)
            for point, bucket in zip(group["points"], range(10), strict=True):
                step = np.flatnonzero(index == bucket)[-1]
                here = np.array([losses[r[0]][step] for r in members])
                assert (point["x"], point["n"]) == (step, len(members))
                assert (point["mean"], point["lo"], point["hi"]) == pytest.approx(
                    (here.mean(), *t_interval(here)), rel=1e-9
                )
    # the default keeps its meaning: one group per setting, the seeds of each
    default = seed_curves(client, made_id, points=10)
    assert default["group_by"] == "setting" and [g["label"] for g in default["groups"]] == [
        "adam(lr=0.01)",
        "adam(lr=0.001)",
        "sgd big",
        "sgd(lr=0.001)",
    ]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"group_by": "seed"}, "pattern"),
        ({"group_by": "params.no_such"}, "'no_such'"),
        ({"group_by": "params."}, "pattern"),
        ({"scale": "ln"}, "'log'"),
    ],
)
def test_bad_scale_or_grouping_is_422_naming_the_field(client, params, says):
    made = make_comparison()
    response = client.get(f"/api/v1/comparisons/{made.id}/curves", params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))] and says in error["msg"], error
