"""The SDK against the real app in-process (its ASGI app behind the client's transport), with team keys, on
SQLite and PostgreSQL: a client's own optimizer trained on a comparison's exact problem, paired with the
catalogue runs the Celery task trained; the spool, the cancel and back-pressure."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch

from optibench import sdk
from optibench.client import Client, OptibenchError
from optibench.spool import RunSpool
from tests.api.teams import make_team, submit, team_client  # noqa: F401
from worker.tasks import train_run

STEPS = 30


class SignSGD(torch.optim.Optimizer):
    """sign descent with momentum: m <- beta m + (1 - beta) g; p <- p - lr sign(m)."""

    def __init__(self, params, lr: float = 0.01, beta: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                p.add_(m.sign(), alpha=-group["lr"])


def mlp_spec(**overrides) -> dict:
    return {
        "name": "sdk mlp",
        "problem": {
            "model": {"name": "mlp", "params": {"hidden": [16]}},
            "dataset": {"name": "iris"},
            "loss": "cross_entropy",
        },
        "training": {"steps": STEPS, "batch_size": 32},
        "optimizers": [{"name": "adam", "params": {"lr": 0.01}}],
        "seeds": [0, 1, 2],
        "device": "cpu",
        "reuse": False,
    } | overrides


@pytest.fixture
def trained(team_client):
    """A comparison whose catalogue runs a worker's task trained, and an SDK client of its team."""
    team = make_team()
    comparison = submit(team_client, team.member, **mlp_spec())
    for run in comparison["runs"]:
        train_run.apply(args=[run["id"]]).get()
    with Client("http://testserver", api_key=team.member, transport=team_client._transport) as client:
        yield client, comparison["id"], team


def _losses(client: Client, run_id: str) -> list[float]:
    return [float(row["loss"]) for row in client._json("GET", f"/api/v1/runs/{run_id}/steps")["steps"]]


def test_a_clients_optimizer_is_paired_with_the_catalogue_runs_bit_for_bit_at_step_0(trained, tmp_path):
    client, comparison_id, _ = trained
    runs = sdk.train(
        client,
        comparison_id,
        lambda params: SignSGD(params, lr=0.01),
        label="signsgd",
        optimizer="tests.signsgd",
        params={"lr": 0.01, "beta": 0.9},
        spool_dir=tmp_path,
    )
    assert [(run["seed"], run["status"], run["external"]) for run in runs] == [
        (seed, "succeeded", True) for seed in (0, 1, 2)
    ]
    comparison = client.comparison(comparison_id)
    catalogue = {run["seed"]: run for run in comparison["runs"] if not run["external"]}
    for run in runs:
        ours, theirs = _losses(client, run["id"]), _losses(client, catalogue[run["seed"]]["id"])
        assert len(ours) == STEPS and ours[0] == theirs[0]  # the same weights and batch: the same loss, bit for bit
        assert ours[5:] != theirs[5:]  # then the optimizers differ (Adam's first step is a sign step too)
        assert run["final_loss"] is not None and run["steps_done"] == STEPS
    summary = client.summary(comparison_id)
    row = next(r for r in summary["rows"] if r["label"] == "signsgd")
    assert (row["optimizer"], row["n_seeds"], row["n_finished"]) == ("tests.signsgd", 3, 3)
    paired = next(p for p in summary["paired"] if p["label"] == "signsgd")
    assert (paired["baseline"], paired["n_pairs"]) == ("adam", 3)
    assert list(tmp_path.iterdir()) == []  # every run finished: the spool is empty


def test_own_loop_logs_every_step_once_and_a_rerun_sends_nothing_twice(trained, tmp_path):
    client, comparison_id, _ = trained
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    assert problem.seeds == [0, 1, 2] and problem.steps_total == STEPS
    with sdk.start_run(client, problem, seed=1, label="own-loop", spool_dir=tmp_path, flush_every=7) as run:
        optimizer = SignSGD(run.model.parameters())
        first = None
        for batch in run.batches():
            loss = run.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss)
            first = loss.item() if first is None else first
    stored = client.run(run.id)
    assert (stored["status"], stored["steps_done"]) == ("succeeded", STEPS)
    assert _losses(client, run.id)[0] == first
    assert run.finished is not None and run.finished["final_loss"] == pytest.approx(problem.full_loss(run.model))


def test_the_spool_keeps_what_a_lost_network_did_not_send_and_sync_sends_it_once(trained, tmp_path):
    client, comparison_id, team = trained
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    run = sdk.start_run(client, problem, seed=0, label="offline", spool_dir=tmp_path, flush_every=5)
    down = Client("http://testserver", api_key=team.member, transport=_Unreachable(), retries=0)
    run.client = down  # the network goes away after the run was created
    model = run.model
    for batch in run.batches():
        run.log(problem.loss(model, batch).detach())
    with pytest.raises(OptibenchError, match="optibench sync"):
        run.finish(timeout_s=0.5)
    assert len(list(run.directory.glob("*.steps"))) == STEPS // 5
    synced = sdk.sync(client, tmp_path)
    assert [(r["id"], r["status"], r["steps_done"]) for r in synced] == [(run.id, "succeeded", STEPS)]
    assert len(_losses(client, run.id)) == STEPS and list(tmp_path.iterdir()) == []


