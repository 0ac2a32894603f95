"""The pytorch-optimizer adapter against the library itself, and the training loop's capabilities.

A run trained by the engine (``engine.training.train``) must equal, step for step, the library's own class
driven by a plain torch loop written from its documentation: ``loss.backward(create_graph=True)`` for the
Hessian-based ones, ``step(closure)`` returning the loss for those that read it, ``train()``/``eval()`` for
schedule-free ones, ``use_muon`` groups for Muon's family, and the projection options on the matrices' group for
GaLore and Fira. A tiny MLP on the full batch in float64 has both
matrices and biases, so Muon's two groups are both exercised; 12 steps each.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pytest
import pytorch_optimizer
import torch

from engine import registry
from engine.optimizers.library import ENTRIES, PREFIX, PROJECTION_FIELDS
from engine.problem import build_problem
from engine.recorder import StepBatch
from engine.spec import ComparisonSpec
from engine.training import ModuleStepper, build_components, train

CPU = torch.device("cpu")
STEPS = 12
PROBLEM = {
    "model": {"name": "mlp", "params": {"hidden": [6]}},
    "dataset": {"name": "synthetic_regression", "params": {"n_samples": 24, "n_features": 3, "n_targets": 2}},
    "loss": "mse_mean",
}
#: (library name, params): every family, the four capabilities the loop honours, Muon's groups
SAMPLE: list[tuple[str, dict[str, Any]]] = [
    ("adabelief", {"lr": 0.01}),
    ("adan", {"lr": 0.01}),
    ("yogi", {}),
    ("ademamix", {"lr": 0.01}),
    ("adopt", {"lr": 0.01}),
    ("qhadam", {"lr": 0.01}),
    ("lion", {"lr": 1e-3}),  # sign-based
    ("signsgd", {"lr": 1e-3}),
    ("tiger", {"lr": 1e-3}),
    ("sgdw", {"lr": 0.05, "momentum": 0.9}),  # momentum/SGD
    ("qhm", {"lr": 0.05, "momentum": 0.9}),
    ("lamb", {"lr": 0.01}),  # layer-wise
    ("lars", {"lr": 0.05}),
    ("novograd", {"lr": 0.01}),
    ("prodigy", {}),  # parameter-free
    ("dadaptadam", {"lr": 0.1}),
    ("schedulefreeadamw", {"lr": 0.01}),  # schedule-free: train/eval modes
    ("schedulefreesgd", {"lr": 0.1}),
    ("adahessian", {"lr": 0.05, "hessian_distribution": "gaussian"}),  # Hessian-vector products
    ("sophiah", {"lr": 0.01, "update_period": 2}),
    ("shampoo", {"lr": 0.01}),  # second-order, matrices preconditioned
    ("soap", {"lr": 0.01, "precondition_frequency": 2}),
    ("muon", {"lr": 0.02, "adamw_lr": 0.01}),  # matrix/orthogonalising, with its AdamW group for the biases
    ("adamuon", {"lr": 0.02, "adamw_lr": 0.01}),
    ("came", {"lr": 0.01}),  # memory-efficient, factored
    ("galore", {"lr": 0.01, "rank": 2, "update_proj_gap": 5}),  # low-rank projection of the matrices' gradients
    ("fira", {"lr": 0.01, "rank": 2, "update_proj_gap": 5}),
    ("adafactor", {"lr": 0.01}),
    ("ranger21", {"lr": 0.01}),  # warms up and down over the run's own steps (its num_iterations)
    ("alig", {"max_lr": 0.1}),  # needs the loss value (its Polyak step size)
    ("emonavi", {"lr": 0.01}),
]


def _spec(name: str, params: dict[str, Any], **training: Any) -> ComparisonSpec:
    return ComparisonSpec.model_validate(
        {
            "name": "library",
            "problem": PROBLEM,
            "training": {"steps": STEPS, "batch_size": "full", **training},
            "optimizers": [{"name": name, "params": params}],
            "device": "cpu",
            "dtype": "float64",
        }
    )


def _engine_run(spec: ComparisonSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float, list[dict]]:
    """(losses, rates, final loss, evaluations) of the engine's run."""
    batches: list[StepBatch] = []
    outcome = train(spec, 0, seed, lambda batch: batches.append(batch) or True, total_steps=STEPS)
    assert outcome.status == "succeeded" and outcome.final_loss is not None
    return (
        np.concatenate([b.loss for b in batches]),
        np.concatenate([b.lr for b in batches]),
        outcome.final_loss,
        [e for b in batches for e in b.evals],
    )


