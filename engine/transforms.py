"""Optax-style update rules: the one style of every update the engine computes itself, for one run or an ensemble.

A rule (``GradientTransformation``) maps an update to an update over explicit state: ``init(param)`` is one
tensor's state, ``update(u, state, param, h)`` returns ``(u', new_state)`` and modifies none of its
arguments. Rules compose with ``chain``; a chain ends with ``scale_by_learning_rate``, so what it returns
is the *delta* added to the parameter.

The numbers and the choices are kept apart. A rule's hyperparameters (``hyper``: β, ε, weight decay...)
are read from ``h`` at every update: Python floats in one run (``TransformOptimizer`` keeps them in the
parameter group, so state_dict and schedules apply), ``[M, 1]`` tensors in an ensemble (one row per
member, engine.vectorized), through the same lines of code. The choices that change the code (amsgrad,
nesterov, centered) are fixed when a rule is built and make up its ``signature``: rules with equal
signatures run the same code, so their members may share one update. What torch.optim computes per step
in Python floats (1 − β, bias corrections) a rule computes in ``scalars(h, step)`` with plain
arithmetic: on Python floats in one run, on float64 numpy arrays for a block of steps in an ensemble.
``h`` also holds ``lr`` (this step's rate) and ``step`` (counting from 1).

Each line uses the torch op that torch.optim uses with a Python float, and with an ``[M, 1]`` tensor the
op that computes the same thing, so both agree with torch.optim (tests/engine/test_transforms.py and
test_vectorized.py check it step by step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor

State = dict[str, Tensor]
#: a rule's numbers, its per-step scalars, ``lr`` and ``step``: floats in one run, [M, 1] tensors in an ensemble
Hyper = Mapping[str, Any]
InitFn = Callable[[Tensor], State]
UpdateFn = Callable[[Tensor, State, Tensor, Hyper], tuple[Tensor, State]]
ScalarsFn = Callable[[Hyper, Any], dict[str, Any]]

_NOTHING: Mapping[str, float] = MappingProxyType({})


class GradientTransformation(NamedTuple):
    """``init(param)``: one tensor's state. ``update(u, state, param, h)``: the transformed update and the new
    state. ``signature``: what the code does (the rule and its choices; equal signatures, the same code).
    ``hyper``: its numbers, with the values it was built with. ``scalars(h, step)``: per-step values from
    them, by host arithmetic."""

    init: InitFn
    update: UpdateFn
    signature: tuple
    hyper: Mapping[str, float] = _NOTHING
    scalars: ScalarsFn | None = None


def _no_state(param: Tensor) -> State:
    return {}


def _zero(value: Any) -> bool:
    """A number that is zero in every run, where torch.optim skips its term (an ensemble passes a
    hyperparameter that is zero for every member as the float 0.0)."""
    return not isinstance(value, Tensor) and value == 0


def _add_scaled(a: Tensor, b: Tensor, s: Any) -> Tensor:
    """a + s·b, as torch.optim writes it with a float s, and with an [M, 1] tensor s."""
    return torch.addcmul(a, b, s) if isinstance(s, Tensor) else a.add(b, alpha=s)


def _add_product(a: Tensor, b: Tensor, c: Tensor, s: Any) -> Tensor:
    """a + s·b·c, as torch.optim writes it with a float s, and with an [M, 1] tensor s."""
    return torch.addcmul(a, b * s, c) if isinstance(s, Tensor) else a.addcmul(b, c, value=s)


def identity() -> GradientTransformation:
    return GradientTransformation(_no_state, lambda u, state, param, h: (u, {}), ("identity",))


def chain(*rules: GradientTransformation) -> GradientTransformation:
    """The rules applied in order, each to the previous one's update; their states and numbers side by side
    (so their names must differ)."""
    hyper: dict[str, float] = {}
    for rule in rules:
        if shared := hyper.keys() & rule.hyper.keys():
            raise ValueError(f"chained rules both read {sorted(shared)}")
        hyper.update(rule.hyper)

    def init(param: Tensor) -> State:
        state: State = {}
        for rule in rules:
            own = rule.init(param)
            if shared := state.keys() & own.keys():
                raise ValueError(f"chained rules both keep {sorted(shared)}")
            state.update(own)
        return state

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        new_state: State = {}
        for rule in rules:
            u, own = rule.update(u, state, param, h)
            new_state.update(own)
        return u, new_state

    def scalars(h: Hyper, step: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rule in rules:
            if rule.scalars is not None:
                out.update(rule.scalars({**h, **out}, step))
        return out

    return GradientTransformation(init, update, ("chain", *(rule.signature for rule in rules)), hyper, scalars)


def add_decayed_weights(weight_decay: float = 0.0) -> GradientTransformation:
    """u + wd·w: L2 weight decay added to the gradient (torch.optim's ``weight_decay`` of SGD, Adam, RMSprop)."""

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        return (u if _zero(h["weight_decay"]) else _add_scaled(u, param, h["weight_decay"])), {}

    return GradientTransformation(_no_state, update, ("add_decayed_weights",), {"weight_decay": weight_decay})


def trace(momentum: float, dampening: float = 0.0, nesterov: bool = False) -> GradientTransformation:
    """Momentum as torch.optim.SGD keeps it: b₁ = u, then b ← μ·b + (1 − dampening)·u; the update is b, or
    u + μ·b with Nesterov. With dampening 0 it is also RMSprop's momentum (whose zero buffer gives b₁ = u)."""

    def init(param: Tensor) -> State:
        return {"momentum_buffer": torch.zeros_like(param)}

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        if h["step"] == 1:
            buf = u.clone()
        else:
            buf = _add_scaled(state["momentum_buffer"] * h["momentum"], u, h["one_minus_dampening"])
        return (_add_scaled(u, buf, h["momentum"]) if nesterov else buf), {"momentum_buffer": buf}

    def scalars(h: Hyper, step: Any) -> dict[str, Any]:
        return {"one_minus_dampening": 1 - h["dampening"]}

    return GradientTransformation(
        init, update, ("trace", nesterov), {"momentum": momentum, "dampening": dampening}, scalars
    )


def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False, bias_correction: bool = True
) -> GradientTransformation:
    """m̂ / (√v̂ + ε), as torch.optim.Adam: AMSGrad normalises by the running maximum of v; without bias
    correction m̂ = m and v̂ = v."""

    def init(param: Tensor) -> State:
        state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        if amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        m = torch.lerp(state["exp_avg"], u, h["one_minus_b1"])  # b1·m + (1 − b1)·g
        v = _add_product(state["exp_avg_sq"] * h["b2"], u, u, h["one_minus_b2"])  # b2·v + (1 − b2)·g²
        new_state = {"exp_avg": m, "exp_avg_sq": v}
        if amsgrad:
            v = new_state["max_exp_avg_sq"] = torch.maximum(state["max_exp_avg_sq"], v)
        if not bias_correction:
            return m / (v.sqrt() + h["eps"]), new_state
        return m / (v.sqrt() / h["bias_correction2_sqrt"] + h["eps"]) / h["bias_correction1"], new_state

    def scalars(h: Hyper, step: Any) -> dict[str, Any]:
        out = {"one_minus_b1": 1 - h["b1"], "one_minus_b2": 1 - h["b2"]}
        if bias_correction:
            out |= {"bias_correction1": 1 - h["b1"] ** step, "bias_correction2_sqrt": (1 - h["b2"] ** step) ** 0.5}
        return out

    return GradientTransformation(
        init, update, ("scale_by_adam", amsgrad, bias_correction), {"b1": b1, "b2": b2, "eps": eps}, scalars
    )


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8, centered: bool = False) -> GradientTransformation:
    """u / (√s + ε) with s the running mean of u² (centered: minus the squared running mean of u), as
    torch.optim.RMSprop."""

    def init(param: Tensor) -> State:
        state = {"square_avg": torch.zeros_like(param)}
        if centered:
            state["grad_avg"] = torch.zeros_like(param)
        return state

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        square_avg = _add_product(state["square_avg"] * h["alpha"], u, u, h["one_minus_alpha"])
        new_state = {"square_avg": square_avg}
        if centered:
            grad_avg = new_state["grad_avg"] = torch.lerp(state["grad_avg"], u, h["one_minus_alpha"])
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        return u / avg.add_(h["eps"]), new_state

    def scalars(h: Hyper, step: Any) -> dict[str, Any]:
        return {"one_minus_alpha": 1 - h["alpha"]}

    return GradientTransformation(init, update, ("scale_by_rms", centered), {"alpha": alpha, "eps": eps}, scalars)


