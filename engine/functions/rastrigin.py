import math

import torch
from pydantic import Field

from engine.functions import Function
from engine.registry import Params


class RastriginParams(Params):
    dim: int = Field(2, ge=1, le=10_000)
    A: float = Field(10.0, ge=0, le=1e6, description="amplitude of the cosine ripples")


class Rastrigin(Function[RastriginParams]):
    name = "rastrigin"
    description = "Rastrigin's function: A n + sum(x_i^2 - A cos(2 pi x_i)), many local minima, global minimum 0 at 0."
    Params = RastriginParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: RastriginParams) -> torch.Tensor:
        return params.A * x.numel() + (x**2 - params.A * torch.cos(2 * math.pi * x)).sum()

    @classmethod
    def dim(cls, params: RastriginParams) -> int:
        return params.dim

    @classmethod
    def default_x0(cls, params: RastriginParams) -> list[float]:
        return [(-2.0, 3.5)[i % 2] for i in range(params.dim)]

    @classmethod
    def minimizers(cls, params: RastriginParams) -> list[list[float]]:
        return [[0.0] * params.dim]
