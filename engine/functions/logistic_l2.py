"""L2-regularised logistic regression as a function of its weights: convex, with one minimizer that Newton's
method finds to machine precision, the reference a run's distance to the optimum is measured from."""

import functools

import torch
from pydantic import Field

from engine.functions import Function
from engine.registry import Params

NEWTON_STEPS = 50


class LogisticL2Params(Params):
    n_samples: int = Field(200, ge=1, le=100_000)
    n_features: int = Field(10, ge=1, le=1000, description="the dimension of x, the weights (no intercept)")
    l2: float = Field(0.1, gt=0, le=1e6, description="lambda in the objective; > 0 makes the optimum unique")
    label_noise: float = Field(0.1, ge=0, le=0.5, description="share of labels flipped, so the classes overlap")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the data itself, not of the runs")


@functools.cache
def _data(params: LogisticL2Params) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels in {-1, +1}) in float64 on the CPU: Gaussian features, labels from a random plane."""
    g = torch.Generator().manual_seed(params.seed)
    a = torch.randn(params.n_samples, params.n_features, generator=g, dtype=torch.float64)
    truth = torch.randn(params.n_features, generator=g, dtype=torch.float64)
    b = torch.sign(a @ truth + 1e-12)
    flipped = torch.rand(params.n_samples, generator=g, dtype=torch.float64) < params.label_noise
    return a, torch.where(flipped, -b, b)


@functools.cache
def _optimum(params: LogisticL2Params) -> torch.Tensor:
    a, b = _data(params)
    x = torch.zeros(params.n_features, dtype=torch.float64)
    for _ in range(NEWTON_STEPS):  # strongly convex and smooth: Newton converges quadratically from 0
        margins = b * (a @ x)
        sigma = torch.sigmoid(-margins)
        grad = -(a.T @ (b * sigma)) / params.n_samples + params.l2 * x
        hessian = (a.T * (sigma * (1 - sigma))) @ a / params.n_samples + params.l2 * torch.eye(params.n_features)
        x = x - torch.linalg.solve(hessian, grad)
        if grad.abs().max() < 1e-14:
            break
    return x


class LogisticL2(Function[LogisticL2Params]):
    name = "logistic_l2"
    description = (
        "f(x) = mean_i log(1 + exp(-b_i a_i.x)) + l2/2 |x|^2 on seeded Gaussian features a_i and +-1 labels b_i "
        "(a random plane's, some flipped): convex, its one minimizer computed by Newton's method as the reference."
    )
    Params = LogisticL2Params
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: LogisticL2Params) -> torch.Tensor:
        a, b = (t.to(device=x.device, dtype=x.dtype) for t in _data(params))
        return torch.nn.functional.softplus(-b * (a @ x)).mean() + params.l2 / 2 * (x * x).sum()

    @classmethod
    def dim(cls, params: LogisticL2Params) -> int:
        return params.n_features

    @classmethod
    def default_x0(cls, params: LogisticL2Params) -> list[float]:
        return [0.0] * params.n_features

    @classmethod
    def minimizers(cls, params: LogisticL2Params) -> list[list[float]]:
        return [_optimum(params).tolist()]
