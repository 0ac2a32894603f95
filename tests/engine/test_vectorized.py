"""Vectorized ensembles against sequential ``train``: for every optimizer rule, on function problems and on
an MLP with shuffled mini-batches, every emitted row (step, epoch, loss, lr, x, extras, evaluations) and
every outcome agree to float tolerance, with the same flush boundaries; a diverging or cancelled member
stops alone. Then the grouping rules, and no per-step host copies.

Each case trains a few members for a few hundred steps on the CPU, so the file takes seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import tests.engine.test_training as training_tests
from engine import registry
from engine.identity import execution_plan
from engine.problem import train_size
from engine.spec import ComparisonSpec
from engine.training import RunOutcome, train
from engine.vectorized import (
    Member,
    can_vectorize,
    group_runs,
    parameter_count,
    should_vectorize,
    train_ensemble,
)
from tests.engine.test_training import Sink, host_copies, make_spec  # noqa: F401 (host_copies is a fixture)

#: relative and absolute tolerance per dtype
TOLERANCE = {"float64": (1e-10, 1e-14), "float32": (1e-5, 1e-7)}

QUADRATIC = {"function": {"name": "quadratic", "params": {"center": [2.0, -1.0, 0.5], "scale": [1.0, 10.0, 0.1]}}}
ROSENBROCK = {"function": {"name": "rosenbrock"}}
CLASSIFICATION = {
    "model": {"name": "mlp", "params": {"hidden": [8], "activation": "tanh"}},
    "dataset": {"name": "synthetic_classification", "params": {"n_samples": 60, "n_features": 5}},
    "loss": "cross_entropy",
    "validation_fraction": 0.2,
}

# name: (optimizer, params, lrs), each rule with its code paths; the largest sgd rate makes rosenbrock diverge
RULE_CASES = {
    "sgd": ("sgd", {}, [1e-4, 1e-3, 2e-2]),
    "momentum": ("sgd", {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}, [1e-4, 5e-4]),
    "nesterov": ("sgd", {"momentum": 0.8, "nesterov": True}, [1e-4, 5e-4]),
    "adam": ("adam", {"weight_decay": 0.01}, [1e-3, 1e-2, 5e-2]),
    "amsgrad": ("adam", {"amsgrad": True, "betas": [0.8, 0.99]}, [1e-3, 1e-2]),
    "adam-no-bias-correction": ("adam", {"bias_correction": False}, [1e-3, 1e-2]),
    "adamw": ("adamw", {"weight_decay": 0.1}, [1e-3, 1e-2]),
    "rmsprop": ("rmsprop", {}, [1e-4, 1e-3]),
    "rmsprop-centered-momentum": ("rmsprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.01}, [1e-4, 1e-3]),
}


def sweep(name: str, params: dict, lrs: list[float], **extra) -> list[dict]:
    return [{"name": name, "params": {**params, "lr": lr}, **extra} for lr in lrs]


def every_run(spec: ComparisonSpec) -> list[Member]:
    return [Member(i, seed) for i in range(len(spec.optimizers)) for seed in spec.seeds]


def run_both(
    spec: ComparisonSpec,
    members: list[Member],
    total_steps: int,
    flush_every: int,
    stop_at: dict[int, int] | None = None,
) -> tuple[list[tuple[RunOutcome, Sink]], ...]:
    """Each member trained alone with ``train``, and all of them as one ensemble; ``stop_at`` maps a member's
    position to the sink call from which it answers False (a cancellation)."""
    stop_at = stop_at or {}
    sequential = []
    for position, member in enumerate(members):
        sink = Sink(stop_at.get(position))
        entry_spec = spec if member.params is None else _with_params(spec, member)
        outcome = train(
            entry_spec,
            member.entry_index,
            member.seed,
            sink,
            total_steps=total_steps,
            flush_every=flush_every,
            flush_interval_s=1e9,
        )
        sequential.append((outcome, sink))
    sinks = [Sink(stop_at.get(position)) for position in range(len(members))]
    outcomes = train_ensemble(
        spec, members, sinks, total_steps=total_steps, flush_every=flush_every, flush_interval_s=1e9
    )
    return sequential, list(zip(outcomes, sinks))


def _with_params(spec: ComparisonSpec, member: Member) -> ComparisonSpec:
    data = spec.model_dump(mode="json")
    data["optimizers"][member.entry_index]["params"] = member.params
    return ComparisonSpec.model_validate(data)


def rows(sink: Sink, column: str) -> np.ndarray | None:
    values = [getattr(b, column) for b in sink.batches if len(b)]
    if all(v is None for v in values):
        return None
    return np.concatenate(values)


def assert_same_runs(sequential: list, vectorized: list, dtype: str) -> None:
    rtol, atol = TOLERANCE[dtype]

    def close(got, want) -> None:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)

    for (want, expected), (got, actual) in zip(sequential, vectorized, strict=True):
        assert (got.status, got.steps_done, got.diverged_step, got.device) == (
            want.status,
            want.steps_done,
            want.diverged_step,
            want.device,
        )
        for value, reference in ((got.final_loss, want.final_loss), (got.best_loss, want.best_loss)):
            assert (value is None) == (reference is None)
            if value is not None:
                assert value == pytest.approx(reference, rel=rtol, abs=atol)
        assert [len(b) for b in actual.batches] == [len(b) for b in expected.batches]
        assert np.array_equal(rows(actual, "step"), rows(expected, "step"))
        epochs = rows(actual, "epoch")
        assert (epochs is None) == (rows(expected, "epoch") is None)
        if epochs is not None:
            assert np.array_equal(epochs, rows(expected, "epoch"))
        close(rows(actual, "loss"), rows(expected, "loss"))
        assert np.array_equal(rows(actual, "lr"), rows(expected, "lr"))  # the same float arithmetic
        points = rows(actual, "x")
        assert (points is None) == (rows(expected, "x") is None)
        if points is not None:
            close(points, rows(expected, "x"))
        extras = [b.extras for b in actual.batches if len(b)]
        reference_extras = [b.extras for b in expected.batches if len(b)]
        assert [sorted(e) for e in extras] == [sorted(e) for e in reference_extras]
        for name in extras[0] if extras else ():
            close(np.concatenate([e[name] for e in extras]), np.concatenate([e[name] for e in reference_extras]))
        assert [(e["step"], e["epoch"], sorted(e)) for e in actual.evals] == [
            (e["step"], e["epoch"], sorted(e)) for e in expected.evals
        ]
        for e, reference in zip(actual.evals, expected.evals):
            close(
                [e[k] for k in sorted(e) if k not in ("step", "epoch")],
                [reference[k] for k in sorted(reference) if k not in ("step", "epoch")],
            )


# ================================================================ equality with sequential runs


@pytest.mark.parametrize("problem", [ROSENBROCK, QUADRATIC], ids=["rosenbrock", "quadratic"])
@pytest.mark.parametrize("case", sorted(RULE_CASES))
def test_function_problems_match_sequential_runs(problem: dict, case: str) -> None:
    name, params, lrs = RULE_CASES[case]
    spec = make_spec(
        problem,
        {"steps": 200, "extras": ["grad_norm", "update_norm"]},
        sweep(name, params, lrs),
        seeds=[0, 1],
        dtype="float64",
    )
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=200, flush_every=64)
    assert_same_runs(sequential, vectorized, "float64")
    assert [o.steps_done for o, _ in vectorized[:2]] == [200, 200]  # the smallest rate trains throughout


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "optimizers",
    [
        sweep("adam", {}, [1e-3, 3e-2], schedule={"name": "cosine", "min_factor": 0.1}),
        sweep(
            "sgd",
            {"momentum": 0.9, "nesterov": True},
            [1e-2, 1e-1],
            schedule={"name": "warmup_cosine", "warmup_steps": 20},
        ),
        sweep("rmsprop", {"centered": True}, [1e-3, 1e-2], schedule={"name": "step", "step_size": 50, "gamma": 0.5}),
    ],
    ids=["adam-cosine", "nesterov-warmup", "rmsprop-step"],
)
def test_mlp_on_shuffled_mini_batches_matches_sequential_runs(optimizers: list[dict], dtype: str) -> None:
    training = {"steps": 120, "batch_size": 16, "eval_every": 40, "extras": ["grad_norm", "update_norm"]}
    spec = make_spec(CLASSIFICATION, training, optimizers, seeds=[0, 1, 2], dtype=dtype)
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=120, flush_every=32)
    assert_same_runs(sequential, vectorized, dtype)
    assert {outcome.status for outcome, _ in vectorized} == {"succeeded"}
    first_batches = {tuple(sink.batches[0].loss[:3]) for _, sink in vectorized}
    assert len(first_batches) == len(vectorized)  # every seed and rate has its own trajectory


def vmap_safe_problems() -> list[dict]:
    """Every function and model that declares itself vmap_safe, models on the problem they declare for tests."""
    functions = [{"function": {"name": name}} for name, cls in registry.all_of("function").items() if cls.vmap_safe]
    models = [
        {
            "model": {"name": name, "params": cls.test_problem.get("params", {})},
            **{k: v for k, v in cls.test_problem.items() if k != "params"},
        }
        for name, cls in registry.all_of("model").items()
        if cls.vmap_safe
    ]
    return functions + models


def test_the_built_in_components_declare_themselves_vmap_safe() -> None:
    declared = {(p.get("function") or p["model"])["name"] for p in vmap_safe_problems()}
    assert {
        "cnn",
        "linear",
        "mlp",
        "beale",
        "booth",
        "himmelblau",
        "quadratic",
        "rastrigin",
        "rosenbrock",
        "saddle",
    } <= declared


@pytest.mark.parametrize(
    "problem", vmap_safe_problems(), ids=lambda problem: (problem.get("function") or problem["model"])["name"]
)
def test_every_component_declared_vmap_safe_trains_as_it_does_alone(problem: dict) -> None:
    spec = make_spec(problem, {"steps": 12, "batch_size": 32}, sweep("adamw", {}, [1e-3, 1e-2]), dtype="float64")
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=12, flush_every=5)
    assert_same_runs(sequential, vectorized, "float64")


def test_full_batch_regression_with_drop_last_epochs_matches() -> None:
    problem = {
        "model": {"name": "linear"},
        "loss": "mse_sum",
        "dataset": {"name": "synthetic_regression", "params": {"n_samples": 10, "n_features": 3, "n_targets": 2}},
    }
    spec = make_spec(
        problem,
        {"epochs": 40, "batch_size": 4, "drop_last": True, "shuffle": False},
        sweep("sgd", {"momentum": 0.5}, [1e-3, 1e-2]),
        seeds=[3, 4],
        dtype="float64",
    )
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=80, flush_every=30)
    assert_same_runs(sequential, vectorized, "float64")
    assert rows(vectorized[0][1], "epoch")[-1] == 39


def test_a_diverging_member_stops_alone_and_the_others_train_on() -> None:
    spec = make_spec(ROSENBROCK, {"steps": 300}, sweep("sgd", {}, [1e-4, 2e-2, 1e-3]), seeds=[0, 1], dtype="float64")
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=300, flush_every=5)
    assert_same_runs(sequential, vectorized, "float64")
    outcomes = [outcome for outcome, _ in vectorized]
    assert [o.status for o in outcomes] == ["succeeded"] * 2 + ["diverged"] * 2 + ["succeeded"] * 2
    diverged, sink = vectorized[2]
    assert diverged.diverged_step < 20 and diverged.final_loss is None
    assert rows(sink, "step")[-1] == diverged.diverged_step  # nothing after the non-finite row
    assert not np.isfinite(rows(sink, "loss")[-1]) and np.isfinite(rows(sink, "loss")[:-1]).all()
    assert all(o.steps_done == 300 for i, o in enumerate(outcomes) if i not in (2, 3))


def test_a_cancelled_member_stops_alone() -> None:
    spec = make_spec(
        CLASSIFICATION,
        {"steps": 100, "batch_size": 8, "eval_every": 25},
        sweep("adam", {}, [1e-3, 1e-2]),
        seeds=[0, 1],
        dtype="float64",
    )
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=100, flush_every=20, stop_at={1: 2})
    assert_same_runs(sequential, vectorized, "float64")
    assert [o.status for o, _ in vectorized] == ["succeeded", "cancelled", "succeeded", "succeeded"]
    cancelled, sink = vectorized[1]
    assert cancelled.steps_done == 40 and len(sink.batches) == 2 and cancelled.final_loss is not None


def test_a_members_own_params_replace_its_entrys() -> None:
    """Sweep runs carry their exact params: each trains as a spec whose entry had them."""
    spec = make_spec(ROSENBROCK, {"steps": 100}, [{"name": "adam", "params": {"lr": 1e-3}}], dtype="float64")
    members = [Member(0, 0, {"lr": 3e-2, "betas": [0.8, 0.9]}), Member(0, 0, {"lr": 1e-2}), Member(0, 0)]
    sequential, vectorized = run_both(spec, members, total_steps=100, flush_every=40)
    assert_same_runs(sequential, vectorized, "float64")
    assert [rows(sink, "lr")[0] for _, sink in vectorized] == [3e-2, 1e-2, 1e-3]


def test_members_that_may_not_train_together_are_refused() -> None:
    spec = make_spec(
        ROSENBROCK, {"steps": 10}, sweep("adam", {}, [1e-3]) + sweep("sgd", {}, [1e-3]) + [{"name": "lbfgs"}]
    )
    with pytest.raises(ValueError, match="share the optimizer"):
        train_ensemble(spec, [Member(0, 0), Member(1, 0)], [Sink(), Sink()], total_steps=10)
    with pytest.raises(ValueError, match="optimizers.2 cannot be vectorized: optimizer 'lbfgs'"):
        train_ensemble(spec, [Member(2, 0)], [Sink()], total_steps=10)
    with pytest.raises(ValueError, match="2 members need as many sinks"):
        train_ensemble(spec, [Member(0, 0), Member(0, 0, {"lr": 0.1})], [Sink()], total_steps=10)


# ================================================================ grouping and where it pays


def test_can_vectorize_names_the_reason() -> None:
    spec = make_spec(ROSENBROCK, {"steps": 10}, [{"name": "adam"}, {"name": "lbfgs"}, {"name": "rprop"}])
    assert can_vectorize(spec, 0) and "adam" in can_vectorize(spec, 0).reason
    assert can_vectorize(spec, 2)  # elementwise without a rule: through its own torch optimizer per member
    verdict = can_vectorize(spec, 1)
    assert not verdict and "optimizer 'lbfgs' is not elementwise" in verdict.reason


def test_can_vectorize_reads_declared_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """No table of names: a subclass inherits its parent's capabilities, and each declared need refuses."""
    from engine.models.mlp import MLP
    from engine.optimizers.sgd import SGD

    spec = make_spec(CLASSIFICATION, {"steps": 10}, [{"name": "sgd"}])
    assert can_vectorize(spec, 0)
    for need in ("full_batch_only", "needs_closure", "needs_hvp", "train_eval_modes"):
        with monkeypatch.context() as patch:
            patch.setattr(SGD, need, True)
            assert not can_vectorize(spec, 0) and need in can_vectorize(spec, 0).reason
    with monkeypatch.context() as patch:
        patch.setattr(SGD, "elementwise", False)
        assert "not elementwise" in can_vectorize(spec, 0).reason
    with monkeypatch.context() as patch:
        patch.setattr(MLP, "vmap_safe", False)
        assert "model 'mlp' is not declared to run under vmap" in can_vectorize(spec, 0).reason


