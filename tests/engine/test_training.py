"""The training loop: fairness between runs, the epoch / mini-batch / per-sample update rules against
hand-written gradient descent, determinism, divergence, cancellation, schedules, evaluations, per-step
extras, function trajectories, and the recorder's promise not to copy to the host at every step.

Everything runs on the CPU with problems of a few dozen samples, so the whole file takes seconds.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import math
import os
import re
import sys
from typing import Any

import numpy as np
import pytest
import torch

import engine.recorder as recorder_module
import engine.training as training_module
from engine import registry
from engine.problem import (
    BatchPlan,
    DatasetProblem,
    FunctionProblem,
    build_problem,
    epoch_order,
    split_indices,
    steps_total,
)
from engine.recorder import StepBatch
from engine.spec import ComparisonSpec
from engine.training import RunOutcome, train

CPU = torch.device("cpu")

REGRESSION_DATA = {"name": "synthetic_regression", "params": {"n_samples": 10, "n_features": 3, "n_targets": 2}}
LINEAR_REGRESSION = {"model": {"name": "linear"}, "dataset": REGRESSION_DATA, "loss": "mse_mean"}
CLASSIFICATION = {
    "model": {"name": "mlp", "params": {"hidden": [8]}},
    "dataset": {"name": "synthetic_classification", "params": {"n_samples": 30, "n_features": 4}},
    "loss": "cross_entropy",
    "validation_fraction": 0.2,
}


def make_spec(problem: dict, training: dict, optimizers: list[dict], **top: Any) -> ComparisonSpec:
    return ComparisonSpec.model_validate(
        {
            "name": "training test",
            "problem": problem,
            "training": training,
            "optimizers": optimizers,
            "device": "cpu",
            **top,
        }
    )


class Sink:
    """Collects every StepBatch; returns False from call number ``stop_at`` on (a cancelled run)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.batches: list[StepBatch] = []
        self.stop_at = stop_at

    def __call__(self, batch: StepBatch) -> bool:
        self.batches.append(batch)
        return self.stop_at is None or len(self.batches) < self.stop_at

    def column(self, name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in self.batches])

    @property
    def steps(self) -> np.ndarray:
        return self.column("step")

    @property
    def losses(self) -> np.ndarray:
        return self.column("loss")

    @property
    def lrs(self) -> np.ndarray:
        return self.column("lr")

    @property
    def points(self) -> np.ndarray:
        return np.concatenate([b.x for b in self.batches])

    def extra(self, name: str) -> np.ndarray:
        return np.concatenate([b.extras[name] for b in self.batches])

    @property
    def evals(self) -> list[dict]:
        return [e for b in self.batches for e in b.evals]


