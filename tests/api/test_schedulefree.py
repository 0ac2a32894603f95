"""Meta's schedulefree package as catalogue entries, through HTTP on both databases: schedulefree.adamw's run (the
task run in-process, with evaluations mid-run) stores the steps of schedulefree.AdamWScheduleFree driven in a plain
torch loop (train() before the steps, eval() before measuring), and its final loss is the eval-mode one; every
schedule-free entry with a decaying schedule is a 422 at its schedule, with nothing stored or queued."""

from __future__ import annotations

import numpy as np
import pytest
import schedulefree
import torch
from torch import nn

from engine import registry
from engine.problem import BatchPlan, build_problem, steps_total
from tests.api.test_reuse import published  # noqa: F401  (the fixture)
from tests.engine.test_groups import PROBLEM, make_spec
from worker.tasks import train_run

BASE = "/api/v1/comparisons"
CPU = torch.device("cpu")
ADAMW = {"name": "schedulefree.adamw", "params": {"lr": 0.02, "weight_decay": 0.01, "warmup_steps": 4}}
TRAINING = {"steps": 12, "batch_size": 32, "eval_every": 5}


def spec(*entries: dict) -> dict:
    return {
        "name": "schedule-free over HTTP",
        "problem": PROBLEM,
        "training": TRAINING,
        "optimizers": list(entries),
        "seeds": [3],
        "device": "cpu",
        "dtype": "float64",
    }


def plain_adamw_schedulefree(seed: int) -> tuple[list[float], list[float], float, float]:
    """ADAMW's run as a plain loop over the same initial weights and batches: the batch losses at y (train mode)
    and the rates the steps used (warm-up included), then the whole-set loss at x (eval mode) and at y (train mode)."""
    run_spec = make_spec([ADAMW], seeds=[seed], training=TRAINING)
    problem = build_problem(run_spec.problem, CPU, torch.float64)
    module = problem.make_module(seed)
    optimizer = schedulefree.AdamWScheduleFree(module.parameters(), lr=0.02, weight_decay=0.01, warmup_steps=4)
    plan = BatchPlan.for_training(problem.n_train, run_spec.training, seed, run_spec.optimizers[0].batch_size)
    losses, lrs = [], []
    optimizer.train()
    for _, (_, indices) in zip(range(steps_total(run_spec)), plan.batches(CPU)):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(module(problem.x[indices]), problem.y[indices])
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["scheduled_lr"])
    with torch.no_grad():
        at_y = nn.functional.cross_entropy(module(problem.x), problem.y).item()
        optimizer.eval()
        at_x = nn.functional.cross_entropy(module(problem.x), problem.y).item()
    return losses, lrs, at_x, at_y


def test_schedulefree_adamw_trains_to_the_plain_loops_steps_and_ends_on_the_eval_mode_loss(client, published) -> None:
    response = client.post(BASE, json=spec(ADAMW))
    assert response.status_code == 202, response.text
    [run] = response.json()["runs"]
    assert train_run.apply(args=[run["id"]]).get() == "succeeded"

    steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    losses, lrs, at_x, at_y = plain_adamw_schedulefree(3)
    assert len(steps) == len(losses) == TRAINING["steps"]
    np.testing.assert_allclose([s["loss"] for s in steps], losses, rtol=1e-12, atol=0)
    np.testing.assert_allclose([s["lr"] for s in steps], lrs, rtol=1e-15, atol=0)
    assert lrs[0] == pytest.approx(0.02 / 4) and lrs[-1] == 0.02
    final = client.get(f"/api/v1/runs/{run['id']}").json()["final_loss"]
    assert final == pytest.approx(at_x, rel=1e-12)
    assert abs(at_x - at_y) > 1e-6  # the two modes' weights differ, so the recorded loss is x's, not y's


def test_every_schedule_free_entry_with_a_decaying_schedule_is_422_at_its_schedule(client, published) -> None:
    free = sorted(
        name
        for name, cls in registry.all_of("optimizer").items()
        if cls.family == "schedule-free" and cls.unsupported is None
    )
    assert {"schedulefree.adamw", "schedulefree.sgd_closure", "pytorch_optimizer.schedulefreeadamw"} <= set(free)
    before = client.get(BASE).json()["items"]
    entries = [{"name": name, "schedule": {"name": "cosine"}} for name in free]
    response = client.post(BASE, json=spec(*entries))
    assert response.status_code == 422, response.text
    found = {tuple(error["loc"]): error["msg"] for error in response.json()["detail"]}
    assert set(found) == {("body", "optimizers", index, "schedule") for index in range(len(free))}
    assert all("schedule-free" in message and "cosine" in message for message in found.values())
    assert client.get(BASE).json()["items"] == before and published == []


def test_splus_is_not_schedule_free_and_trains_with_a_decaying_schedule(client, published) -> None:
    """SPlus has train/eval modes, but they only swap in an average of its iterates: it takes any schedule (a
    cosine one was refused as if it were schedule-free), and its stored rate follows it, while a schedule-free
    entry in the same comparison is still a 422 at its schedule."""
    splus = {"name": "pytorch_optimizer.splus", "params": {"lr": 0.1}, "schedule": {"name": "cosine"}}
    response = client.post(BASE, json=spec(splus, {"name": "schedulefree.adamw", "schedule": {"name": "cosine"}}))
    assert response.status_code == 422, response.text
    found = {tuple(error["loc"]): error["msg"] for error in response.json()["detail"]}
    assert list(found) == [("body", "optimizers", 1, "schedule")]
    assert "'schedulefree.adamw' is schedule-free" in found[("body", "optimizers", 1, "schedule")]

    response = client.post(BASE, json=spec(splus))  # TRAINING evaluates at step 0 too, before any step
    assert response.status_code == 202, response.text
    [run] = response.json()["runs"]
    assert train_run.apply(args=[run["id"]]).get() == "succeeded"
    steps = client.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    cosine = make_spec([splus]).optimizers[0].schedule
    assert [s["lr"] for s in steps] == pytest.approx([0.1 * cosine.factor(k, len(steps)) for k in range(len(steps))])
    assert steps[-1]["lr"] < 0.1 / 2