def test_group_runs_splits_by_optimizer_batch_size_and_code_path() -> None:
    optimizers = [
        *sweep("adam", {}, [1e-3, 1e-2]),  # 0, 1: one ensemble
        {"name": "adam", "params": {"amsgrad": True}},  # 2: another code path
        {"name": "adam", "params": {"lr": 0.1}, "batch_size": 4},  # 3: another batch size
        {"name": "adam", "params": {"lr": 0.2}, "schedule": {"name": "cosine"}},  # 4: schedules may differ
        *sweep("sgd", {}, [1e-2, 1e-1]),  # 5, 6
        {"name": "sgd", "params": {"momentum": 0.9}},  # 7: momentum has a buffer, plain sgd none
        {"name": "lbfgs"},  # 8: not vectorized
    ]
    spec = make_spec(CLASSIFICATION, {"steps": 10, "batch_size": "full"}, optimizers, seeds=[0, 1])
    groups = group_runs(spec, every_run(spec))
    as_entries = sorted(sorted({m.entry_index for m in group}) for group in groups)
    assert as_entries == [[0, 1, 4], [2], [3], [5, 6], [7], [8], [8]]
    assert all(len(group) == 2 * len({m.entry_index for m in group}) for group in groups if group[0].entry_index != 8)
    chunks = group_runs(spec, [Member(0, seed) for seed in range(5)], max_members=2)
    assert [len(c) for c in chunks] == [2, 2, 1]