def scale_by_local_gain(beta: float = 0.05) -> GradientTransformation:
    """gain·u with a local gain per weight: the gain grows by beta while the gradient keeps its sign, shrinks
    by the factor (1 − beta) when the sign flips. Place it first in a chain: it compares raw gradients."""

    def init(param: Tensor) -> State:
        # A zero previous gradient makes the first step leave every gain at 1.
        return {"gain": torch.ones_like(param), "prev_grad": torch.zeros_like(param)}

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        agreement = u * state["prev_grad"]
        gain = state["gain"]
        gain = torch.where(
            agreement > 0, gain + h["beta"], torch.where(agreement < 0, gain * h["one_minus_beta"], gain)
        )
        # the clone keeps the state from aliasing p.grad, which a closure may zero in place
        return gain * u, {"gain": gain, "prev_grad": u.clone()}

    def scalars(h: Hyper, step: Any) -> dict[str, Any]:
        return {"one_minus_beta": 1 - h["beta"]}

    return GradientTransformation(init, update, ("scale_by_local_gain",), {"beta": beta}, scalars)


def scale_by_learning_rate() -> GradientTransformation:
    """−lr·u: the step, from this step's rate (the schedule's, read at every step)."""
    return GradientTransformation(_no_state, lambda u, state, param, h: (u * -h["lr"], {}), ("scale_by_learning_rate",))


