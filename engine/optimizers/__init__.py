"""Optimizers. Each module here defines one; see engine.registry for how they are found.

An optimizer says what it is by class attributes, inherited by subclasses and read by the engine (no
table of names anywhere): how a run builds it (``torch_optimizer``, or ``rule``), whether its members
may be stacked into an ensemble (``elementwise`` and a ``rule``), what the training loop owes it
(``full_batch_only``, ``needs_closure``, ``needs_loss``, ``needs_hvp``, ``train_eval_modes``,
``param_shapes``), where it comes from (``source``, ``version``, ``family``, ``reference``), whether it can run
here at all (``unsupported``), and how the tests exercise it (``test_settings``). docs/catalogue.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, cast

import torch
from pydantic import Field

from engine.registry import Component, Params
from engine.transforms import GradientTransformation, TransformOptimizer

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class OptimizerParams(Params):
    lr: float = Field(1e-3, gt=0.0, description="learning rate")


@dataclass(frozen=True)
class TestSettings:
    """How the parametrised tests in tests/engine exercise an optimizer (benchopt's ``test_config``).

    ``params``: its params on each test problem (``parabola``, ``rosenbrock``; ``matrix`` for an optimizer of
    2-D parameters only), where it must at least halve the loss (a problem it has none for: its defaults);
    ``dataset``: the small MLP on iris that tests/e2e/test_catalogue.py trains through the API, where it must
    lower the loss.
    ``lands_on_minimum``: with its parabola params it also lands within 1e-4 of the parabola's minimum (a sign
    method at a constant rate oscillates within lr of it, so it says False). ``steps``: optimizer steps per
    problem where the problem's own do not suit (L-BFGS, whose step is many gradient steps; the library's
    entries, 200 to keep the table fast); None keeps the problem's own. ``exceptions``:
    problem -> why it is not expected to halve the loss there (it must still run).
    """

    __test__ = False  # not a pytest class
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    lands_on_minimum: bool = True
    steps: int | None = None
    exceptions: Mapping[str, str] = field(default_factory=dict)


OP = TypeVar("OP", bound=OptimizerParams)


class Optimizer(Component[OP]):
    kind = "optimizer"
    if not TYPE_CHECKING:
        Params = OptimizerParams
    #: the torch.optim class a run builds, with every param but ``torch_exclude`` as a keyword
    torch_optimizer: ClassVar[type[torch.optim.Optimizer] | None] = None
    torch_exclude: ClassVar[frozenset[str]] = frozenset()
    #: the update is per coordinate, so members stacked side by side in one tensor update as they would
    #: alone: such an optimizer's runs train as ensembles (engine.vectorized), by its ``rule``, else by its own
    #: torch optimizer stepping each member's parameter group
    elementwise: ClassVar[bool] = False
    #: params its torch optimizer's step also takes as tensors broadcast over stacked members (Lion's ``lr``): an
    #: ensemble whose members differ only in these steps one group over all members, each such param [M, 1]
    stacked_params: ClassVar[frozenset[str]] = frozenset()
    #: closure-based optimizers (L-BFGS) re-evaluate the loss, which is only sound on the full batch
    full_batch_only: ClassVar[bool] = False
    #: step() must be given a closure that re-evaluates the loss (L-BFGS, line searches, SAM); without it the
    #: loop computes the loss and its gradients itself and calls step() with no closure
    needs_closure: ClassVar[bool] = False
    #: step() uses the loss value: the loop passes a closure that returns the loss it already computed
    needs_loss: ClassVar[bool] = False
    #: the backward pass must keep its graph (create_graph=True), for Hessian-vector products
    needs_hvp: ClassVar[bool] = False
    #: the optimizer has train and eval modes (schedule-free methods): the loop calls optimizer.train()
    #: before stepping and optimizer.eval() before evaluating or saving
    train_eval_modes: ClassVar[bool] = False
    #: "matrices": it only takes 2-D parameters (torch's Muon), so a problem with others is refused at submit
    param_shapes: ClassVar[Literal["any", "matrices"]] = "any"
    #: why it cannot run here (listed in the catalogue, refused at submit); None: it runs
    unsupported: ClassVar[str | None] = None
    #: where the update rule comes from, for the catalogue
    source: ClassVar[str] = "torch.optim"
    version: ClassVar[str] = torch.__version__.split("+")[0]
    family: ClassVar[str] = "adaptive"
    reference: ClassVar[str] = ""
    #: the param_groups key holding the rate the step used (recorded as the step's lr); None for a rule whose step
    #: has no rate (A2Grad's coefficients come from its Lipschitz constant and each tensor's gradient variation):
    #: its steps record none (null)
    rate_key: ClassVar[str | None] = "lr"
    #: the constructor argument that takes the run's total number of updates (Ranger21's ``num_iterations``, which
    #: times its warm-up and warm-down): never a param; the engine builds it with the run's own steps
    total_steps_arg: ClassVar[str | None] = None
    #: the parameter a refusal for memory names when the optimizer's state is the largest part; None names it
    size_param: ClassVar[str | None] = None
    test_settings: ClassVar[TestSettings] = TestSettings()

    @classmethod
    def state_multiple(cls, params: OP) -> float:
        """The optimizer's state as a multiple of the parameters (momentum 1, Adam's two moments 2),
        for sizing a run before it trains. The default assumes two, as Adam; a plug-in may say."""
        return 2.0

    @classmethod
    def rule(cls, params: OP) -> GradientTransformation | None:
        """The update as an engine.transforms rule built with these params (their choices fix its code, their
        numbers are its ``hyper``), or None where only torch.optim computes it. One rule serves a run (when
        no ``torch_optimizer`` is named) and, for an elementwise optimizer, an ensemble."""
        return None

    @classmethod
    def run_arguments(cls, total_steps: int) -> dict[str, Any]:
        """Constructor arguments that a run of ``total_steps`` updates decides, for ``build`` and ``build_groups``:
        its steps, where the optimizer takes them (``total_steps_arg``); none for any other."""
        return {} if cls.total_steps_arg is None else {cls.total_steps_arg: total_steps}

    @classmethod
    def build(cls, parameters: list[torch.Tensor], params: OP, **arguments: Any) -> torch.optim.Optimizer:
        """The torch optimizer over ``parameters``; ``arguments``: the run's own (``run_arguments``)."""
        if cls.torch_optimizer is not None:
            return cls.torch_optimizer(parameters, **params.model_dump(exclude=set(cls.torch_exclude)), **arguments)
        rule = cls.rule(params)
        if rule is None:
            raise NotImplementedError(f"optimizer {cls.name!r} names neither a torch_optimizer nor a rule")
        return TransformOptimizer(parameters, rule, lr=params.lr)

    @classmethod
    def backward(cls, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` as the update needs: keeping the graph for Hessian-vector products."""
        loss.backward(create_graph=cls.needs_hvp)

    @classmethod
    def update(cls, optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One step of ``optimizer`` as this optimizer needs it; ``closure`` zeroes the gradients, computes the
        loss and backpropagates it with ``backward``. Returns the loss before the update, detached. A step that
        needs no closure gets none (the loop has the gradients already); one that needs the loss value gets a
        closure returning it. Where ``needs_hvp``, the caller frees the kept graph after reading the gradients
        (``optimizer.zero_grad(set_to_none=True)``)."""
        if cls.needs_closure:
            # torch's stub has the closure return a float; every torch optimizer returns the closure's own tensor
            return cast(torch.Tensor, optimizer.step(closure)).detach()  # type: ignore[arg-type]
        with torch.enable_grad():
            loss = closure().detach()
        if cls.needs_loss:
            optimizer.step(lambda: loss)  # type: ignore[arg-type,return-value]
        else:
            optimizer.step()
        return loss

    @classmethod
    def build_groups(cls, groups: list[tuple[list[torch.Tensor], OP]], **arguments: Any) -> list[torch.optim.Optimizer]:
        """Parameter groups with their own params (an entry's ``groups``, engine.groups): one torch optimizer
        with a param group each, whose options are the group's params (a rule's numbers, for a rule-built
        optimizer; rules whose choices differ run the code of their own, so they get an optimizer each)."""
        built: dict[Any, torch.optim.Optimizer] = {}
        for tensors, params in groups:
            rule = cls.rule(params) if cls.torch_optimizer is None else None
            if rule is not None:
                code, options = rule.signature, {"lr": params.lr, **rule.hyper}
            else:
                code, options = None, params.model_dump(exclude=set(cls.torch_exclude))
            if code in built:
                built[code].add_param_group({"params": tensors, **options})
            else:
                built[code] = cls.build(tensors, params, **arguments)
        return list(built.values())