@pytest.mark.parametrize(
    "hidden, batch_size, on_cpu",
    [
        ([16], "full", True),  # 131 parameters × 48 rows
        ([64, 64], 32, True),  # 4,739 × 32
        ([200, 200], 8, False),  # 42,003 parameters: the stacked state outgrows the cache
        ([1024, 1024], 48, False),
    ],
)
def test_should_vectorize_follows_the_measured_rule(hidden: list[int], batch_size: int | str, on_cpu: bool) -> None:
    spec = make_spec(
        dict(CLASSIFICATION, model={"name": "mlp", "params": {"hidden": hidden}}),
        {"steps": 10, "batch_size": batch_size},
        sweep("adam", {}, [1e-3, 1e-2]),
    )
    members = every_run(spec)
    widths = [5, *hidden, 3]
    assert parameter_count(spec) == sum(a * b + b for a, b in zip(widths, widths[1:]))
    assert should_vectorize(spec, members, "cpu") is on_cpu
    assert should_vectorize(spec, members, torch.device("cuda"))  # a decision only: no GPU needed
    assert not should_vectorize(spec, members[:1], "cuda")
    # the sizes a caller worked out once (engine.identity.execution_plan) decide as the spec's own
    sizes = {"n_params": parameter_count(spec), "n_train": train_size(spec.problem)}
    assert should_vectorize(spec, members, "cpu", **sizes) is on_cpu
    assert execution_plan(spec, members, "cpu") == (
        [(members, "ensemble")] if on_cpu else [([member], "alone") for member in members]
    )