def test_a_cancel_on_the_server_stops_the_loop_at_its_next_upload(trained, tmp_path):
    client, comparison_id, _ = trained
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    steps_seen = 0
    with sdk.start_run(client, problem, seed=2, label="cancelled", spool_dir=tmp_path, flush_every=5) as run:
        for batch in run.batches():
            run.log(run.loss(batch).detach())
            steps_seen += 1
            if steps_seen == 10:  # the first ten rows are stored, then someone cancels the run
                while run._spool.pending:
                    time.sleep(0.01)
                client._json("POST", f"/api/v1/runs/{run.id}/cancel")
            while steps_seen >= 10 and run._spool.pending:  # the upload after the cancel has been answered
                time.sleep(0.01)
    stored = client.run(run.id)
    assert stored["status"] == "cancelled" and steps_seen < STEPS
    assert len(_losses(client, run.id)) == 10  # the rows before the cancel, none after


def test_a_slow_server_holds_the_loop_back_instead_of_filling_the_disk(tmp_path):
    release, answered = threading.Event(), []

    def slow_upload(kind: str, body: bytes) -> dict:
        release.wait(5)
        answered.append(len(body))
        return {"stored": 1, "cancelled": False}

    spool = RunSpool(tmp_path / "run", slow_upload, max_pending_bytes=250)
    spool.put("steps", b"x" * 200)  # under the bound: returns at once
    started = time.monotonic()
    threading.Timer(0.3, release.set).start()
    spool.put("steps", b"x" * 200)  # over it: waits for the server
    assert time.monotonic() - started >= 0.25
    assert spool.close(timeout_s=5) == 0 and answered == [200, 200]


def test_a_rate_limited_upload_waits_for_retry_after_and_is_sent_again(tmp_path):
    calls = []

    def limited(kind: str, body: bytes) -> dict:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise OptibenchError(429, "over the team's ingest limit", retry_after_s=0.2)
        return {"stored": 3, "cancelled": False}

    spool = RunSpool(tmp_path / "run", limited)
    spool.put("steps", b"rows")
    assert spool.close(timeout_s=5) == 0
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2 and spool.stored == 3


def test_a_refused_batch_reaches_the_loop(tmp_path):
    def refuse(kind: str, body: bytes) -> dict:
        raise OptibenchError(422, [{"loc": ["body", "step"], "msg": "steps must be strictly increasing"}])

    spool = RunSpool(tmp_path / "run", refuse)
    spool.put("steps", b"rows")
    with pytest.raises(OptibenchError, match="step: steps must be strictly increasing"):
        spool.close(timeout_s=5)


def test_a_run_needs_one_of_the_comparisons_seeds_and_its_own_label(trained, tmp_path):
    client, comparison_id, _ = trained
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    with pytest.raises(ValueError, match="seed 7 is not one of the comparison's seeds"):
        sdk.start_run(client, problem, seed=7, label="x", spool_dir=tmp_path)
    with pytest.raises(OptibenchError) as refused:
        sdk.start_run(client, problem, seed=0, label="adam", spool_dir=tmp_path)
    assert refused.value.status == 422 and refused.value.fields[0][0] == "label"


class _Unreachable(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("the network is down", request=request)


def test_a_create_retried_with_its_key_returns_the_same_run(trained):
    client, comparison_id, _ = trained
    first = client.create_run(comparison_id, seed=0, label="keyed", optimizer="x", key="k" * 16)
    again = client.create_run(comparison_id, seed=0, label="keyed", optimizer="x", key="k" * 16)
    other = client.create_run(comparison_id, seed=0, label="keyed", optimizer="x", key="j" * 16)
    assert first["id"] == again["id"] != other["id"]
    assert len([run for run in client.comparison(comparison_id)["runs"] if run["label"] == "keyed"]) == 2


def test_a_suite_workload_is_built_here_as_the_suite_submits_it() -> None:
    from engine.spec import ComparisonSpec
    from engine.suites import discover

    suite = discover()["lite-v1"]
    workload = suite.workload("noisy-quadratic")
    submitted = ComparisonSpec.model_validate(
        workload.spec(suite.baselines, suite.reduced_seeds, workload.reduced, suite.device)
    )
    problem = sdk.LocalProblem.from_workload("lite-v1", "noisy-quadratic", budget="reduced")
    assert (problem.spec.problem, problem.spec.training) == (submitted.problem, submitted.training)
    assert problem.seeds == suite.reduced_seeds and problem.steps_total == workload.reduced.steps
    with pytest.raises(ValueError, match="no workload 'nope'"):
        sdk.LocalProblem.from_workload("lite-v1", "nope")
