"""`optibench sync` against the real app in-process (its ASGI app behind the CLI's client), with team keys, on
SQLite and PostgreSQL: it sends what an offline run left in the spool, once."""

from __future__ import annotations

import functools

import httpx
import pytest
from typer.testing import CliRunner

from optibench import cli, sdk
from optibench.client import Client, OptibenchError
from tests.api.teams import make_team, submit, team_client

__all__ = ["team_client"]
STEPS = 12
runner = CliRunner()


class Unreachable(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("the network is down", request=request)


def test_sync_sends_an_offline_runs_rows_once_then_has_nothing_to_sync(team_client, tmp_path, monkeypatch):
    team = make_team()
    spec = {
        "name": "cli sync",
        "problem": {
            "model": {"name": "mlp", "params": {"hidden": [8]}},
            "dataset": {"name": "iris"},
            "loss": "cross_entropy",
        },
        "training": {"steps": STEPS, "batch_size": 32},
        "optimizers": [{"name": "sgd", "params": {"lr": 0.05}}],
        "seeds": [0],
        "device": "cpu",
    }
    comparison = submit(team_client, team.member, **spec)
    online = functools.partial(Client, transport=team_client._transport)
    with online("http://testserver", api_key=team.member) as client:
        problem = sdk.LocalProblem.from_comparison(client, comparison["id"])
        run = sdk.start_run(client, problem, seed=0, label="offline", spool_dir=tmp_path, flush_every=4)
    run.client = Client("http://testserver", api_key=team.member, transport=Unreachable(), retries=0)
    for batch in run.batches():  # the network went away after the run was created
        run.log(run.loss(batch).detach())
    with pytest.raises(OptibenchError, match="optibench sync"):
        run.finish(timeout_s=0.5)

    monkeypatch.setattr(cli, "Client", online)
    arguments = ["sync", "--spool-dir", str(tmp_path), "--url", "http://testserver", "--key", team.member]
    synced = runner.invoke(cli.app, arguments)
    assert synced.exit_code == 0, synced.output
    assert synced.output == f"run {run.id} succeeded: {STEPS} steps\n"
    again = runner.invoke(cli.app, arguments)
    assert (again.exit_code, again.output) == (0, "nothing to sync\n")
    steps = team_client.get(f"/api/v1/runs/{run.id}/steps", headers={"Authorization": f"Bearer {team.member}"})
    assert [row["step"] for row in steps.json()["steps"]] == list(range(STEPS))


def test_sync_with_a_wrong_key_says_how_to_pass_one(team_client, tmp_path, monkeypatch):
    team = make_team()
    comparison = submit(team_client, team.member)
    with Client("http://testserver", api_key=team.member, transport=team_client._transport) as client:
        run = client.create_run(comparison["id"], seed=0, label="left", optimizer="x")
    (tmp_path / "left").mkdir()
    (tmp_path / "left" / "run.json").write_text(f'{{"url": "http://testserver", "run_id": "{run["id"]}"}}')
    monkeypatch.setattr(cli, "Client", functools.partial(Client, transport=team_client._transport))
    refused = runner.invoke(cli.app, ["sync", "--spool-dir", str(tmp_path), "--url", "http://testserver", "--key", "x"])
    assert refused.exit_code == 1 and "HTTP 401" in refused.output and "--key" in refused.output