def test_function_sweeps_are_always_worth_vectorizing() -> None:
    spec = make_spec(ROSENBROCK, {"steps": 10}, sweep("adam", {}, [1e-3, 1e-2]) + [{"name": "lbfgs"}])
    assert should_vectorize(spec, [Member(0, 0), Member(1, 0)], "cpu")
    assert not should_vectorize(spec, [Member(0, 0), Member(2, 0)], "cpu")  # lbfgs cannot join


# ================================================================ no per-step host copies


@pytest.mark.parametrize("case", sorted(training_tests.COPY_SPECS))
def test_host_copies_scale_with_flushes_not_steps(host_copies, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """``test_training``'s stand-in for "no per-step device synchronisation", applied to the ensemble: the
    copies to the host made from engine/vectorized.py and engine/recorder.py depend on the flushes only."""
    monkeypatch.setattr(training_tests, "RECORDING_FILES", ("recorder.py", "vectorized.py"))
    config = training_tests.COPY_SPECS[case]
    entry = config["optimizers"][0]
    rest = {k: v for k, v in entry.items() if k not in ("name", "params")}
    spec = make_spec(config["problem"], config["training"], sweep(entry["name"], {}, [1e-4, 1e-3], **rest))

    def copies(steps: int, flush_every: int) -> tuple[int, int]:
        host_copies.clear()
        sinks = [Sink(), Sink()]
        outcomes = train_ensemble(
            spec, every_run(spec), sinks, total_steps=steps, flush_every=flush_every, flush_interval_s=1e9
        )
        assert [o.steps_done for o in outcomes] == [steps, steps]
        return sum(host_copies.values()), len(sinks[0].batches)

    assert copies(1000, 100) == copies(100, 10) == (copies(1000, 100)[0], 10)
    assert copies(1000, 1000) == copies(10, 1000)
    control, flushes = copies(50, 1)
    assert flushes == 50 and control >= 50


# ================================================================ a new optimizer, one file


@pytest.fixture
def signum():
    """tests/engine/plugin_example.py's signum, registered for the test only."""
    from tests.engine.plugin_example import make_signum

    cls = make_signum()
    yield cls
    registry._registry["optimizer"].pop(cls.name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_new_elementwise_optimizer_ensembles_as_its_runs_train_alone(signum, dtype: str) -> None:
    """Declared by its rule and ``elementwise`` only: it is grouped, ensembled, and every member's rows equal
    those of the same run trained alone (which runs the same rule through TransformOptimizer)."""
    optimizers = sweep("test_signum", {"momentum": 0.9}, [1e-3, 1e-2]) + sweep("test_signum", {"momentum": 0.5}, [1e-2])
    spec = make_spec(
        CLASSIFICATION,
        {"steps": 60, "batch_size": 16, "eval_every": 20, "extras": ["grad_norm", "update_norm"]},
        optimizers,
        seeds=[0, 1],
        dtype=dtype,
    )
    members = every_run(spec)
    assert [len(group) for group in group_runs(spec, members)] == [6]
    sequential, vectorized = run_both(spec, members, total_steps=60, flush_every=25)
    assert_same_runs(sequential, vectorized, dtype)
    assert {outcome.status for outcome, _ in vectorized} == {"succeeded"}


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name, cls in registry.all_of("optimizer").items()
        if cls.elementwise  # the others: refused at once (and one of matrices only is refused on a function)
        and cls.unsupported is None
        and can_vectorize(make_spec(QUADRATIC, {"steps": 1}, [{"name": name}]), 0)
    ),
)
def test_every_vectorizable_optimizer_ensembles_as_its_runs_train_alone(name: str) -> None:
    """Registry-driven: every optimizer whose declared capabilities allow an ensemble (by its rule, by its own
    torch optimizer per member, or stacked), on the params it declares for tests, with two learning rates."""
    cls = registry.get("optimizer", name)
    params = dict(cls.test_settings.params.get("rosenbrock", {}))
    lr = params.pop("lr", cls.Params().lr)
    spec = make_spec(
        QUADRATIC,
        {"steps": 40, "extras": ["update_norm"]},
        sweep(name, params, [lr, lr / 3]),
        seeds=[0, 1],
        dtype="float64",
    )
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=40, flush_every=15)
    assert_same_runs(sequential, vectorized, "float64")


