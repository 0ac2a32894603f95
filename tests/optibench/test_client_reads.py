"""Step rows read back into pandas through the client (``Client.steps``, ``evals``, ``comparison_steps``) and the
Arrow stream under them, on SQLite and PostgreSQL: every stored row once, in step order, NULL apart from NaN in
the stream, the infinities and a function problem's points as stored, read in several chunks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from db import step_reads
from db.models import Eval, Step
from db.session import transaction
from optibench.client import Client, OptibenchError
from tests.api.teams import bearer, make_team, submit, team_client

__all__ = ["team_client"]
ROWS = 300
NAN_LOSS = {7, 250}


def _stored_row(step: int, run_id: str = "") -> Step:
    """Every kind of value a column can hold: NaN and the infinities, NULLs in some rows of a column and in
    every row of another, a point with non-finite coordinates and a row without one."""
    loss = {8: math.inf, 9: -math.inf}.get(step, math.nan if step in NAN_LOSS else 1.0 / (1 + step))
    return Step(
        run_id=run_id,
        step=step,
        epoch=None if 10 <= step < 20 else step // 100,
        loss=loss,
        time_s=0.01 * step,
        step_time_ms=0.25,
        lr=None if 100 <= step < 150 else 0.1 / (1 + step),
        grad_norm=None if step < 200 else (math.nan if step == 210 else float(step)),
        x=None if step == 5 else [{4: math.nan, 6: math.inf}.get(step, float(step))],
    )


@pytest.fixture
def stored(team_client, monkeypatch):
    """A comparison whose first run has ROWS rows and two evaluations; read 64 rows a chunk."""
    monkeypatch.setattr(step_reads, "CHUNK_ROWS", 64)
    team = make_team()
    comparison = submit(team_client, team.member)
    run_id, other_id = comparison["runs"][0]["id"], comparison["runs"][1]["id"]
    with transaction() as session:
        session.add_all(_stored_row(step, run_id) for step in range(ROWS))
        session.add_all(Step(run_id=other_id, step=i, loss=2.0, time_s=0.1, step_time_ms=1.0) for i in range(3))
        session.add(Eval(run_id=run_id, step=0, epoch=0, train_loss=5.0, train_accuracy=None, val_loss=math.nan))
        session.add(Eval(run_id=run_id, step=ROWS, epoch=3, train_loss=0.5, val_loss=0.75, val_accuracy=0.5))
    api = Client("http://testserver", api_key=team.member, transport=team_client._transport)
    yield team_client, team, comparison, run_id, api
    api.close()


def test_a_runs_dataframe_has_every_row_once_in_order_with_nan_and_infinities_as_stored(stored):
    _, _, comparison, run_id, api = stored
    frame = api.steps(run_id)
    expected = [_stored_row(step) for step in range(ROWS)]
    assert len(frame) == ROWS
    assert frame["step"].tolist() == list(range(ROWS))
    assert frame["step"].dtype == np.int64 and frame["loss"].dtype == np.float64
    np.testing.assert_array_equal(frame["loss"].to_numpy(), [row.loss for row in expected])
    assert sorted(np.flatnonzero(np.isnan(frame["loss"].to_numpy()))) == sorted(NAN_LOSS)
    assert frame["loss"][8] == math.inf and frame["loss"][9] == -math.inf
    np.testing.assert_array_equal(frame["lr"].to_numpy(), [math.nan if r.lr is None else r.lr for r in expected])
    np.testing.assert_array_equal(
        frame["epoch"].to_numpy(), [math.nan if r.epoch is None else r.epoch for r in expected]
    )
    assert frame["update_norm"].isna().all()
    # a function problem's point before the update, as x0 and x1
    assert frame["x0"][100] == 100.0 and "x1" not in frame.columns
    assert frame["x0"].isna()[5] and math.isnan(frame["x0"][4]) and frame["x0"][6] == math.inf
    # the run's columns, as the comparison export has them
    run = comparison["runs"][0]
    assert isinstance(frame["label"].dtype, pd.CategoricalDtype)
    assert set(frame["run_id"]) == {run_id} and set(frame["label"]) == {run["label"]}
    assert set(frame["comparison_id"]) == {comparison["id"]} and set(frame["optimizer"]) == {"adam"}
    assert frame["seed"].dtype == np.int64 and set(frame["seed"]) == {run["seed"]}
    assert list(frame.columns[:8]) == [
        "comparison_id",
        "run_id",
        "label",
        "optimizer",
        "params",
        "seed",
        "phase",
        "status",
    ]


def test_the_arrow_stream_keeps_null_apart_from_nan(stored):
    client, team, _, run_id, _ = stored
    response = client.get(f"/api/v1/runs/{run_id}/steps", params={"format": "arrow"}, headers=bearer(team.member))
    assert response.status_code == 200, response.text
    reader = pa.ipc.open_stream(response.content)
    table = reader.read_all()
    assert table.num_rows == ROWS and table.schema == step_reads.schema(with_points=True)
    grad_norm = table.column("grad_norm").to_pylist()
    assert grad_norm[:200] == [None] * 200  # not recorded
    assert math.isnan(grad_norm[210]) and grad_norm[211] == 211.0  # recorded as NaN
    assert table.column("lr").null_count == 50 and table.column("epoch").null_count == 10
    assert table.column("x").to_pylist()[5] is None


def test_evaluations_come_as_their_own_dataframe_with_the_run_columns(stored):
    _, _, _, run_id, api = stored
    evals = api.evals(run_id)
    assert evals["step"].tolist() == [0, ROWS] and evals["step"].dtype == np.int64
    assert math.isnan(evals["val_loss"][0]) and evals["val_loss"][1] == 0.75
    assert evals["train_accuracy"].isna()[0] and evals["val_accuracy"][1] == 0.5
    assert set(evals["run_id"]) == {run_id}


def test_a_comparisons_dataframe_has_every_runs_rows(stored):
    _, _, comparison, run_id, api = stored
    frame = api.comparison_steps(comparison["id"])
    counts = frame.groupby("run_id", observed=True).size().to_dict()
    assert counts[run_id] == ROWS and counts[comparison["runs"][1]["id"]] == 3
    assert sum(counts.values()) == len(frame) == ROWS + 3
    mine = frame[frame["run_id"] == run_id]
    assert mine["step"].tolist() == list(range(ROWS))
    np.testing.assert_array_equal(mine["loss"].to_numpy(), [_stored_row(step).loss for step in range(ROWS)])
    assert isinstance(frame["label"].dtype, pd.CategoricalDtype) and frame["step"].dtype == np.int64


def test_another_teams_run_is_an_optibench_error(stored):
    client, _, _, run_id, _ = stored
    stranger = Client("http://testserver", api_key=make_team().member, transport=client._transport)
    with pytest.raises(OptibenchError) as raised:
        stranger.steps(run_id)
    assert raised.value.status == 404


def test_an_empty_run_reads_as_an_empty_dataframe(team_client: TestClient):
    team = make_team()
    comparison = submit(team_client, team.member)
    with Client("http://testserver", api_key=team.member, transport=team_client._transport) as api:
        frame = api.steps(comparison["runs"][0]["id"])
    assert len(frame) == 0 and "loss" in frame.columns