def add_decoupled_weight_decay(weight_decay: float = 1e-2) -> GradientTransformation:
    """u − lr·wd·w: decoupled weight decay (torch.optim.AdamW's), after the step has been scaled by the rate."""

    def update(u: Tensor, state: State, param: Tensor, h: Hyper) -> tuple[Tensor, State]:
        return (u if _zero(h["weight_decay"]) else _add_scaled(u, param, h["neg_lr_weight_decay"])), {}

    def scalars(h: Hyper, step: Any) -> dict[str, Any]:
        return {"neg_lr_weight_decay": -(h["lr"] * h["weight_decay"])}

    return GradientTransformation(
        _no_state, update, ("add_decoupled_weight_decay",), {"weight_decay": weight_decay}, scalars
    )


# The compositions the optimizers use.


def sgd(
    momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
) -> GradientTransformation:
    """torch.optim.SGD; without momentum there is no buffer (a different code path)."""
    momentum_rule = trace(momentum, dampening, nesterov) if momentum != 0 else identity()
    return chain(add_decayed_weights(weight_decay), momentum_rule, scale_by_learning_rate())


def adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    bias_correction: bool = True,
) -> GradientTransformation:
    """torch.optim.Adam: L2 weight decay added to the gradient; optionally AMSGrad, or no bias correction."""
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_adam(b1, b2, eps, amsgrad, bias_correction),
        scale_by_learning_rate(),
    )


def adamw(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False
) -> GradientTransformation:
    """torch.optim.AdamW: Adam with decoupled weight decay."""
    return chain(
        scale_by_adam(b1, b2, eps, amsgrad), scale_by_learning_rate(), add_decoupled_weight_decay(weight_decay)
    )


def rmsprop(
    alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False
) -> GradientTransformation:
    """torch.optim.RMSprop: optionally centered, with momentum over the normalised gradient."""
    momentum_rule = trace(momentum) if momentum > 0 else identity()
    return chain(
        add_decayed_weights(weight_decay), scale_by_rms(alpha, eps, centered), momentum_rule, scale_by_learning_rate()
    )


def local_gain(beta: float = 0.05) -> GradientTransformation:
    """Gradient descent with a per-weight local gain (scale_by_local_gain)."""
    return chain(scale_by_local_gain(beta), scale_by_learning_rate())


class TransformOptimizer(torch.optim.Optimizer):
    """A torch optimizer applying a GradientTransformation to each parameter tensor.

    Per-tensor state lives in ``self.state[p]`` (the rule's tensors plus an integer ``step``) and the rule's
    numbers in the parameter group, so state_dict()/load_state_dict() checkpoint both; ``group["lr"]`` is
    read at every step so schedules apply. Nothing here reads a tensor back to the host, so steps on CUDA
    do not synchronise.
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict[str, Any]], transform: GradientTransformation, lr: float
    ) -> None:
        if not lr > 0:
            raise ValueError(f"invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr, **transform.hyper})
        self.transform = transform

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            numbers = {name: group[name] for name in (*self.transform.hyper, "lr")}
            per_step: dict[int, dict[str, Any]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("TransformOptimizer does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state.update(step=0, **self.transform.init(p))
                step = state["step"] + 1
                if step not in per_step:
                    scalars = self.transform.scalars(numbers, step) if self.transform.scalars else {}
                    per_step[step] = {**numbers, **scalars, "step": step}
                rule_state = {key: value for key, value in state.items() if key != "step"}
                delta, new_state = self.transform.update(p.grad, rule_state, p, per_step[step])
                p.add_(delta)
                self.state[p] = {"step": step, **new_state}
        return loss