def _plain_run(
    name: str, params: dict[str, Any], seed: int = 0, eval_every: int = STEPS
) -> tuple[list[float], list[float], float, float, list[float]]:
    """The library's class in a plain loop, as its documentation says to drive it: (losses, rates, final loss
    in eval mode, final loss in train mode, the eval-mode loss every ``eval_every`` steps)."""
    spec = _spec(PREFIX + name, params)
    cls = ENTRIES[name]
    problem = build_problem(spec.problem, CPU, torch.float64)
    module = problem.make_module(seed)
    kwargs = {**cls.Params.fixed_defaults, **spec.optimizers[0].params}  # the validated params, defaults filled
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if name == "ranger21":  # "num_iterations: Total training steps for the built in learning rate schedule"
        kwargs["num_iterations"] = STEPS
    library_class = pytorch_optimizer.load_optimizer(name)
    tensors = list(module.parameters())
    if cls.Params.matrix_group_keys:  # GaLore's documented use: projection options on the matrices' group
        options = {key: kwargs.pop(key) for key in PROJECTION_FIELDS}
        groups = [
            {"params": [p for p in tensors if p.ndim == 2], **options},
            {"params": [p for p in tensors if p.ndim != 2]},
        ]
        optimizer = library_class(groups, **kwargs)
    elif issubclass(library_class, pytorch_optimizer.optimizer.muon.base.MuonBase):
        groups = [
            {"params": [p for p in tensors if p.ndim >= 2], "use_muon": True},
            {"params": [p for p in tensors if p.ndim < 2], "use_muon": False},
        ]
        optimizer = library_class(groups, **kwargs)
    else:
        optimizer = library_class(tensors, **kwargs)
    modes = hasattr(optimizer, "eval")
    if modes:
        optimizer.train()
    losses, rates, evals = [], [], []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        loss = problem.batch_loss(module, None)
        loss.backward(create_graph=cls.needs_hvp)
        if cls.needs_loss:
            value = loss.detach()
            optimizer.step(lambda: value)
        else:
            optimizer.step()
        losses.append(loss.item())
        group = optimizer.param_groups[0]
        rates.append(float(group["step_size"] if name == "alig" else group["lr"]))
        if (step + 1) % eval_every == 0 and step + 1 < STEPS:
            if modes:
                optimizer.eval()
            with torch.no_grad():
                evals.append(float(problem.full_loss(module)))
            if modes:
                optimizer.train()
    with torch.no_grad():
        train_mode = float(problem.full_loss(module))
        if modes:
            optimizer.eval()
        final = float(problem.full_loss(module))
    return losses, rates, final, train_mode, evals


@pytest.mark.parametrize(("name", "params"), SAMPLE, ids=[name for name, _ in SAMPLE])
def test_the_engine_steps_the_library_as_its_plain_loop_does(name: str, params: dict[str, Any]) -> None:
    torch.manual_seed(1234)  # the engine seeds the global generator itself, whatever came before
    losses, rates, final, _ = _engine_run(_spec(PREFIX + name, params))
    torch.manual_seed(0)  # as the engine does for seed 0: the Hutchinson probes draw from the global generator
    expected, expected_rates, expected_final, _, _ = _plain_run(name, params)
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(rates, expected_rates, rtol=1e-12, atol=0)
    assert final == pytest.approx(expected_final, rel=1e-12, abs=0)
    assert losses[-1] < losses[0], f"{name} did not descend"


def test_the_sample_covers_the_families_and_every_capability() -> None:
    entries = [ENTRIES[name] for name, _ in SAMPLE]
    assert len(SAMPLE) >= 20
    assert len({cls.family for cls in entries}) >= 9
    for capability in ("needs_hvp", "needs_loss", "train_eval_modes"):
        assert any(getattr(cls, capability) for cls in entries), capability
    assert {"muon", "schedulefreeadamw", "adahessian"} <= {name for name, _ in SAMPLE}


def test_schedule_free_records_the_averaged_weights_loss_at_every_evaluation_and_at_the_end() -> None:
    """Its steps run at y (train mode), its evaluations and final loss at the averaged x (eval mode), which
    differs: the recorded final loss is the eval one, and training resumes at y after each evaluation."""
    params = {"lr": 0.01}
    losses, _, final, evals = _engine_run(_spec(PREFIX + "schedulefreeadamw", params, eval_every=4))
    expected, _, expected_final, train_mode_final, expected_evals = _plain_run(
        "schedulefreeadamw", params, eval_every=4
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=0)  # the evaluations left the steps untouched
    assert final == pytest.approx(expected_final, rel=1e-12, abs=0)
    assert abs(final - train_mode_final) > 1e-6 * abs(final)  # the averaged weights are not the stepped ones
    assert [e["step"] for e in evals] == [0, 4, 8, STEPS]
    np.testing.assert_allclose([e["train_loss"] for e in evals[1:-1]], expected_evals, rtol=1e-12, atol=0)
    assert evals[-1]["train_loss"] == pytest.approx(final, rel=1e-12, abs=0)