# ================================================================ optimizers without a rule: their own step

LION = "pytorch_optimizer.lion"


@pytest.fixture
def optimizer_steps():
    """Every torch optimizer step taken while the test runs: (class name, the shapes of the tensors it updated)."""
    taken: list[tuple[str, tuple]] = []

    def record(optimizer, args, kwargs) -> None:
        shapes = tuple(tuple(p.shape) for group in optimizer.param_groups for p in group["params"])
        taken.append((type(optimizer).__name__, shapes))

    handle = register_optimizer_step_post_hook(record)
    yield taken
    handle.remove()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "one-group-per-member"])
def test_a_library_optimizers_lr_sweep_ensembles_as_its_runs_train_alone(
    monkeypatch: pytest.MonkeyPatch, optimizer_steps: list, stacked: bool, dtype: str
) -> None:
    """The library's Lion has no rule: with ``stacked_params`` its members share one group over the stacked
    tensor with their rates as a tensor; without, each member is a parameter group of one shared optimizer.
    Either way every member's rows equal its run trained alone, through schedules, evaluations and a member
    cancelled half-way (whose rows and state leave the ensemble)."""
    monkeypatch.setattr(registry.get("optimizer", LION), "stacked_params", frozenset({"lr"} if stacked else ()))
    optimizers = [
        *sweep(LION, {"weight_decay": 0.01}, [3e-4, 3e-3]),
        {"name": LION, "params": {"lr": 1e-3, "weight_decay": 0.01}, "schedule": {"name": "cosine"}},
    ]
    training = {"steps": 60, "batch_size": 16, "eval_every": 20, "extras": ["grad_norm", "update_norm"]}
    spec = make_spec(CLASSIFICATION, training, optimizers, seeds=[0, 1], dtype=dtype)
    members = every_run(spec)
    assert [len(group) for group in group_runs(spec, members)] == [6]
    sequential, vectorized = run_both(spec, members, total_steps=60, flush_every=25, stop_at={2: 1})
    assert_same_runs(sequential, vectorized, dtype)
    assert [o.status for o, _ in vectorized] == ["succeeded"] * 2 + ["cancelled"] + ["succeeded"] * 3
    ensemble_steps = [shapes for name, shapes in optimizer_steps[-60:]]
    assert {name for name, _ in optimizer_steps} == {"Lion"}
    if stacked:  # one step of one tensor: 6 members' parameters, then 5
        assert ensemble_steps[0] == ((6, 75),) and ensemble_steps[-1] == ((5, 75),)
    else:  # one step of one optimizer holding each member's 4 tensors
        assert len(ensemble_steps[0]) == 6 * 4 and len(ensemble_steps[-1]) == 5 * 4


def test_members_configured_beyond_their_groups_keep_optimizers_of_their_own(optimizer_steps: list) -> None:
    """AdaBound keeps each group's initial rate in a list on the instance: its members do not share one
    optimizer (which would index that list past its end), and still train as they do alone."""
    name = "pytorch_optimizer.adabound"
    spec = make_spec(QUADRATIC, {"steps": 20}, sweep(name, {}, [1e-3, 1e-2, 3e-2]), dtype="float64")
    sequential, vectorized = run_both(spec, every_run(spec), total_steps=20, flush_every=8)
    assert_same_runs(sequential, vectorized, "float64")
    assert len(optimizer_steps) == 3 * 20 + 3 * 20  # alone, then together: one optimizer per member either way
