"""Optax-style update rules, for optimizers that torch.optim does not provide as we need them.

A rule is a pair of pure functions over explicit per-tensor state, so each rule's maths is one readable
function; the torch.optim bookkeeping (parameter groups, state_dict, closures, lr schedules) is written once,
in TransformOptimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

State = dict[str, Tensor]


class InitFn(Protocol):
    def __call__(self, param: Tensor) -> State: ...


class UpdateFn(Protocol):
    def __call__(self, grad: Tensor, state: State, param: Tensor, lr: float, step: int) -> tuple[Tensor, State]: ...


class GradientTransformation(NamedTuple):
    """``init(param)`` is one tensor's initial state; ``update(grad, state, param, lr, step)`` returns the new
    parameter value and the new state and modifies none of its arguments. ``step`` counts from 1."""

    init: InitFn
    update: UpdateFn


def adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    bias_correction: bool = True,
) -> GradientTransformation:
    """Adam exactly as torch.optim.Adam computes it: L2 weight decay added to the gradient, and AMSGrad
    normalising by the running maximum of v. Without bias correction m̂ = m and v̂ = v."""

    def init(param: Tensor) -> State:
        state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        if amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def update(grad: Tensor, state: State, param: Tensor, lr: float, step: int) -> tuple[Tensor, State]:
        # Each line uses the same torch op as torch.optim.Adam so that the two agree to the last bit.
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        m = torch.lerp(state["exp_avg"], grad, 1 - b1)  # b1·m + (1 − b1)·g
        v = state["exp_avg_sq"].mul(b2).addcmul(grad, grad, value=1 - b2)  # b2·v + (1 − b2)·g²
        new_state = {"exp_avg": m, "exp_avg_sq": v}
        if amsgrad:
            v = new_state["max_exp_avg_sq"] = torch.maximum(state["max_exp_avg_sq"], v)
        bc1, bc2 = (1 - b1**step, 1 - b2**step) if bias_correction else (1.0, 1.0)
        denom = v.sqrt() / bc2**0.5 + eps  # √v̂ + ε
        return param.addcdiv(m, denom, value=-lr / bc1), new_state  # w − lr·m̂ / (√v̂ + ε)

    return GradientTransformation(init, update)


def local_gain(beta: float = 0.05) -> GradientTransformation:
    """Adaptive learning rate with a local gain per weight: the gain grows by beta while the gradient keeps
    its sign, shrinks by the factor (1 − beta) when the sign flips, and scales that weight's step."""

    def init(param: Tensor) -> State:
        # A zero previous gradient makes the first step leave every gain at 1.
        return {"gain": torch.ones_like(param), "prev_grad": torch.zeros_like(param)}

    def update(grad: Tensor, state: State, param: Tensor, lr: float, step: int) -> tuple[Tensor, State]:
        agreement = grad * state["prev_grad"]
        gain = state["gain"]
        gain = torch.where(agreement > 0, gain + beta, torch.where(agreement < 0, gain * (1 - beta), gain))
        # the clone keeps the state from aliasing p.grad, which a closure may zero in place
        return param - lr * gain * grad, {"gain": gain, "prev_grad": grad.clone()}

    return GradientTransformation(init, update)


class TransformOptimizer(torch.optim.Optimizer):
    """A torch optimizer applying a GradientTransformation to each parameter tensor.

    Per-tensor state lives in ``self.state[p]`` (the rule's tensors plus an integer ``step``), so
    state_dict()/load_state_dict() checkpoint it; ``group["lr"]`` is read at every step so schedules apply.
    Nothing here reads a tensor back to the host, so steps on CUDA do not synchronise.
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict[str, Any]], transform: GradientTransformation, lr: float
    ) -> None:
        if not lr > 0:
            raise ValueError(f"invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr})
        self.transform = transform

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("TransformOptimizer does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state.update(step=0, **self.transform.init(p))
                step = state["step"] + 1
                rule_state = {key: value for key, value in state.items() if key != "step"}
                new_param, new_state = self.transform.update(p.grad, rule_state, p, group["lr"], step)
                p.copy_(new_param)
                self.state[p] = {"step": step, **new_state}
        return loss
