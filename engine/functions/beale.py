import torch

from engine.functions import Function
from engine.registry import Params


class Beale(Function):
    name = "beale"
    description = "Beale: (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2, minimum 0 at (3, 0.5)."
    Params = Params
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: Params) -> torch.Tensor:
        u, v = x[0], x[1]
        return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2

    @classmethod
    def default_x0(cls, params: Params) -> list[float]:
        return [1.0, 1.0]

    @classmethod
    def minimizers(cls, params: Params) -> list[list[float]]:
        return [[3.0, 0.5]]