def test_hessian_vector_products_keep_the_graph_for_the_step_and_free_it_after() -> None:
    spec = _spec(PREFIX + "adahessian", {"lr": 0.05})
    problem = build_problem(spec.problem, CPU, torch.float64)
    module = problem.make_module(0)
    built = build_components(spec.problem, spec.optimizers[0], module, total_steps=STEPS)
    optimizers = [optimizer for _, optimizer in built]
    lrs = [[group.get("lr") for group in optimizer.param_groups] for optimizer in optimizers]
    stepper = ModuleStepper(
        problem, module, optimizers, lrs, spec.optimizers[0].schedule, STEPS, ["grad_norm"], [c for c, _ in built]
    )
    before = [p.detach().clone() for p in module.parameters()]
    loss, lr, extras = stepper.step(0, None)
    assert extras is not None and not extras["grad_norm"].requires_grad  # read before the graph is freed
    assert math.isfinite(float(extras["grad_norm"]))
    assert all(p.grad is None for p in module.parameters())  # freed: no parameter <-> gradient cycle left
    assert any(not torch.equal(p, b) for p, b in zip(module.parameters(), before))
    assert not loss.requires_grad and lr == 0.05


def test_an_optimizer_that_reads_the_loss_fails_without_it_and_runs_in_the_loop() -> None:
    """AliG's step refuses to run without the loss; the loop hands it the loss it computed (the run above
    equals the library's documented ``step(lambda: loss)``), and records its Polyak step size as the rate."""
    cls = registry.get("optimizer", PREFIX + "alig")
    x = torch.ones(3, requires_grad=True)
    optimizer = cls.build([x], cls.Params())
    (x**2).sum().backward()
    with pytest.raises(pytorch_optimizer.base.exception.NoClosureError):
        optimizer.step()
    assert cls.needs_loss and cls.rate_key == "step_size"


def test_ranger21_warms_down_over_the_runs_own_steps_which_no_param_sets() -> None:
    """Ranger21 times its warm-up and warm-down by ``num_iterations``: the engine builds it with the run's total
    steps (its warm-down starts after 72% of them), so a 50,000-step run is not scheduled as a 1,000-step one."""
    cls = ENTRIES["ranger21"]
    assert cls.total_steps_arg == "num_iterations" and "num_iterations" in cls.fixed
    assert "num_iterations" not in cls.Params.model_fields
    spec = _spec(PREFIX + "ranger21", {"lr": 0.01})
    module = build_problem(spec.problem, CPU, torch.float64).make_module(0)
    [(_, optimizer)] = build_components(spec.problem, spec.optimizers[0], module, total_steps=50_000)
    assert optimizer.start_warm_down == 36_000  # type: ignore[attr-defined]


def test_every_argument_the_library_leaves_required_is_the_runs_steps_or_declared() -> None:
    """A supported entry's constructor arguments without a default are filled: by the run's total steps
    (``total_steps_arg``) or by a default declared in the adapter, never left to fail at the first run."""
    for name, cls in ENTRIES.items():
        if cls.unsupported is not None:
            continue
        arguments = list(inspect.signature(cls.library_class.__init__).parameters.values())[1:]
        required = {
            argument.name
            for argument in arguments
            if argument.default is inspect.Parameter.empty
            and argument.kind not in (argument.VAR_POSITIONAL, argument.VAR_KEYWORD)
            and argument.name not in ("params", "optimizer")
        }
        assert required <= {cls.total_steps_arg, *cls.Params.fixed_defaults}, name


def test_a2grad_has_no_rate_so_its_steps_record_none() -> None:
    """A2Grad's step size comes from its Lipschitz constant and each tensor's gradient variation; its param groups
    hold no rate: the run records none (null in every row), where it recorded NaN."""
    batches: list[StepBatch] = []
    spec = _spec(PREFIX + "a2grad", {"lips": 100.0})
    outcome = train(spec, 0, 0, lambda batch: batches.append(batch) or True, total_steps=STEPS)
    assert outcome.status == "succeeded" and ENTRIES["a2grad"].rate_key is None
    rows = [row for batch in batches for row in batch.rows()]
    assert len(rows) == STEPS and all(batch.lr is None for batch in batches)
    assert [row["lr"] for row in rows] == [None] * STEPS
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_splus_evaluates_before_its_first_step_at_its_initial_weights() -> None:
    """SPlus's eval() fails before its first step (no average yet): the evaluation at step 0 is taken at the initial
    weights, the later ones and the final loss at its average of iterates, as its plain loop has them."""
    params = {"lr": 0.1}
    losses, _, final, evals = _engine_run(_spec(PREFIX + "splus", params, eval_every=4))
    expected, _, expected_final, _, expected_evals = _plain_run("splus", params, eval_every=4)
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=0)
    assert [e["step"] for e in evals] == [0, 4, 8, STEPS]
    assert evals[0]["train_loss"] == pytest.approx(losses[0], rel=1e-12)  # full batch: the first step's own loss
    np.testing.assert_allclose([e["train_loss"] for e in evals[1:-1]], expected_evals, rtol=1e-12, atol=0)
    assert final == pytest.approx(expected_final, rel=1e-12, abs=0)
