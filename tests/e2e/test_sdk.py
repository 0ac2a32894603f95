"""The SDK against `optibench serve` on both deployments: an optimizer defined here, trained on this machine on
a comparison's exact problem that a real Celery worker trained with the catalogue's Adam, paired with it seed by
seed in the leaderboard; and a run from the client's own loop."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from optibench import sdk
from optibench.client import Client

pytestmark = pytest.mark.e2e
STEPS = 50
SEEDS = [0, 1, 2]
MLP_SPEC = {
    "name": "e2e sdk: iris mlp",
    "problem": {
        "model": {"name": "mlp", "params": {"hidden": [16]}},
        "dataset": {"name": "iris"},
        "loss": "cross_entropy",
    },
    "training": {"steps": STEPS, "batch_size": 32},
    # An entry with groups trains alone: the worker would train these three seeds as one vectorized ensemble,
    # whose batched forward pass rounds step 0's float32 loss differently from one model's (by an ulp), and
    # bit-for-bit pairing is with a run trained as the SDK trains, alone.
    "optimizers": [{"name": "adam", "params": {"lr": 0.01}, "groups": [{"select": "rest"}]}],
    "seeds": SEEDS,
    "device": "cpu",
    "reuse": False,
}


class SignSGDMomentum(torch.optim.Optimizer):
    """m <- beta m + (1 - beta) g; p <- p - lr sign(m)."""

    def __init__(self, params, lr: float = 0.01, beta: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    m = self.state[p].setdefault("m", torch.zeros_like(p))
                    m.mul_(group["beta"]).add_(p.grad, alpha=1 - group["beta"])
                    p.add_(m.sign(), alpha=-group["lr"])


def step_losses(client: Client, run_id: str) -> list[float]:
    """A run's losses as stored, read through the columnar stream (exact float64)."""
    response = client._http.get(f"/api/v1/runs/{run_id}/steps", params={"format": "arrow"})
    assert response.status_code == 200, response.text
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.column("step").to_pylist() == list(range(table.num_rows))
    return table.column("loss").to_pylist()


@pytest.fixture(scope="module")
def catalogue(service):
    """The comparison, trained by the service's worker, and an SDK client of the service."""
    with Client(service.url) as client:
        accepted = client.submit(MLP_SPEC)
        comparison = service.wait_for(accepted["id"], timeout_s=120)
        assert comparison["status"] == "succeeded", service.log_tail()
        assert {run["execution"] for run in comparison["runs"]} == {"alone"}
        yield client, comparison


def test_a_custom_optimizer_trained_here_is_paired_with_the_servers_runs(catalogue, tmp_path):
    client, comparison = catalogue
    runs = sdk.train(
        client,
        comparison["id"],
        lambda params: SignSGDMomentum(params, lr=0.01),
        label="signsgd-momentum",
        optimizer="tests.SignSGDMomentum",
        params={"lr": 0.01, "beta": 0.9},
        spool_dir=tmp_path,
    )
    assert [(r["seed"], r["status"], r["external"], r["steps_done"]) for r in runs] == [
        (seed, "succeeded", True, STEPS) for seed in SEEDS
    ]
    server_runs = {run["seed"]: run for run in comparison["runs"]}
    for run in runs:
        ours, theirs = step_losses(client, run["id"]), step_losses(client, server_runs[run["seed"]]["id"])
        assert len(ours) == len(theirs) == STEPS
        assert ours[0] == theirs[0]  # the same initial weights and first batch: bit for bit
        assert ours[1:] != theirs[1:]
    summary = client.summary(comparison["id"])
    row = next(r for r in summary["rows"] if r["label"] == "signsgd-momentum")
    assert (row["optimizer"], row["n_seeds"], row["n_finished"]) == ("tests.SignSGDMomentum", 3, 3)
    paired = next(p for p in summary["paired"] if p["label"] == "signsgd-momentum")
    assert (paired["baseline"], paired["n_pairs"]) == ("adam", 3)
    assert list(tmp_path.iterdir()) == []


def test_a_run_from_the_clients_own_loop_stores_every_step(catalogue, tmp_path):
    client, comparison = catalogue
    problem = sdk.LocalProblem.from_comparison(client, comparison["id"])
    first_loss = None
    with sdk.start_run(client, problem, seed=1, label="own-loop", spool_dir=tmp_path, flush_every=16) as run:
        optimizer = SignSGDMomentum(run.model.parameters())
        for batch in run.batches():
            loss = run.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss)
            first_loss = loss.item() if first_loss is None else first_loss
    stored = client.run(run.id)
    assert (stored["status"], stored["external"], stored["steps_done"]) == ("succeeded", True, STEPS)
    losses = step_losses(client, run.id)
    server_run = next(r for r in comparison["runs"] if r["seed"] == 1)
    assert len(losses) == STEPS and losses[0] == first_loss == step_losses(client, server_run["id"])[0]
