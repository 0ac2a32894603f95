"""Free-form tracking through the SDK against the real app in-process (its ASGI app behind the client's
transport), with team keys, on SQLite and PostgreSQL: a tiny loop of its own logging loss and accuracy, read
back wide; a failing loop; a lost network whose batches ``sync`` sends once."""

from __future__ import annotations

import httpx
import pytest
import torch

from optibench import tracking
from optibench.client import Client, OptibenchError
from tests.api.teams import make_team, team_client  # noqa: F401

STEPS = 20


@pytest.fixture
def client(team_client):
    team = make_team()
    with Client("http://testserver", api_key=team.member, transport=team_client._transport) as sdk_client:
        yield sdk_client


def tiny_loop(run: tracking.TrackedRun, lr: float, seed: int) -> list[float]:
    """A linear classifier on random points, logging the loss tensor every step and the accuracy every 5th."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=generator)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for step in range(STEPS):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.log(loss=loss.detach())  # a CPU tensor: read as a float at once
        losses.append(loss.item())
        if step % 5 == 4:
            run.log(step=step, **{"eval/accuracy": float((model(x).argmax(1) == y).float().mean())})
    return losses


def test_a_loop_of_its_own_logs_loss_and_accuracy_read_back_wide(client, tmp_path):
    logged = {}
    for seed in (0, 1):
        config = {"lr": 0.5, "model": "linear"}
        with tracking.track(client, "tiny", config, seed=seed, spool_dir=tmp_path, flush_every=7) as run:
            logged[run.id] = tiny_loop(run, 0.5, seed)
    table = client.tracked_metrics(run.id)
    assert table.column_names == ["step", "eval/accuracy", "loss"]
    assert table.column("step").to_pylist() == list(range(STEPS))
    assert table.column("loss").to_pylist() == logged[run.id]  # every step once, exactly as logged
    accuracy = table.column("eval/accuracy").to_pylist()
    assert [step for step, value in enumerate(accuracy) if value is not None] == [4, 9, 14, 19]
    assert client.tracked_run(run.id)["status"] == "succeeded"
    assert run.finished is not None and run.finished["seed"] == 1
    assert list(tmp_path.iterdir()) == []  # everything sent: the spool is empty

    summary = client.project("tiny")
    assert summary["paired"] is False and len(summary["configs"]) == 1
    group = summary["configs"][0]
    assert [r["seed"] for r in group["runs"]] == [0, 1]
    finals = [losses[-1] for losses in logged.values()]
    assert group["metrics"]["loss"]["mean"] == pytest.approx(sum(finals) / 2)
    assert group["metrics"]["eval/accuracy"]["runs"] == 2


def test_a_failing_loop_fails_its_run_with_the_error_and_keeps_what_it_logged(client, tmp_path):
    with pytest.raises(RuntimeError, match="out of patience"):
        with tracking.track(client, "tiny", {"lr": 9.0}, spool_dir=tmp_path) as run:
            run.log(loss=1.0)
            run.log(loss=float("nan"))
            raise RuntimeError("out of patience")
    stored = client.tracked_run(run.id)
    assert stored["status"] == "failed" and "RuntimeError: out of patience" in stored["error"]
    loss = client.tracked_metrics(run.id).column("loss").to_pylist()
    assert loss[0] == 1.0 and loss[1] != loss[1]  # NaN kept as NaN


def test_steps_go_forward_and_a_step_logged_twice_is_one_row(client, tmp_path):
    with tracking.track(client, "tiny", {"lr": 0.1}, spool_dir=tmp_path) as run:
        run.log(step=3, loss=1.0)
        run.log(step=3, accuracy=0.5)
        run.log(loss=0.5)  # step 4
        with pytest.raises(ValueError, match="before the last logged step"):
            run.log(step=2, loss=9.0)
    table = client.tracked_metrics(run.id)
    assert table.to_pylist() == [
        {"step": 3, "accuracy": 0.5, "loss": 1.0},
        {"step": 4, "accuracy": None, "loss": 0.5},
    ]


class _Unreachable(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("the network is down", request=request)


def test_batches_a_lost_network_kept_are_sent_once_by_sync(client, tmp_path):
    run = tracking.track(client, "tiny", {"lr": 0.1}, spool_dir=tmp_path, flush_every=5)
    online = run.client
    run.client = Client("http://testserver", transport=_Unreachable(), retries=0)  # the network goes away
    for step in range(STEPS):
        run.log(loss=1.0 / (1 + step))
    with pytest.raises(OptibenchError, match="sync"):
        run.finish(timeout_s=0.5)
    assert len(list(run.directory.glob("*.metrics"))) == STEPS // 5
    synced = tracking.sync(online, tmp_path)
    assert [(r["id"], r["status"]) for r in synced] == [(run.id, "succeeded")]
    assert online.tracked_metrics(run.id).column("loss").to_pylist() == [1.0 / (1 + s) for s in range(STEPS)]
    assert list(tmp_path.iterdir()) == []
    assert tracking.sync(online, tmp_path) == []  # nothing left: nothing sent twice


def test_device_tensors_become_floats_at_the_flush_one_copy_per_device() -> None:
    """A GPU's values wait as tensors until the flush (no sync per step); the conversion is device-agnostic, so
    CPU tensors stand in for them here."""
    columns = {"loss": [torch.tensor(0.5), None, torch.tensor(float("nan"))], "lr": [0.1, 0.2, torch.tensor(0.3)]}
    tracking._tensors_to_floats(columns)
    assert columns["loss"][:2] == [0.5, None] and columns["loss"][2] != columns["loss"][2]
    assert columns["lr"] == [0.1, 0.2, pytest.approx(0.3)] and all(isinstance(v, float) for v in columns["lr"])
