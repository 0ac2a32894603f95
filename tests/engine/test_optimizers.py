"""Every registered optimizer, on two small problems, and the validation of their parameters."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from engine import registry
from engine.transforms import TransformOptimizer

Tensor = torch.Tensor


def parabola(x: Tensor) -> Tensor:
    return (x[0] - 1) ** 2 + 10 * (x[1] + 2) ** 2


def rosenbrock(x: Tensor) -> Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


TARGET = torch.arange(12, dtype=torch.float64).reshape(3, 4) / 10 - 0.5


def matrix(x: Tensor) -> Tensor:
    return ((x - TARGET) ** 2).sum()


# problem name: (function, start, minimiser, steps)
PROBLEMS: dict[str, tuple[Callable[[Tensor], Tensor], Any, Any, int]] = {
    "parabola": (parabola, [-3.0, 2.0], [1.0, -2.0], 500),
    "rosenbrock": (rosenbrock, [-1.2, 1.0], [1.0, 1.0], 1000),
    "matrix": (matrix, torch.zeros(3, 4).tolist(), TARGET.tolist(), 200),
}

#: the problems test settings may name: these, and the API's dataset problem (tests/e2e/test_catalogue.py)
SETTINGS_FOR = set(PROBLEMS) | {"dataset"}
OPTIMIZERS = registry.all_of("optimizer")
SUPPORTED = {name: cls for name, cls in OPTIMIZERS.items() if cls.unsupported is None}
#: the optimizers this repository writes itself (engine/optimizers/*.py, not the library's adapter), as opposed
#: to plug-ins and the library's entries
BUILT_IN = {
    name
    for name, cls in OPTIMIZERS.items()
    if cls.__module__.startswith("engine.optimizers.") and cls.source in ("torch.optim", "optibench")
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tensors of a few elements: more threads only contend (SpectralSphere's solves slow 40× on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # optimizers that draw from the global generator (Kron's preconditioner updates, Hutchinson probes) see the
    # same numbers whatever ran before on this process
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def problems_of(cls: type) -> list[str]:
    """The test problems an optimizer trains on: the matrix one for an optimizer of matrices only."""
    return ["matrix"] if cls.param_shapes == "matrices" else ["parabola", "rosenbrock"]


@pytest.mark.parametrize(
    ("name", "problem"), [(name, problem) for name, cls in SUPPORTED.items() for problem in problems_of(cls)]
)
def test_optimizer_makes_progress(name: str, problem: str) -> None:
    """On the params its class declares in ``test_settings`` (tuned per problem; none: its defaults), stepped
    as its capabilities ask (``Optimizer.update``: a closure, the loss value, a kept graph, train/eval modes),
    it halves the loss; with parabola params and ``lands_on_minimum`` it also lands on the minimum. A problem
    in its declared ``exceptions`` only has to run."""
    f, start, minimiser, steps = PROBLEMS[problem]
    cls = OPTIMIZERS[name]
    settings = cls.test_settings
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    steps = settings.steps or steps
    optimizer = cls.build([x], cls.Params(**settings.params.get(problem, {})), **cls.run_arguments(steps))
    if cls.train_eval_modes:
        optimizer.train()  # type: ignore[attr-defined]

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = f(x)
        cls.backward(loss)
        return loss

    initial = f(x).item()
    # the training loop records what update() returns: the loss at the point the step started from
    assert cls.update(optimizer, closure).item() == initial
    for _ in range(steps - 1):
        cls.update(optimizer, closure)
    if cls.train_eval_modes:
        optimizer.eval()  # type: ignore[attr-defined]

    with torch.no_grad():
        final = f(x).item()
    if problem in settings.exceptions:  # declared: it ran, and need not descend here
        return
    assert torch.isfinite(x).all()
    assert final < 0.5 * initial, f"{name} on {problem}: {initial} -> {final}"
    if problem == "parabola" and "parabola" in settings.params and settings.lands_on_minimum:
        assert torch.dist(x.detach(), torch.tensor(minimiser, dtype=torch.float64)) < 1e-4


def test_the_catalogue_has_the_optimizers_we_ship() -> None:
    assert {
        "sgd",
        "adam",
        "adamw",
        "nadam",
        "radam",
        "rmsprop",
        "adagrad",
        "adadelta",
        "rprop",
        "lbfgs",
        "local_gain",
    } <= BUILT_IN
    for name in BUILT_IN - {"sparse_adam"}:  # each built-in is tuned on the test problems, not left to its defaults
        assert OPTIMIZERS[name].test_settings.params and set(OPTIMIZERS[name].test_settings.params) <= SETTINGS_FOR
    for cls in OPTIMIZERS.values():
        assert cls.description
        assert set(cls.test_settings.params) | set(cls.test_settings.exceptions) <= SETTINGS_FOR


def test_lbfgs_is_full_batch_only_and_needs_a_closure() -> None:
    assert OPTIMIZERS["lbfgs"].full_batch_only and OPTIMIZERS["lbfgs"].needs_closure


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_declared_capabilities_are_consistent(name: str) -> None:
    cls = OPTIMIZERS[name]
    if cls.full_batch_only:  # it re-evaluates the loss, which is why it wants the full batch
        assert cls.needs_closure and not cls.elementwise
    if cls.torch_optimizer is None:  # built from its rule, so it must have one
        assert cls.rule(cls.Params()) is not None
    for capability in (
        "elementwise",
        "full_batch_only",
        "needs_closure",
        "needs_loss",
        "needs_hvp",
        "train_eval_modes",
    ):
        assert isinstance(getattr(cls, capability), bool)
    assert cls.param_shapes in ("any", "matrices")
    assert cls.unsupported is None or cls.unsupported.strip()


def test_a_subclass_inherits_its_parents_capabilities_and_rule() -> None:
    sgd = OPTIMIZERS["sgd"]
    subclass = type("NoNameSGD", (sgd,), {})  # no name: not registered
    assert subclass.elementwise and subclass.torch_optimizer is torch.optim.SGD
    assert subclass.rule(sgd.Params(momentum=0.9)).signature == sgd.rule(sgd.Params(momentum=0.9)).signature


@pytest.mark.parametrize("name", SUPPORTED)
def test_defaults_build_a_torch_optimizer(name: str) -> None:
    cls = OPTIMIZERS[name]
    shape = (3, 4) if cls.param_shapes == "matrices" else (3,)
    optimizer = cls.build([torch.zeros(shape, requires_grad=True)], cls.Params(), **cls.run_arguments(100))
    assert isinstance(optimizer, torch.optim.Optimizer)
    if cls.source == "torch.optim":  # the library's constructors may scale or derive their rate
        assert optimizer.param_groups[0]["lr"] == cls.Params().lr


def test_adam_without_bias_correction_is_our_rule() -> None:
    adam = OPTIMIZERS["adam"]
    params = [torch.zeros(3, requires_grad=True)]
    assert isinstance(adam.build(params, adam.Params()), torch.optim.Adam)
    assert isinstance(adam.build(params, adam.Params(bias_correction=False)), TransformOptimizer)


@pytest.mark.parametrize(
    ("name", "values", "field"),
    [
        ("adam", {"betas": (0.9, 1.0)}, "betas"),
        ("adam", {"betas": (-0.1, 0.999)}, "betas"),
        ("adam", {"eps": 0.0}, "eps"),
        ("adam", {"lr": 0.0}, "lr"),
        ("adamw", {"betas": (1.0, 0.999)}, "betas"),
        ("adamw", {"weight_decay": -1e-2}, "weight_decay"),
        ("nadam", {"eps": -1e-8}, "eps"),
        ("nadam", {"momentum_decay": -1.0}, "momentum_decay"),
        ("radam", {"betas": (0.9, 1.5)}, "betas"),
        ("rmsprop", {"alpha": 1.0}, "alpha"),
        ("rmsprop", {"momentum": -0.5}, "momentum"),
        ("rmsprop", {"eps": 0.0}, "eps"),
        ("adagrad", {"lr_decay": -1.0}, "lr_decay"),
        ("adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        ("adagrad", {"eps": 0.0}, "eps"),
        ("adadelta", {"rho": 1.0}, "rho"),
        ("adadelta", {"eps": 0.0}, "eps"),
        ("rprop", {"etas": (1.0, 1.2)}, "etas"),
        ("rprop", {"etas": (0.0, 1.2)}, "etas"),
        ("rprop", {"etas": (0.5, 1.0)}, "etas"),
        ("rprop", {"step_sizes": (50.0, 1e-6)}, "step_sizes"),
        ("rprop", {"step_sizes": (-1.0, 50.0)}, "step_sizes"),
        ("lbfgs", {"max_iter": 0}, "max_iter"),
        ("lbfgs", {"history_size": 0}, "history_size"),
        ("lbfgs", {"line_search_fn": "backtracking"}, "line_search_fn"),
        ("local_gain", {"beta": 0.0}, "beta"),
        ("local_gain", {"beta": 1.0}, "beta"),
        ("local_gain", {"beta": float("nan")}, "beta"),
        ("sgd", {"nonsense": 1.0}, "nonsense"),
    ],
)
def test_out_of_range_values_are_validation_errors(name: str, values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OPTIMIZERS[name].Params(**values)
    assert field in {error["loc"][0] for error in caught.value.errors()}


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("adam", {"betas": (0.0, 0.0), "eps": 1e-300}),
        ("rmsprop", {"alpha": 0.0, "centered": True, "momentum": 0.5}),
        ("adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.1}),
        ("adadelta", {"rho": 0.0}),
        ("rprop", {"etas": (0.01, 1.01), "step_sizes": (0.0, 1e-3)}),
        ("lbfgs", {"max_iter": 1, "history_size": 1, "tolerance_grad": 0.0, "tolerance_change": 0.0}),
        ("local_gain", {"beta": 0.999}),
    ],
)
def test_edge_values_that_validate_are_accepted_by_torch(name: str, values: dict[str, Any]) -> None:
    cls = OPTIMIZERS[name]
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    optimizer = cls.build([x], cls.Params(**values))

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    assert torch.isfinite(x).all()
