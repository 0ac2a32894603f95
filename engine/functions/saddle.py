import torch

from engine.functions import Function
from engine.registry import NoParams


class Saddle(Function[NoParams]):
    name = "saddle"
    description = "f(x, y) = x^2 - y^2: a saddle point at 0 and no minimum (unbounded below along y)."
    Params = NoParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: NoParams) -> torch.Tensor:
        return x[0] ** 2 - x[1] ** 2

    @classmethod
    def default_x0(cls, params: NoParams) -> list[float]:
        # exactly on the x axis the gradient never leaves it; a tiny y shows which optimizers escape
        return [1.0, 1e-3]

    @classmethod
    def minimizers(cls, params: NoParams) -> list[list[float]]:
        return []  # unbounded below: f(0, y) = -y^2