def run(
    spec: ComparisonSpec,
    entry: int = 0,
    seed: int = 0,
    *,
    flush_every: int = 500,
    total_steps: int | None = None,
    sink: Sink | None = None,
) -> tuple[RunOutcome, Sink]:
    sink = sink or Sink()
    total = steps_total(spec) if total_steps is None else total_steps
    outcome = train(spec, entry, seed, sink, total_steps=total, flush_every=flush_every, flush_interval_s=1e9)
    return outcome, sink


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Spies on what train() builds: the problem, each module (and a copy of its initial state), and every
    (epoch, indices) the batch plan hands out. The wrapped functions behave exactly as before."""
    record: dict[str, list] = {"problems": [], "modules": [], "initial": [], "batches": []}

    for cls in (DatasetProblem, FunctionProblem):

        def make_module(self, seed: int, _original=cls.make_module):
            module = _original(self, seed)
            record["initial"].append({k: v.detach().clone() for k, v in module.state_dict().items()})
            record["modules"].append(module)
            return module

        monkeypatch.setattr(cls, "make_module", make_module)

    original_batches = BatchPlan.batches

    def batches(self, device, start_step: int = 0):
        handed_out: list = []
        record["batches"].append(handed_out)
        for epoch, indices in original_batches(self, device, start_step):
            handed_out.append((epoch, None if indices is None else indices.clone()))
            yield epoch, indices

    monkeypatch.setattr(BatchPlan, "batches", batches)

    original_build = training_module.build_problem

    def build(problem, device, dtype):
        built = original_build(problem, device, dtype)
        record["problems"].append(built)
        return built

    monkeypatch.setattr(training_module, "build_problem", build)
    return record


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise equality of two state dicts (same keys, dtypes and bytes)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and a[k].contiguous().view(torch.uint8).equal(b[k].contiguous().view(torch.uint8))
        for k in a
    )


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        ea == eb and ((ia is None and ib is None) or (ia is not None and ib is not None and torch.equal(ia, ib)))
        for (ea, ia), (eb, ib) in zip(a, b)
    )


# ================================================================ fairness


FAIR_SPEC = dict(
    problem=CLASSIFICATION,
    training={"epochs": 2, "batch_size": 5, "shuffle": True},
    optimizers=[{"name": "sgd", "params": {"lr": 0.1}}, {"name": "adam", "params": {"lr": 0.01}}],
    seeds=[0, 1],
)


def test_every_optimizer_starts_from_the_same_weights_for_a_seed(seen) -> None:
    spec = make_spec(**FAIR_SPEC)
    runs = [(entry, seed) for seed in (0, 1) for entry in (0, 1)]
    sinks = [run(spec, entry, seed)[1] for entry, seed in runs]
    s0e0, s0e1, s1e0, s1e1 = seen["initial"]
    assert same_state(s0e0, s0e1)
    assert same_state(s1e0, s1e1)
    # another seed draws other weights, every tensor of them
    assert s0e0.keys() == s1e0.keys()
    assert all(not torch.equal(s0e0[k], s1e0[k]) for k in s0e0)
    # the copies are of the initial state: the runs did move the weights, each optimizer its own way
    final = [m.state_dict() for m in seen["modules"]]
    assert not same_state(final[0], s0e0) and not same_state(final[0], final[1])
    assert not np.array_equal(sinks[0].losses[1:], sinks[1].losses[1:])
    # and both optimizers' first loss, on the same weights and the same batch, is the same number
    assert sinks[0].losses[0] == sinks[1].losses[0]


def test_the_split_is_shared_by_every_run_and_moves_with_split_seed(seen) -> None:
    spec = make_spec(**FAIR_SPEC)
    for entry, seed in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        run(spec, entry, seed, total_steps=1)
    first = seen["problems"][0]
    assert (len(first.x), len(first.x_val)) == (24, 6)
    for other in seen["problems"][1:]:
        assert torch.equal(first.x, other.x) and torch.equal(first.y, other.y)
        assert torch.equal(first.x_val, other.x_val) and torch.equal(first.y_val, other.y_val)

    # the built problem holds exactly the rows split_indices names (the data is not standardized)
    data = spec.problem.dataset.component.load(spec.problem.dataset.typed_params)
    train_idx, val_idx = split_indices(30, 0.2, 0)
    assert torch.equal(first.x, data.x[train_idx]) and torch.equal(first.x_val, data.x[val_idx])
    assert torch.equal(first.y, data.y[train_idx]) and torch.equal(first.y_val, data.y[val_idx])

    moved = make_spec(**{**FAIR_SPEC, "problem": {**CLASSIFICATION, "split_seed": 1}})
    run(moved, 0, 0, total_steps=1)
    assert not torch.equal(seen["problems"][-1].x_val, first.x_val)


@pytest.mark.parametrize(
    ("n", "fraction", "sizes"), [(30, 0.2, (24, 6)), (10, 0.0, (10, 0)), (7, 0.9, (1, 6)), (2, 0.9, (1, 1))]
)
def test_split_indices_partition_the_data(n: int, fraction: float, sizes: tuple[int, int]) -> None:
    train_idx, val_idx = split_indices(n, fraction, split_seed=3)
    assert (len(train_idx), len(val_idx)) == sizes
    assert torch.equal(torch.cat([train_idx, val_idx]).sort().values, torch.arange(n))
    assert torch.equal(train_idx, train_idx.sort().values) and torch.equal(val_idx, val_idx.sort().values)
    again = split_indices(n, fraction, split_seed=3)
    assert torch.equal(again[0], train_idx) and torch.equal(again[1], val_idx)


def test_split_seed_changes_which_samples_are_held_out() -> None:
    held_out = {tuple(split_indices(100, 0.2, s)[1].tolist()) for s in range(5)}
    assert len(held_out) == 5


def test_the_batch_order_is_the_same_for_every_optimizer_and_differs_between_seeds(seen) -> None:
    spec = make_spec(**FAIR_SPEC)
    for entry, seed in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        run(spec, entry, seed)
    s0e0, s0e1, s1e0, s1e1 = seen["batches"]
    assert len(s0e0) == steps_total(spec) == 10
    assert same_batches(s0e0, s0e1) and same_batches(s1e0, s1e1)
    assert [e for e, _ in s0e0] == [e for e, _ in s1e0]
    assert not same_batches(s0e0, s1e0)


def epochs_of(plan: BatchPlan, epochs: int) -> list[torch.Tensor]:
    steps = list(itertools.islice(plan.batches(CPU), epochs * plan.batches_per_epoch))
    grouped = []
    for e in range(epochs):
        chunk = steps[e * plan.batches_per_epoch : (e + 1) * plan.batches_per_epoch]
        assert [epoch for epoch, _ in chunk] == [e] * plan.batches_per_epoch
        grouped.append(torch.cat([indices for _, indices in chunk]))
    return grouped


def test_shuffled_epochs_are_different_permutations_of_every_sample() -> None:
    plan = BatchPlan(n=23, batch_size=4, shuffle=True, drop_last=False, seed=5)
    orders = epochs_of(plan, 6)
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(23))  # every sample exactly once
    assert len({tuple(o.tolist()) for o in orders}) == 6
    assert all(not torch.equal(o, torch.arange(23)) for o in orders)
    # the order is a pure function of (seed, epoch), as resume needs
    assert torch.equal(orders[3], epoch_order(23, 5, 3, True))


def test_unshuffled_epochs_all_use_one_fixed_order() -> None:
    plan = BatchPlan(n=23, batch_size=4, shuffle=False, drop_last=False, seed=5)
    for order in epochs_of(plan, 4):
        assert torch.equal(order, torch.arange(23))
    other_seed = BatchPlan(n=23, batch_size=4, shuffle=False, drop_last=False, seed=6)
    assert same_batches(
        list(itertools.islice(plan.batches(CPU), 20)), list(itertools.islice(other_seed.batches(CPU), 20))
    )


def test_drop_last_leaves_out_the_short_batch_and_still_never_repeats_a_sample() -> None:
    plan = BatchPlan(n=10, batch_size=3, shuffle=True, drop_last=True, seed=0)
    assert plan.batches_per_epoch == 3
    for order in epochs_of(plan, 4):
        assert len(order) == 9 and len(set(order.tolist())) == 9


@pytest.mark.parametrize(
    "plan",
    [
        BatchPlan(n=10, batch_size=3, shuffle=True, drop_last=False, seed=1),
        BatchPlan(n=10, batch_size=3, shuffle=True, drop_last=True, seed=1),
        BatchPlan(n=10, batch_size=3, shuffle=False, drop_last=False, seed=1),
        BatchPlan(n=10, batch_size=1, shuffle=True, drop_last=False, seed=2),
        BatchPlan(n=10, batch_size=None, shuffle=True, drop_last=False, seed=2),
    ],
    ids=["k3", "k3-drop-last", "k3-fixed", "per-sample", "full"],
)
def test_resuming_at_any_step_yields_exactly_the_tail(plan: BatchPlan) -> None:
    length = 5 * plan.batches_per_epoch + 2
    from_zero = list(itertools.islice(plan.batches(CPU), length))
    for k in range(length):
        tail = list(itertools.islice(plan.batches(CPU, start_step=k), length - k))
        assert same_batches(tail, from_zero[k:]), f"start_step={k}"


# ================================================================ update rules


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "per_epoch", "sizes"),
    [
        ("full", False, 1, [None]),  # the epoch rule: one update per pass
        (3, False, 4, [3, 3, 3, 1]),  # mini-batches: ceil(10 / 3)
        (3, True, 3, [3, 3, 3]),
        (1, False, 10, [1] * 10),  # the per-sample rule
        (10, False, 1, [None]),  # a batch of all samples is the full batch
        (64, False, 1, [None]),
        (4, True, 2, [4, 4]),
    ],
)
def test_steps_per_epoch_follow_the_update_rule(seen, batch_size, drop_last: bool, per_epoch: int, sizes: list) -> None:
    epochs = 3
    spec = make_spec(
        LINEAR_REGRESSION, {"epochs": epochs, "batch_size": batch_size, "drop_last": drop_last}, [{"name": "sgd"}]
    )
    assert steps_total(spec) == epochs * per_epoch
    outcome, sink = run(spec, flush_every=4)
    assert outcome.status == "succeeded" and outcome.steps_done == epochs * per_epoch
    assert np.array_equal(sink.steps, np.arange(epochs * per_epoch))
    assert np.array_equal(sink.column("epoch"), np.repeat(np.arange(epochs), per_epoch))
    handed_out = seen["batches"][0]
    assert [None if i is None else len(i) for _, i in handed_out] == sizes * epochs


def sgd_by_hand(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, lr: float, batches: list[np.ndarray | None]
) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Plain gradient descent on mean((x wᵀ + b − y)²), gradient in closed form, float64."""
    losses = []
    for indices in batches:
        xb, yb = (x, y) if indices is None else (x[indices], y[indices])
        residual = xb @ w.T + b - yb
        losses.append(float(np.mean(residual**2)))
        g = 2.0 * residual / residual.size  # d loss / d prediction
        w = w - lr * (g.T @ xb)
        b = b - lr * g.sum(axis=0)
    return losses, w, b


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "shuffle"),
    [("full", False, True), (3, False, True), (3, True, True), (3, False, False), (1, False, True)],
    ids=["epoch-rule", "mini-batch", "mini-batch-drop-last", "mini-batch-fixed-order", "per-sample-rule"],
)
def test_sgd_is_hand_written_gradient_descent(seen, batch_size, drop_last: bool, shuffle: bool) -> None:
    lr, seed = 0.05, 4
    spec = make_spec(
        LINEAR_REGRESSION,
        {"epochs": 3, "batch_size": batch_size, "drop_last": drop_last, "shuffle": shuffle},
        [{"name": "sgd", "params": {"lr": lr}}],
        dtype="float64",
        seeds=[seed],
    )
    outcome, sink = run(spec, seed=seed, flush_every=5)

    data = registry.get("dataset", "synthetic_regression").load(spec.problem.dataset.typed_params)
    x, y = data.x.double().numpy(), data.y.double().numpy()
    initial = seen["initial"][0]
    plan = BatchPlan(
        n=10, batch_size=None if batch_size == "full" else batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed
    )
    order = [None if i is None else i.numpy() for _, i in itertools.islice(plan.batches(CPU), steps_total(spec))]
    losses, w, b = sgd_by_hand(x, y, initial["weight"].numpy(), initial["bias"].numpy(), lr, order)

    assert len(sink.losses) == len(losses) == steps_total(spec)
    np.testing.assert_allclose(sink.losses, losses, rtol=1e-12, atol=0)
    trained = seen["modules"][0]
    np.testing.assert_allclose(trained.weight.detach().numpy(), w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(trained.bias.detach().numpy(), b, rtol=1e-12, atol=1e-14)
    final_residual = x @ w.T + b - y
    assert outcome.final_loss == pytest.approx(float(np.mean(final_residual**2)), rel=1e-12)


def test_step_zero_loss_is_the_initial_weights_on_the_first_batch(seen) -> None:
    seed = 3
    problem = {
        "model": {"name": "mlp", "params": {"hidden": [5], "activation": "tanh"}},
        "dataset": {"name": "synthetic_regression", "params": {"n_samples": 12, "n_features": 3, "n_targets": 2}},
        "loss": "mse_mean",
    }
    spec = make_spec(
        problem,
        {"epochs": 1, "batch_size": 4},
        [{"name": "adam", "params": {"lr": 0.1}}],
        dtype="float64",
        seeds=[seed],
    )
    _, sink = run(spec, seed=seed)

    first = epoch_order(12, seed, 0, shuffle=True)[:4]
    assert torch.equal(seen["batches"][0][0][1], first)
    data = registry.get("dataset", "synthetic_regression").load(spec.problem.dataset.typed_params)
    x, y = data.x.double()[first], data.y.double()[first]
    w1, b1, w2, b2 = seen["initial"][0].values()
    prediction = torch.tanh(x @ w1.T + b1) @ w2.T + b2
    expected = ((prediction - y) ** 2).mean().item()
    assert sink.losses[0] == pytest.approx(expected, rel=1e-13)
    assert sink.losses[1] != sink.losses[0]  # the next row is a different batch after an update


# ================================================================ determinism


def test_the_same_spec_and_seed_give_bitwise_identical_losses() -> None:
    problem = {**CLASSIFICATION, "model": {"name": "mlp", "params": {"hidden": [16, 8]}}}
    spec = make_spec(
        problem,
        {"epochs": 4, "batch_size": 7, "shuffle": True},
        [{"name": "adam", "params": {"lr": 0.01}}],
        dtype="float32",
        seeds=[11, 12],
    )
    first, a = run(spec, seed=11, flush_every=3)
    second, b = run(spec, seed=11, flush_every=7)
    assert a.losses.tobytes() == b.losses.tobytes()
    assert np.array_equal(a.lrs, b.lrs) and np.array_equal(a.column("epoch"), b.column("epoch"))
    assert first.final_loss == second.final_loss and first.best_loss == second.best_loss
    _, other = run(spec, seed=12)
    assert not np.array_equal(a.losses, other.losses)


# ================================================================ divergence and cancellation


def first_non_finite_float32(x0: float, lr: float) -> int:
    """Gradient descent on x² in float32: the index of the first step whose loss overflows."""
    x = np.float32(x0)
    with np.errstate(over="ignore", invalid="ignore"):
        for step in itertools.count():
            if not np.isfinite(np.float32(x * x)):
                return step
            x = np.float32(x - np.float32(lr) * (np.float32(2.0) * x))


DIVERGING = dict(
    problem={"function": {"name": "quadratic"}, "x0": [6.0]},
    training={"steps": 100},
    optimizers=[{"name": "sgd", "params": {"lr": 1.5}}, {"name": "sgd", "params": {"lr": 0.1}}],
    dtype="float32",
)


@pytest.mark.parametrize("flush_every", [1, 7, 1000])
def test_a_diverged_run_stops_at_its_first_non_finite_loss(flush_every: int) -> None:
    spec = make_spec(**DIVERGING)
    expected = first_non_finite_float32(6.0, 1.5)
    assert 10 < expected < 100  # |x − c| doubles every step; float32 overflows x² around step 62

    outcome, sink = run(spec, 0, flush_every=flush_every)
    assert outcome.status == "diverged"
    assert outcome.diverged_step == expected
    assert outcome.steps_done == expected + 1
    assert outcome.final_loss is None
    assert outcome.best_loss == 36.0  # the first loss, at x0
    assert np.array_equal(sink.steps, np.arange(expected + 1))  # rows end exactly at the diverged step
    assert np.isfinite(sink.losses[:-1]).all() and not np.isfinite(sink.losses[-1])
    assert sink.batches[-1].step[-1] == expected  # nothing was sent after it

    healthy, healthy_sink = run(spec, 1, flush_every=flush_every)
    assert healthy.status == "succeeded" and healthy.diverged_step is None
    assert healthy.steps_done == 100 and np.isfinite(healthy_sink.losses).all()
    alone = make_spec(**{**DIVERGING, "optimizers": DIVERGING["optimizers"][1:]})
    _, alone_sink = run(alone, 0, flush_every=flush_every)
    assert healthy_sink.losses.tobytes() == alone_sink.losses.tobytes()


def test_a_diverged_run_sends_no_evaluations_past_its_end() -> None:
    """Rows stop at the diverged step, and steps_done = diverged_step + 1; an evaluation "after s updates"
    with s > steps_done describes updates that the run reports it never made."""
    spec = make_spec(**{**DIVERGING, "training": {"steps": 100, "eval_every": 4}})
    outcome, sink = run(spec, 0, flush_every=1000)
    assert outcome.status == "diverged"
    assert sink.evals and sink.evals[0]["step"] == 0
    late = [e["step"] for e in sink.evals if e["step"] > outcome.steps_done]
    assert late == [], f"evaluations after the run's {outcome.steps_done} updates: {late}"


def test_a_sink_returning_false_cancels_after_that_flush() -> None:
    spec = make_spec(LINEAR_REGRESSION, {"epochs": 50, "batch_size": 2}, [{"name": "sgd"}])
    assert steps_total(spec) == 250
    sink = Sink(stop_at=2)
    outcome, _ = run(spec, flush_every=5, sink=sink)
    assert outcome.status == "cancelled"
    assert outcome.steps_done == 10
    assert len(sink.batches) == 2 and np.array_equal(sink.steps, np.arange(10))
    assert outcome.diverged_step is None
    assert outcome.final_loss is not None and math.isfinite(outcome.final_loss)


# ================================================================ schedules


SCHEDULE_CASES = {
    "constant": ({"name": "constant"}, lambda t, total: 1.0),
    "cosine": (
        {"name": "cosine", "min_factor": 0.1},
        lambda t, total: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / (total - 1))),
    ),
    "step": ({"name": "step", "step_size": 4, "gamma": 0.5}, lambda t, total: 0.5 ** (t // 4)),
    "warmup_cosine": (
        {"name": "warmup_cosine", "warmup_steps": 3, "min_factor": 0.2},
        lambda t, total: (
            (t + 1) / 3 if t < 3 else 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * (t - 3) / (total - 3 - 1)))
        ),
    ),
    "constant with warm-up": ({"name": "constant", "warmup_steps": 4}, lambda t, total: min((t + 1) / 4, 1.0)),
    "linear": ({"name": "linear", "min_factor": 0.1}, lambda t, total: 1 - 0.9 * t / (total - 1)),
    "inverse_sqrt with warm-up": (
        {"name": "inverse_sqrt", "timescale": 3, "warmup_steps": 3},
        lambda t, total: (t + 1) / 3 if t < 3 else math.sqrt(3 / t),
    ),
    "wsd with warm-up": (  # 12 steps: 2 of warm-up (a sixth), 7 stable, a cooldown of round(0.3 · 10) = 3
        {"name": "wsd", "warmup_fraction": 1 / 6, "cooldown_fraction": 0.3, "decay_shape": "sqrt"},
        lambda t, total: (t + 1) / 2 if t < 2 else 1.0 if t < 9 else 1 - math.sqrt((t - 8) / 3),
    ),
    "one_cycle": (  # up from 1/25 over 0.25 · 12 = 3 steps (ends at step 2), then linearly to 1/2500 at step 11
        {"name": "one_cycle", "pct_start": 0.25, "final_div_factor": 100.0, "anneal_strategy": "linear"},
        lambda t, total: 0.04 + 0.96 * t / 2 if t <= 2 else (1 / 25 / 100 - 1) * ((t - 2) / 9) + 1,
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
def test_the_recorded_lr_follows_the_schedule_and_is_the_rate_used(seen, name: str) -> None:
    schedule, closed_form = SCHEDULE_CASES[name]
    lr, total = 0.1, 12
    center, scale = np.array([1.0, -2.0]), np.array([1.0, 2.0])
    spec = make_spec(
        {
            "function": {"name": "quadratic", "params": {"center": center.tolist(), "scale": scale.tolist()}},
            "x0": [4.0, 3.0],
        },
        {"steps": total},
        [{"name": "sgd", "params": {"lr": lr}, "schedule": schedule}],
        dtype="float64",
    )
    _, sink = run(spec, flush_every=5)

    expected_lr = np.array([lr * closed_form(t, total) for t in range(total)])
    np.testing.assert_allclose(sink.lrs, expected_lr, rtol=1e-14, atol=0)
    if name != "constant":
        assert sink.lrs[0] != sink.lrs[-1]
    if name in ("cosine", "warmup_cosine"):
        assert sink.lrs[-1] == pytest.approx(lr * schedule["min_factor"], rel=1e-12)

    # plain SGD on the quadratic: x_{t+1} = x_t − lr_t · 2 s (x_t − c), with the recorded lr_t
    points = np.vstack([sink.points, seen["modules"][0].x.detach().numpy()])
    for t in range(total):
        step = points[t] - sink.lrs[t] * 2 * scale * (points[t] - center)
        np.testing.assert_allclose(points[t + 1], step, rtol=1e-14, atol=1e-14, err_msg=f"step {t}")


# ================================================================ evaluations


EVAL_PROBLEM = {
    **CLASSIFICATION,
    "dataset": {"name": "synthetic_classification", "params": {"n_samples": 50, "n_features": 4}},
}


@pytest.mark.parametrize(
    ("eval_every", "expected_steps"), [(4, [0, 4, 8, 12, 15]), (5, [0, 5, 10, 15]), (100, [0, 15])]
)
def test_evaluations_at_every_eval_every_steps_and_at_the_end(eval_every: int, expected_steps: list[int]) -> None:
    spec = make_spec(
        EVAL_PROBLEM,
        {"epochs": 3, "batch_size": 8, "eval_every": eval_every},
        [{"name": "adam", "params": {"lr": 0.05}}],
        dtype="float64",
        seeds=[2],
    )
    assert steps_total(spec) == 15  # 40 training samples, batches of 8
    outcome, sink = run(spec, seed=2, flush_every=3)
    evals = sink.evals
    assert [e["step"] for e in evals] == expected_steps
    # the epoch of an evaluation after s updates is the epoch of update s (0 before any)
    assert [e["epoch"] for e in evals] == [0 if s == 0 else (s - 1) // 5 for s in expected_steps]
    for e in evals:
        assert set(e) == {"step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
        assert 0.0 <= e["train_accuracy"] <= 1.0 and 0.0 <= e["val_accuracy"] <= 1.0
        assert round(e["train_accuracy"] * 40, 9) % 1 == 0 and round(e["val_accuracy"] * 10, 9) % 1 == 0
        assert math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"])
    assert evals[-1]["train_loss"] == outcome.final_loss
    assert evals[-1]["train_loss"] < evals[0]["train_loss"]


def test_the_first_evaluation_is_the_initial_model_on_the_whole_sets() -> None:
    spec = make_spec(
        EVAL_PROBLEM,
        {"epochs": 1, "batch_size": 8, "eval_every": 2},
        [{"name": "sgd", "params": {"lr": 0.1}}],
        dtype="float64",
        seeds=[5],
    )
    _, sink = run(spec, seed=5)
    problem = build_problem(spec.problem, CPU, torch.float64)
    module = problem.make_module(5)
    with torch.no_grad():
        expected = {}
        for name, x, y in [("train", problem.x, problem.y), ("val", problem.x_val, problem.y_val)]:
            logits = module(x)
            expected[f"{name}_loss"] = (-(logits.log_softmax(dim=1).gather(1, y[:, None]))).mean().item()
            expected[f"{name}_accuracy"] = (logits.argmax(dim=1) == y).double().mean().item()
    first = sink.evals[0]
    for key, value in expected.items():
        assert first[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_without_validation_or_eval_every_only_what_applies_is_evaluated() -> None:
    spec = make_spec(LINEAR_REGRESSION, {"epochs": 2, "batch_size": 5, "eval_every": 3}, [{"name": "sgd"}])
    outcome, sink = run(spec)
    assert [e["step"] for e in sink.evals] == [0, 3, 4]
    assert all(set(e) == {"step", "epoch", "train_loss"} for e in sink.evals)
    assert sink.evals[-1]["train_loss"] == outcome.final_loss

    spec = make_spec(LINEAR_REGRESSION, {"epochs": 2, "batch_size": 5}, [{"name": "sgd"}])
    _, sink = run(spec)
    assert sink.evals == []


# ================================================================ extras


def test_grad_norm_and_update_norm_on_a_quadratic(seen) -> None:
    center, scale = np.array([1.0, -2.0]), np.array([1.0, 3.0])
    spec = make_spec(
        {
            "function": {"name": "quadratic", "params": {"center": center.tolist(), "scale": scale.tolist()}},
            "x0": [4.0, 1.0],
        },
        {"steps": 10, "extras": ["grad_norm", "update_norm"]},
        [{"name": "adam", "params": {"lr": 0.3}}, {"name": "sgd", "params": {"lr": 0.05}}],
        dtype="float64",
    )
    for entry in (0, 1):
        _, sink = run(spec, entry, flush_every=3)
        points = np.vstack([sink.points, seen["modules"][entry].x.detach().numpy()])
        grad = 2 * scale * (points[:-1] - center)  # closed-form gradient at each x_t
        np.testing.assert_allclose(sink.extra("grad_norm"), np.linalg.norm(grad, axis=1), rtol=1e-13)
        np.testing.assert_allclose(
            sink.extra("update_norm"), np.linalg.norm(np.diff(points, axis=0), axis=1), rtol=1e-12
        )
        if entry == 1:  # plain SGD moves by lr · |grad|
            np.testing.assert_allclose(sink.extra("update_norm"), 0.05 * sink.extra("grad_norm"), rtol=1e-12)


def test_grad_norm_is_the_global_norm_over_every_parameter_tensor(seen) -> None:
    spec = make_spec(LINEAR_REGRESSION, {"epochs": 1, "extras": ["grad_norm"]}, [{"name": "sgd"}], dtype="float64")
    _, sink = run(spec)
    assert set(sink.batches[0].extras) == {"grad_norm"}
    module = seen["problems"][0].make_module(0)
    problem = seen["problems"][0]
    problem.batch_loss(module, None).backward()
    expected = math.sqrt(sum(float((p.grad**2).sum()) for p in module.parameters()))
    assert sink.extra("grad_norm")[0] == pytest.approx(expected, rel=1e-13)
    assert expected > float(module.weight.grad.norm())  # the bias contributes


def test_no_extras_unless_asked() -> None:
    spec = make_spec(LINEAR_REGRESSION, {"epochs": 3}, [{"name": "sgd"}])
    _, sink = run(spec)
    assert all(b.extras == {} for b in sink.batches)
    assert all(r["grad_norm"] is None and r["update_norm"] is None for b in sink.batches for r in b.rows())


# ================================================================ function problems


def test_function_rows_hold_the_point_before_each_update() -> None:
    spec = make_spec(
        {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        {"steps": 10, "eval_every": 4},
        [{"name": "sgd", "params": {"lr": 0.1}}],
        dtype="float64",
    )
    outcome, sink = run(spec, flush_every=3)
    assert len(sink.batches) == 4
    assert all(b.epoch is None for b in sink.batches)
    assert all(e["epoch"] is None for e in sink.evals)
    assert np.array_equal(sink.steps, np.arange(10))
    x = sink.points
    assert x.shape == (10, 1) and x[0, 0] == 8.0
    expected = [8.0]
    for _ in range(9):
        expected.append(expected[-1] - 0.1 * 2 * (expected[-1] - 2.0))
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-14)
    np.testing.assert_allclose(sink.losses, (x[:, 0] - 2.0) ** 2, rtol=1e-13)
    assert outcome.final_loss == pytest.approx((0.8 * (expected[-1] - 2.0)) ** 2, rel=1e-12)
    rows = [r for b in sink.batches for r in b.rows()]
    assert rows[0]["x"] == [8.0] and rows[0]["epoch"] is None


# ================================================================ no per-step host copies


RECORDING_FILES = (os.path.join("engine", "recorder.py"), os.path.join("engine", "training.py"))
HOST_METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__")


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    targets = [*args, kwargs.get("device")]
    return any(isinstance(t, (str, torch.device)) and torch.device(t).type == "cpu" for t in targets if t is not None)


@pytest.fixture
def host_copies(monkeypatch: pytest.MonkeyPatch) -> collections.Counter:
    """Counts calls, made from engine/recorder.py or engine/training.py, of the tensor methods that copy to
    the host: item, cpu, tolist, numpy, float(), int(), bool(), and .to(<cpu>). On the CPU the recorder
    reads values straight into host arrays, which copies nothing there; here it keeps them in device
    blocks, as on a GPU, so that the count is the GPU's."""
    counts: collections.Counter = collections.Counter()
    monkeypatch.setattr(recorder_module, "_HostColumn", recorder_module._DeviceColumn)

    def caller_is_recording() -> bool:
        return sys._getframe(2).f_code.co_filename.endswith(RECORDING_FILES)

    for name in HOST_METHODS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _name=name, _original=original, **kwargs):
            if caller_is_recording():
                counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, functools.wraps(original)(wrapper))

    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if _to_cpu(args, kwargs) and caller_is_recording():
            counts["to(cpu)"] += 1
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    return counts


def count_copies(counts: collections.Counter, spec: ComparisonSpec, steps: int, flush_every: int) -> tuple[int, int]:
    counts.clear()
    outcome, sink = run(spec, total_steps=steps, flush_every=flush_every)
    assert outcome.status == "succeeded" and outcome.steps_done == steps
    return sum(counts.values()), len(sink.batches)


COPY_SPECS = {
    "mlp-mini-batches": dict(
        problem={
            "model": {"name": "mlp", "params": {"hidden": [4]}},
            "dataset": {"name": "synthetic_regression", "params": {"n_samples": 16, "n_features": 3, "n_targets": 1}},
            "loss": "mse_mean",
        },
        training={"steps": 1000, "batch_size": 4, "extras": ["grad_norm", "update_norm"]},
        optimizers=[{"name": "adam", "params": {"lr": 1e-3}, "schedule": {"name": "cosine"}}],
    ),
    "function": dict(
        problem={"function": {"name": "rosenbrock"}},
        training={"steps": 1000, "extras": ["grad_norm"]},
        optimizers=[{"name": "sgd", "params": {"lr": 1e-4}}],
    ),
}


@pytest.mark.parametrize("case", sorted(COPY_SPECS))
def test_device_columns_record_what_host_columns_record(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """The GPU's way of keeping per-step values (device blocks, one transfer per drain) and the CPU's
    (host arrays) give the same rows, over several blocks and flushes."""
    spec = make_spec(**COPY_SPECS[case])
    steps = recorder_module.BLOCK_ROWS * 2 + 5
    _, host = run(spec, total_steps=steps, flush_every=1500)
    monkeypatch.setattr(recorder_module, "_HostColumn", recorder_module._DeviceColumn)
    _, device = run(spec, total_steps=steps, flush_every=1500)
    assert len(host.batches) == len(device.batches) == 2
    for name in ("step", "loss", "lr", "x"):
        if host.batches[0].x is not None or name != "x":
            np.testing.assert_array_equal(host.column(name), device.column(name))
    for extra in spec.training.extras:
        np.testing.assert_array_equal(
            np.concatenate([b.extras[extra] for b in host.batches]),
            np.concatenate([b.extras[extra] for b in device.batches]),
        )


@pytest.mark.parametrize("case", sorted(COPY_SPECS))
def test_host_copies_scale_with_flushes_not_steps(host_copies, case: str) -> None:
    """A CUDA-free stand-in for "the recorder never synchronises the device per step".

    On a GPU every one of the counted calls (``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``,
    ``float(t)``, ``int(t)``, ``bool(t)``, ``.to("cpu")``) is a device-to-host copy that waits for the
    device. The test counts those calls made directly from the recording code (engine/recorder.py and
    engine/training.py) and shows their number depends on the number of flushes only: 1000 steps in 10
    flushes make exactly as many as 100 steps in 10 flushes, and 1000 steps in one flush as many as 10
    steps in one flush. A positive control (one flush per step) shows the counter does see the recorder's
    copies. What it does not prove: that torch itself, the optimizer's own step, or a copy made by some
    other operation (say a boolean-mask index) does not synchronise; and on the CPU these calls copy
    nothing, so it says nothing about timing.
    """
    spec = make_spec(**COPY_SPECS[case])
    many_steps, flushes = count_copies(host_copies, spec, steps=1000, flush_every=100)
    assert flushes == 10
    few_steps, flushes_few = count_copies(host_copies, spec, steps=100, flush_every=10)
    assert flushes_few == 10
    assert many_steps == few_steps
    assert 0 < many_steps <= 8 * flushes + 2

    one_flush_long, n_long = count_copies(host_copies, spec, steps=1000, flush_every=1000)
    one_flush_short, n_short = count_copies(host_copies, spec, steps=10, flush_every=1000)
    assert n_long == n_short == 1
    assert one_flush_long == one_flush_short <= 10

    control, n_control = count_copies(host_copies, spec, steps=50, flush_every=1)
    assert n_control == 50 and control >= 50


@pytest.mark.parametrize("targets", ["flat", "transposed"])
def test_regression_targets_of_the_wrong_shape_are_refused_naming_the_shapes(
    monkeypatch: pytest.MonkeyPatch, targets: str
) -> None:
    """Targets [N] against outputs [N, 1] would broadcast to an [N, N] loss and train as if nothing were wrong."""
    dataset = registry.get("dataset", "synthetic_regression")
    original_load = dataset.load

    def load(params):
        data = original_load(params)
        return dataclasses.replace(data, y=data.y[:, 0] if targets == "flat" else data.y.T)

    monkeypatch.setattr(dataset, "load", load)
    n_targets = 1 if targets == "flat" else 2
    spec = make_spec(
        {
            **LINEAR_REGRESSION,
            "dataset": {
                "name": "synthetic_regression",
                "params": {"n_samples": 10, "n_features": 3, "n_targets": n_targets},
            },
        },
        {"steps": 3},
        [{"name": "sgd", "params": {"lr": 0.1}}],
    )
    wrong = "(10,)" if targets == "flat" else "(2, 10)"
    expected = f"regression targets of shape {wrong}, but the model outputs (10, {n_targets})"
    with pytest.raises(ValueError, match=re.escape(expected)):
        train(spec, 0, 0, Sink(), total_steps=3)


class _NoisySGD(torch.optim.Optimizer):
    """p <- p - lr (g + sigma z), z ~ N(0, 1) from torch's global generator."""

    def __init__(self, params, lr: float = 0.05, sigma: float = 0.1) -> None:
        super().__init__(params, {"lr": lr, "sigma": sigma})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad + group["sigma"] * torch.randn_like(p), alpha=-group["lr"])


def test_an_optimizer_drawing_from_the_global_generator_draws_the_same_for_a_seed_in_any_process_state() -> None:
    spec = make_spec(LINEAR_REGRESSION, {"steps": 12, "batch_size": 4}, [{"name": "sgd", "params": {"lr": 0.05}}])
    from engine.optimizers import Optimizer

    def losses(seed: int, before: int) -> list[float]:
        torch.manual_seed(before)  # whatever ran before in this process
        torch.rand(before)
        rows: list[StepBatch] = []
        training_module.train_with(
            spec,
            seed,
            lambda batch: rows.append(batch) or True,
            lambda module: [(Optimizer, _NoisySGD(module.parameters()))],
            total_steps=12,
        )
        return np.concatenate([batch.loss for batch in rows]).tolist()

    assert losses(0, before=1) == losses(0, before=2)
    assert losses(0, before=1) != losses(1, before=1)
