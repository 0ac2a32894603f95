import torch
from pydantic import Field

from engine.functions import Function
from engine.registry import Params


class RosenbrockParams(Params):
    a: float = Field(1.0, ge=-1e3, le=1e3, description="the minimizer is (a, a^2)")
    b: float = Field(100.0, gt=0, le=1e6, description="steepness of the curved valley")


class Rosenbrock(Function[RosenbrockParams]):
    name = "rosenbrock"
    description = "f(x, y) = (a - x)^2 + b (y - x^2)^2: a curved valley, minimum 0 at (a, a^2)."
    Params = RosenbrockParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: RosenbrockParams) -> torch.Tensor:
        return (params.a - x[0]) ** 2 + params.b * (x[1] - x[0] ** 2) ** 2

    @classmethod
    def default_x0(cls, params: RosenbrockParams) -> list[float]:
        return [-1.2, 1.0]  # Rosenbrock's (1960) own starting point

    @classmethod
    def minimizers(cls, params: RosenbrockParams) -> list[list[float]]:
        return [[params.a, params.a**2]]
