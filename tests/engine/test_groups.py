"""Parameter groups: the selectors' roles on built models, the partition's refusals, the spec's checks, and
training: Muon + AdamW as one entry against a plain torch loop with torch.optim.Muon and torch.optim.AdamW
(which tensors each received, every step equal), per-group params against torch's own param groups, a
rule-built optimizer's per-group numbers, a resume, and what groups change in a run's identity."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from engine import groups, sizing
from engine.identity import run_config_hash
from engine.models import Model
from engine.optimizers import Optimizer
from engine.problem import BatchPlan, build_problem, steps_total
from engine.recorder import StepBatch
from engine.registry import NoParams
from engine.spec import ComparisonSpec, with_run_params
from engine.training import build_optimizers, train
from engine.vectorized import can_vectorize

CPU = torch.device("cpu")
MLP = {"model": {"name": "mlp", "params": {"hidden": [8, 8], "activation": "tanh"}}, "dataset": {"name": "iris"}}
PROBLEM = {**MLP, "loss": "cross_entropy"}
REST = {"select": "rest"}
MUON_ADAMW = {
    "name": "adamw",
    "params": {"lr": 0.01, "weight_decay": 0.05},
    "groups": [
        {"select": "hidden_matrices", "optimizer": {"name": "muon", "params": {"lr": 0.05, "weight_decay": 0.1}}},
        {"select": "rest"},
    ],
}


def make_spec(optimizers: list[dict], problem: dict | None = None, **top: Any) -> ComparisonSpec:
    return ComparisonSpec.model_validate(
        {
            "name": "groups",
            "problem": problem or PROBLEM,
            "training": {"steps": 12, "batch_size": 32},
            "optimizers": optimizers,
            "device": "cpu",
            "dtype": "float64",
            **top,
        }
    )


def errors(optimizers: list[dict], problem: dict | None = None) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as caught:
        make_spec(optimizers, problem)
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


class Rows:
    def __init__(self) -> None:
        self.batches: list[StepBatch] = []

    def __call__(self, batch: StepBatch) -> bool:
        self.batches.append(batch)
        return True

    def column(self, name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in self.batches])


# ---------------------------------------------------------------- roles


class _Transformerish(Model):
    """Not registered (no name): a projection, a norm, a learned offset held by an embedding, a head
    registered before the final norm that the forward pass runs after it."""

    Params = NoParams

    @classmethod
    def build(cls, params, input_shape, n_outputs) -> nn.Module:
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.proj = nn.Linear(input_shape[0], 6)
                self.offset = nn.Embedding(1, 6)
                self.block = nn.Linear(6, 6, bias=False)
                self.head = nn.Linear(6, n_outputs)
                self.norm = nn.LayerNorm(6)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                h = self.norm(torch.tanh(self.block(self.proj(x) + self.offset.weight[0])))
                return self.head(h)

        return Net()


def roles(model: type[Model], params: Any, shape: tuple[int, ...], n_outputs: int) -> dict[str, set[str]]:
    return {p.name: set(p.roles) for p in groups.of_model(model, params, shape, n_outputs)}


def test_each_parameter_gets_its_roles_from_the_built_model() -> None:
    mlp = Model.registered("mlp")
    assert roles(mlp, mlp.Params(hidden=[8, 8]), (4,), 3) == {
        "0.weight": {"hidden_matrices"},
        "0.bias": {"biases"},
        "2.weight": {"hidden_matrices"},
        "2.bias": {"biases"},
        "4.weight": {"head"},
        "4.bias": {"head", "biases"},
    }
    cnn = Model.registered("cnn")
    assert roles(cnn, cnn.Params(channels=[2], hidden=4), (8, 8), 10) == {
        "1.weight": set(),  # a 4-D convolution filter is not a matrix
        "1.bias": {"biases"},
        "5.weight": {"hidden_matrices"},
        "5.bias": {"biases"},
        "7.weight": {"head"},
        "7.bias": {"head", "biases"},
    }
    linear = Model.registered("linear")
    assert roles(linear, linear.Params(), (4,), 3) == {"weight": {"head"}, "bias": {"head", "biases"}}
    # the head is the last layer the forward pass runs, not the last registered
    assert roles(_Transformerish, NoParams(), (4,), 3) == {
        "proj.weight": {"hidden_matrices"},
        "proj.bias": {"biases"},
        "offset.weight": {"embeddings"},
        "block.weight": {"hidden_matrices"},
        "head.weight": {"head"},
        "head.bias": {"head", "biases"},
        "norm.weight": {"norms"},
        "norm.bias": {"norms", "biases"},
    }


# ---------------------------------------------------------------- the partition


FOUND = groups.of_model(_Transformerish, NoParams(), (4,), 3)


def names(selects: list[list[str]]) -> list[list[str]]:
    return [[p.name for p in chosen] for chosen in groups.partition(FOUND, selects)]


def test_a_partition_takes_every_parameter_exactly_once() -> None:
    assert names([["hidden_matrices"], ["rest"]]) == [
        ["proj.weight", "block.weight"],
        ["proj.bias", "offset.weight", "head.weight", "head.bias", "norm.weight", "norm.bias"],
    ]
    # a group's selectors are a union: norms and biases overlap within it, which is fine
    assert names([["biases", "norms"], ["embeddings"], ["rest"]]) == [
        ["proj.bias", "head.bias", "norm.weight", "norm.bias"],
        ["offset.weight"],
        ["proj.weight", "block.weight", "head.weight"],
    ]
    assert names([["rest"], ["name:*.bias"]]) == [
        ["proj.weight", "offset.weight", "block.weight", "head.weight", "norm.weight"],
        ["proj.bias", "head.bias", "norm.bias"],
    ]


@pytest.mark.parametrize(
    ("selects", "loc", "message"),
    [
        ([["hidden_matrices"], ["name:nowhere.*"], ["rest"]], ("groups", 1, "select"), "'name:nowhere.*' matches no"),
        ([["hidden_matrices"], ["embeddings", "biases", "norms"]], ("groups",), "no group selects head.weight 3×6;"),
        ([["biases"], ["head"], ["rest"]], ("groups", 1, "select"), "'head.bias' is also selected by groups.0"),
        ([["rest"], ["hidden_matrices"], ["rest"]], ("groups", 2, "select"), "'rest' is already taken by groups.0"),
        ([["name:*"], ["rest"]], ("groups", 1, "select"), "'rest' matches no parameter"),
    ],
    ids=["matches-nothing", "missed", "double-covered", "two-rests", "nothing-left"],
)
def test_anything_but_a_partition_is_refused_naming_the_group(selects, loc, message) -> None:
    with pytest.raises(groups.GroupError) as caught:
        groups.partition(FOUND, selects)
    assert caught.value.loc == loc and message in caught.value.message


# ---------------------------------------------------------------- the spec


def test_a_group_spec_is_normalised() -> None:
    spec = make_spec(
        [
            {
                "name": "adamw",
                "groups": [
                    {"select": "hidden_matrices", "optimizer": {"name": "sgd", "params": {"lr": 0.1}}},
                    {"select": ["biases"], "params": {"weight_decay": 0}},
                    {"select": "rest", "params": {"lr": 0.002}},
                ],
            }
        ]
    )
    entry = spec.optimizers[0].model_dump(mode="json")
    assert entry["label"] == "sgd+adamw"
    sgd, biases, rest = entry["groups"]
    assert sgd["select"] == ["hidden_matrices"] and sgd["params"] == {}
    assert sgd["optimizer"]["params"]["lr"] == 0.1 and sgd["optimizer"]["params"]["momentum"] == 0.0  # defaults in
    assert biases == {"select": ["biases"], "optimizer": None, "params": {"weight_decay": 0.0}}
    assert rest == {"select": ["rest"], "optimizer": None, "params": {"lr": 0.002}}
    assert ComparisonSpec.model_validate(spec.model_dump(mode="json")) == spec  # a stored spec validates again
    assert not can_vectorize(spec, 0) and "trains alone" in can_vectorize(spec, 0).reason


@pytest.mark.parametrize(
    ("entry", "loc", "message"),
    [
        (
            {"name": "adamw", "groups": [{"select": "hiden_matrices"}]},
            ("optimizers", 0, "groups", 0, "select"),
            "unknown selector 'hiden_matrices'",
        ),
        (
            {"name": "adamw", "groups": [{"select": ["rest", "name:"]}]},
            ("optimizers", 0, "groups", 0, "select"),
            "unknown selector 'name:'",
        ),
        (
            {"name": "adamw", "groups": [{"select": "biases", "params": {"weight_decay": -1}}, {"select": "rest"}]},
            ("optimizers", 0, "groups", 0, "params", "weight_decay"),
            "greater than or equal to 0",
        ),
        (
            {"name": "adamw", "groups": [{"select": "biases", "params": {"momentum": 0.9}}, {"select": "rest"}]},
            ("optimizers", 0, "groups", 0, "params", "momentum"),
            "Extra inputs are not permitted",
        ),
        (
            {
                "name": "sgd",
                "sweep": {"momentum": [0.0, 0.9]},
                "groups": [{"select": "biases", "params": {"nesterov": True}}, {"select": "rest"}],
            },
            ("optimizers", 0, "groups", 0, "params"),
            "with the sweep's setting momentum=0.0",
        ),
        (
            {"name": "adamw", "groups": [{"select": "rest", "optimizer": {"name": "sgd"}, "params": {"lr": 1.0}}]},
            ("optimizers", 0, "groups", 0, "params"),
            "gives that optimizer's params inside 'optimizer'",
        ),
        (
            {"name": "adamw", "groups": [{"select": "rest", "optimizer": {"name": "sgdd"}}]},
            ("optimizers", 0, "groups", 0, "optimizer", "name"),
            "unknown optimizer 'sgdd'",
        ),
        (
            {"name": "adamw", "groups": [{"select": "biases", "optimizer": {"name": "lbfgs"}}, {"select": "rest"}]},
            ("optimizers", 0, "groups", 0, "optimizer", "name"),
            "'lbfgs' re-evaluates the loss in a closure",
        ),
        (
            {"name": "lbfgs", "groups": [{"select": "rest"}]},
            ("optimizers", 0, "groups"),
            "'lbfgs' re-evaluates the loss in a closure",
        ),
        (
            {"name": "adamw", "groups": [{"select": "biases", "optimizer": {"name": "muon"}}, {"select": "rest"}]},
            ("optimizers", 0, "groups", 0, "select"),
            "'muon' only takes matrices, but this group selects 0.bias 8, 2.bias 8, 4.bias 3",
        ),
        (
            {"name": "adamw", "groups": [{"select": "hidden_matrices"}, {"select": "embeddings"}, {"select": "rest"}]},
            ("optimizers", 0, "groups", 1, "select"),
            "selector 'embeddings' matches no parameter; the parameters: 0.weight 8×4, 0.bias 8",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_group_is_refused_at_its_field(entry: dict, loc: tuple, message: str) -> None:
    [(where, why)] = errors([entry])
    assert where == loc and message in why, why


def test_a_function_problem_takes_no_groups() -> None:
    problem = {"function": {"name": "quadratic"}}
    [(where, why)] = errors([{"name": "adam", "groups": [{"select": "rest"}]}], problem)
    assert where == ("optimizers", 0, "groups") and "function problem" in why


# ---------------------------------------------------------------- training: Muon + AdamW against a plain loop


def plain_muon_adamw(
    spec: ComparisonSpec, seed: int, factor: Callable[[int], float] = lambda t: 1.0
) -> tuple[list[float], list[float], float]:
    """MUON_ADAMW's run as a plain loop: the same initial weights and batches, torch.optim.Muon on the hidden
    matrices and torch.optim.AdamW on the rest, both rates times ``factor`` (LambdaLR). The losses, Muon's
    rates, and the final whole-set loss."""
    problem = build_problem(spec.problem, CPU, torch.float64)
    reference = problem.make_module(seed)
    params = dict(reference.named_parameters())
    muon = torch.optim.Muon([params["0.weight"], params["2.weight"]], lr=0.05, weight_decay=0.1)
    adamw = torch.optim.AdamW(
        [params[n] for n in ("0.bias", "2.bias", "4.weight", "4.bias")], lr=0.01, weight_decay=0.05
    )
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (muon, adamw)]
    plan = BatchPlan.for_training(problem.n_train, spec.training, seed, spec.optimizers[0].batch_size)
    losses, lrs = [], []
    for _, (_, indices) in zip(range(steps_total(spec)), plan.batches(CPU)):
        for optimizer in (muon, adamw):
            optimizer.zero_grad()
        loss = nn.functional.cross_entropy(reference(problem.x[indices]), problem.y[indices])
        loss.backward()
        losses.append(loss.item())
        lrs.append(muon.param_groups[0]["lr"])
        muon.step()
        adamw.step()
        for scheduler in schedulers:
            scheduler.step()
    with torch.no_grad():
        final = nn.functional.cross_entropy(reference(problem.x), problem.y).item()
    return losses, lrs, final


def test_muon_and_adamw_as_one_entry_is_a_plain_loop_with_the_two_torch_optimizers() -> None:
    schedule = {"name": "cosine", "min_factor": 0.1, "warmup_steps": 3}
    spec = make_spec([{**MUON_ADAMW, "schedule": schedule}], seeds=[5])
    total, seed = steps_total(spec), 5
    assert spec.optimizers[0].label == "muon+adamw"

    # which tensors each optimizer receives
    problem = build_problem(spec.problem, CPU, torch.float64)
    module = problem.make_module(seed)
    named = {id(p): n for n, p in module.named_parameters()}
    built = build_optimizers(spec.problem, spec.optimizers[0], module, total_steps=spec.training.steps)
    received = {type(o).__name__: [[named[id(p)] for p in g["params"]] for g in o.param_groups] for o in built}
    assert received == {
        "Muon": [["0.weight", "2.weight"]],
        "AdamW": [["0.bias", "2.bias", "4.weight", "4.bias"]],
    }

    rows = Rows()
    outcome = train(spec, 0, seed, rows, total_steps=total, flush_every=5, flush_interval_s=1e9)
    assert outcome.status == "succeeded"

    def factor(t: int) -> float:  # warm-up over 3 steps, then cosine to 0.1 over the other 9
        return (t + 1) / 3 if t < 3 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - 3) / 8))

    losses, lrs, final = plain_muon_adamw(spec, seed, factor)
    np.testing.assert_allclose(rows.column("loss"), losses, rtol=1e-12, atol=0)
    # the rate recorded is groups.0's (Muon's): its lr times the schedule's factor
    np.testing.assert_allclose(rows.column("lr"), lrs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(rows.column("lr"), [0.05 * factor(t) for t in range(total)], rtol=1e-12)
    assert outcome.final_loss == pytest.approx(final, rel=1e-12)


def test_per_group_params_are_torchs_param_groups_of_one_optimizer() -> None:
    entry = {
        "name": "adamw",
        "params": {"lr": 0.02, "weight_decay": 0.1},
        "groups": [{"select": "biases", "params": {"weight_decay": 0}}, {"select": "rest"}],
    }
    spec = make_spec([entry])
    problem = build_problem(spec.problem, CPU, torch.float64)
    built = build_optimizers(spec.problem, spec.optimizers[0], problem.make_module(0), total_steps=spec.training.steps)
    assert len(built) == 1 and [g["weight_decay"] for g in built[0].param_groups] == [0.0, 0.1]

    rows = Rows()
    train(spec, 0, 0, rows, total_steps=12, flush_every=100, flush_interval_s=1e9)
    reference = problem.make_module(0)
    params = dict(reference.named_parameters())
    biases = [p for n, p in params.items() if n.endswith("bias")]
    weights = [p for n, p in params.items() if not n.endswith("bias")]
    adamw = torch.optim.AdamW([{"params": biases, "weight_decay": 0.0}, {"params": weights}], lr=0.02, weight_decay=0.1)
    plan = BatchPlan.for_training(problem.n_train, spec.training, 0, 32)
    losses = []
    for _, (_, indices) in zip(range(12), plan.batches(CPU)):
        adamw.zero_grad()
        loss = nn.functional.cross_entropy(reference(problem.x[indices]), problem.y[indices])
        loss.backward()
        losses.append(loss.item())
        adamw.step()
    np.testing.assert_allclose(rows.column("loss"), losses, rtol=1e-12, atol=0)


def test_a_rule_built_optimizer_takes_each_groups_numbers() -> None:
    """local_gain has no torch.optim class: one TransformOptimizer holds both groups, each with its numbers."""
    entry = {
        "name": "local_gain",
        "params": {"lr": 0.01, "beta": 0.05},
        "groups": [{"select": "hidden_matrices", "params": {"lr": 0.03, "beta": 0.2}}, {"select": "rest"}],
    }
    spec = make_spec([entry])
    grouped = Rows()
    train(spec, 0, 0, grouped, total_steps=12, flush_every=100, flush_interval_s=1e9)
    problem = build_problem(spec.problem, CPU, torch.float64)
    module = problem.make_module(0)
    built = build_optimizers(spec.problem, spec.optimizers[0], module, total_steps=spec.training.steps)
    assert len(built) == 1 and [(g["lr"], g["beta"]) for g in built[0].param_groups] == [(0.03, 0.2), (0.01, 0.05)]
    # the same as two optimizers, one per group
    local_gain = Optimizer.registered("local_gain")
    params = dict(module.named_parameters())
    matrices = [params["0.weight"], params["2.weight"]]
    others = [p for n, p in params.items() if n not in ("0.weight", "2.weight")]
    separate = [
        local_gain.build(matrices, local_gain.Params(lr=0.03, beta=0.2)),
        local_gain.build(others, local_gain.Params(lr=0.01, beta=0.05)),
    ]
    plan = BatchPlan.for_training(problem.n_train, spec.training, 0, 32)
    losses = []
    for _, (_, indices) in zip(range(12), plan.batches(CPU)):
        for optimizer in separate:
            optimizer.zero_grad()
        loss = nn.functional.cross_entropy(module(problem.x[indices]), problem.y[indices])
        loss.backward()
        losses.append(loss.item())
        for optimizer in separate:
            optimizer.step()
    np.testing.assert_allclose(grouped.column("loss"), losses, rtol=1e-12, atol=0)


def test_a_run_with_groups_resumes_from_its_checkpoint_exactly() -> None:
    spec = make_spec([{**MUON_ADAMW, "schedule": {"name": "linear"}}])
    whole = Rows()
    train(spec, 0, 0, whole, total_steps=12, flush_every=4, flush_interval_s=1e9, checkpoint_interval_s=0.0)
    step, state = whole.batches[1].checkpoint
    assert step == 8
    tail = Rows()
    train(spec, 0, 0, tail, total_steps=12, flush_every=4, flush_interval_s=1e9, resume=state)
    assert np.array_equal(tail.column("step"), np.arange(8, 12))
    np.testing.assert_array_equal(tail.column("loss"), whole.column("loss")[8:])
    np.testing.assert_array_equal(tail.column("lr"), whole.column("lr")[8:])


def test_groups_are_part_of_a_runs_identity_and_runs_without_them_keep_their_hash() -> None:
    plain = make_spec([{"name": "adamw"}]).model_dump(mode="json")
    grouped = make_spec([{"name": "adamw", "groups": [{"select": "rest"}]}]).model_dump(mode="json")
    other = make_spec([{"name": "adamw", "groups": [{"select": "rest", "params": {"lr": 0.1}}]}]).model_dump(
        mode="json"
    )
    params = plain["optimizers"][0]["params"]
    hashes = {run_config_hash(spec, 0, params, 0, "cpu") for spec in (plain, grouped, other)}
    assert len(hashes) == 3
    assert plain["optimizers"][0]["groups"] == []
    del plain["optimizers"][0]["groups"]  # a spec stored before groups existed
    assert run_config_hash(plain, 0, params, 0, "cpu") in hashes


def test_a_schedule_free_optimizer_takes_only_a_constant_rate_with_or_without_warmup() -> None:
    free = {"name": "pytorch_optimizer.schedulefreeadamw", "params": {"lr": 0.01}}
    for schedule in ({"name": "constant"}, {"name": "constant", "warmup_steps": 3}):
        make_spec([{**free, "schedule": schedule}])
    for schedule in ({"name": "cosine"}, {"name": "wsd", "warmup_steps": 2}, {"name": "linear"}):
        [(where, why)] = errors([{**free, "schedule": schedule}])
        assert where == ("optimizers", 0, "schedule") and "schedule-free" in why and schedule["name"] in why
    # also when it is a group's optimizer
    grouped = {
        "name": "adamw",
        "schedule": {"name": "one_cycle"},
        "groups": [{"select": "biases", "optimizer": free}, {"select": "rest"}],
    }
    [(where, why)] = errors([grouped])
    assert where == ("optimizers", 0, "schedule") and "'pytorch_optimizer.schedulefreeadamw' is schedule-free" in why


def test_the_memory_estimate_counts_the_largest_state_among_the_groups_optimizers() -> None:
    plain = make_spec([{"name": "sgd"}])
    grouped = make_spec([{"name": "sgd", "groups": [{"select": "biases", "optimizer": {"name": "adam"}}, REST]}])
    n_params = sizing.parameter_count(plain)
    assert sizing.estimate(plain).parts["optimizer state"] == 0  # plain SGD keeps nothing
    assert sizing.estimate(grouped).parts["optimizer state"] == 2 * n_params * 8  # Adam's two moments, float64


def test_a_swept_runs_params_reach_the_groups_that_inherit_them() -> None:
    entry = {
        "name": "adamw",
        "sweep": {"lr": [0.01, 0.03]},
        "groups": [
            {"select": "biases", "params": {"weight_decay": 0}},
            {"select": "name:4.weight", "params": {"lr": 0.5}},
            REST,
        ],
    }
    spec = make_spec([entry])
    assert [r for r in spec.optimizers[0].settings] == [{"lr": 0.01}, {"lr": 0.03}]
    run = with_run_params(spec, 0, {**spec.optimizers[0].params, "lr": 0.03})
    module = build_problem(spec.problem, CPU, torch.float64).make_module(0)
    [adamw] = build_optimizers(run.problem, run.optimizers[0], module, total_steps=run.training.steps)
    assert [(g["lr"], g["weight_decay"]) for g in adamw.param_groups] == [(0.03, 0.0), (0.5, 0.01), (0.03, 0.01)]
